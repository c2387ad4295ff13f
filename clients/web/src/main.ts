// The operator console: a live strip under the header; session (left), tasks (center),
// pending frames and activity (right).

import { h, replace } from "./dom";
import { NoticeCode, type ServerFrame } from "@mlua-swarm/operator/gen/operator_pb";
import { OperatorLink, type ConnState } from "./operator";
import { errorText, pretty, valueToJson } from "./rpc";
import { clearSession, loadSession, saveSession, type SavedSession } from "./store";
import { BlueprintsView } from "./ui/blueprints";
import type { Ctx } from "./ui/context";
import { FramesView, shortId } from "./ui/frames";
import { ActivityLog, ErrorBanner } from "./ui/log";
import { SessionView } from "./ui/session";
import { StatsStrip } from "./ui/stats";
import { TasksView } from "./ui/tasks";
import { TokenView } from "./ui/token";

let link: OperatorLink | undefined;

const activity = new ActivityLog();
const banner = new ErrorBanner();

const ctx: Ctx = {
  log: (level, text, detail) => activity.add(level, text, detail),
  error(what, e) {
    const text = `${what}: ${errorText(e)}`;
    banner.add(text);
    activity.add("error", text);
    console.error(what, e);
  },
  link: () => link,
};

const connPill = h("span", { class: "pill idle", testid: "conn-state", data: { state: "idle" } }, "no session");
const sessionBadge = h("span", { class: "who", testid: "header-sid" });

const frames = new FramesView(ctx);
const tasksView = new TasksView(ctx);
const bps = new BlueprintsView(ctx, (id) => tasksView.track(id), () => link?.session.sid);
const sessionView = new SessionView(ctx, { open: openSession, leave: leaveSession });
const tokenView = new TokenView(ctx);
const stats = new StatsStrip(ctx);

function renderState(s: ConnState): void {
  let text: string;
  switch (s.kind) {
    case "idle":
      text = "no session";
      break;
    case "connecting":
      text = s.attempt ? `connecting (attempt ${s.attempt + 1})…` : "connecting…";
      break;
    case "connected":
      text = `connected · epoch ${s.epoch}`;
      break;
    case "reconnecting":
      text = `reconnecting in ${(s.inMs / 1000).toFixed(1)}s`;
      break;
    case "closed":
      text = `closed: ${s.reason}`;
      break;
  }
  connPill.textContent = text;
  connPill.className = `pill ${s.kind}`;
  connPill.dataset.state = s.kind;
  connPill.title = s.kind === "reconnecting" ? s.reason : text;
  sessionView.update(link?.session, s);
}

function onFrame(f: ServerFrame): void {
  const seq = Number(f.seq);
  const b = f.body;
  switch (b.case) {
    case "hookBefore":
    case "spawn":
    case "ask": {
      frames.add(f);
      const v = b.value;
      ctx.log("info", `${kindName(b.case)} seq ${seq} for task ${shortId(v.taskId)} step ${v.stepId}`);
      break;
    }
    case "hookAfter": {
      const v = b.value;
      ctx.log("info", `hook_after seq ${seq}: ${v.agent} finished step ${v.stepId} (task ${shortId(v.taskId)})`, pretty(valueToJson(v.result)));
      link?.markHandled(seq);
      break;
    }
    case "cancel": {
      const withdrawn = frames.withdraw(b.value.reqId);
      ctx.log("warn", `cancel seq ${seq}: request ${b.value.reqId} withdrawn: ${b.value.reason}`);
      if (withdrawn !== undefined) link?.markHandled(withdrawn);
      link?.markHandled(seq);
      break;
    }
    default:
      ctx.log("warn", `unexpected frame ${b.case ?? "(empty)"} seq ${seq}`);
      link?.markHandled(seq);
  }
}

function onControl(f: ServerFrame): void {
  const b = f.body;
  if (b.case === "notice") {
    const code = (NoticeCode[b.value.code] ?? String(b.value.code)).replace(/^NOTICE_CODE_/, "");
    const text = `notice ${code}${b.value.reqId ? ` (${b.value.reqId})` : ""}: ${b.value.message}`;
    if (b.value.code === NoticeCode.DUPLICATE) ctx.log("warn", text);
    else ctx.error("server notice", new Error(text));
  } else if (b.case === "closing") {
    ctx.log("warn", `closing: ${b.value.reason} (retry after ${b.value.retryAfterMs} ms)`);
  }
}

function openSession(s: SavedSession): void {
  link?.stop("session changed");
  frames.clear();
  try {
    saveSession(s);
  } catch (e) {
    ctx.error("localStorage", e);
  }
  link = new OperatorLink(s, {
    state: renderState,
    welcome: (w) =>
      ctx.log(
        "ok",
        `welcome: epoch ${w.epoch}, server acked seq ${w.ackedSeq}, ${w.replayed} frame(s) replayed, roles [${w.roles.join(", ")}], ping every ${w.pingIntervalSecs}s`,
      ),
    frame: onFrame,
    control: onControl,
    acked: (seq) => {
      frames.dropUpTo(seq);
      if (link) sessionView.update(link.session, link.state);
    },
    log: (level, text) => {
      if (level === "error") banner.add(text);
      ctx.log(level, text);
    },
  });
  sessionView.render(s);
  sessionBadge.textContent = s.sid;
  link.start();
}

function leaveSession(): void {
  link?.stop("left");
  link = undefined;
  clearSession();
  frames.clear();
  sessionView.render(undefined);
  sessionBadge.textContent = "";
  renderState({ kind: "idle" });
  ctx.log("info", "left the session (it stays on the server until deleted or idle)");
}

function kindName(c: string): string {
  return c.replace(/[A-Z]/g, (m) => `_${m.toLowerCase()}`);
}

function mount(): void {
  const app = document.getElementById("app") ?? document.body.appendChild(h("div", { id: "app" }));
  replace(
    app,
    h(
      "header",
      { class: "top" },
      h("div", { class: "brand" }, h("span", { class: "logo" }, "◆"), h("h1", null, "mlua-swarm"), h("span", { class: "sub" }, "operator console")),
      h("div", { class: "status" }, sessionBadge, connPill, tokenView.button, h("span", { class: "origin", title: "server" }, location.host)),
    ),
    stats.el,
    banner.el,
    h(
      "main",
      { class: "grid" },
      h("div", { class: "col left" }, sessionView.el, bps.starter),
      h("div", { class: "col center" }, tasksView.el, bps.editor),
      h("div", { class: "col right" }, frames.el, activity.el),
    ),
  );
  const saved = loadSession();
  if (saved) {
    ctx.log("info", `resuming session ${saved.sid} after seq ${saved.acked}`);
    openSession(saved);
  } else {
    sessionView.render(undefined);
    renderState({ kind: "idle" });
  }
  tasksView.start();
  stats.start();
  void bps.refresh();
  setInterval(() => {
    frames.tick();
    tasksView.tick();
  }, 1000);
  // A reload or navigation aborts the stream; that is not an error worth showing.
  addEventListener("pagehide", () => {
    link?.stop("page closed");
    tasksView.stop();
    stats.stop();
  });
  window.addEventListener("unhandledrejection", (ev) => ctx.error("unexpected", ev.reason));
}

mount();
