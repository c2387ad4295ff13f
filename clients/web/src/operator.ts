// The console's operator link: the SDK's resumable Subscribe + Send link
// (@mlua-swarm/operator's OperatorLink: resume from the ack, backoff, pings, cumulative
// acks, server restarts) over this page's transport, keeping its state in localStorage so
// a reload resumes where the page left off.

import { OperatorLink as SdkLink, type LinkEvents, type LogLevel } from "@mlua-swarm/operator";
import { operators } from "./rpc";
import { saveSession, type SavedSession } from "./store";

export { backoff, type ConnState } from "@mlua-swarm/operator";

export interface ConsoleLinkEvents extends Omit<LinkEvents<SavedSession>, "log" | "persist"> {
  log(level: Exclude<LogLevel, "debug">, text: string): void;
}

export class OperatorLink extends SdkLink<SavedSession> {
  constructor(session: SavedSession, ev: ConsoleLinkEvents) {
    super(session, operators, {
      ...ev,
      persist: (s) => saveSession(s),
      log: (level, text) => {
        if (level !== "debug") ev.log(level, text);
      },
    });
  }
}

