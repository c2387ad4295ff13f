import type { OperatorLink } from "../operator";
import type { Level } from "./log";

/** What every panel can reach. */
export interface Ctx {
  log(level: Level, text: string, detail?: string): void;
  /** Shows an error in the banner and the activity feed. */
  error(what: string, e: unknown): void;
  /** The live operator link, if a session is open. */
  link(): OperatorLink | undefined;
}
