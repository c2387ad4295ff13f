// Left column, top: create or join an operator session, and what the open one looks like.

import { copyButton, h, replace } from "../dom";
import type { ConnState } from "../operator";
import { bearer, operators } from "../rpc";
import type { SavedSession } from "../store";
import type { Ctx } from "./context";

export interface SessionActions {
  open(s: SavedSession): void;
  leave(): void;
}

export class SessionView {
  readonly el: HTMLElement;
  private body: HTMLElement;
  private ackedEl?: HTMLElement;
  private epochEl?: HTMLElement;
  private noteEl?: HTMLElement;

  constructor(
    private readonly ctx: Ctx,
    private readonly actions: SessionActions,
  ) {
    this.body = h("div", { class: "card-body" });
    this.el = h("section", { class: "card", testid: "session-panel" }, h("header", { class: "card-head" }, h("h2", null, "Session")), this.body);
  }

  /** Renders the form (no session) or the open session. */
  render(s: SavedSession | undefined): void {
    this.ackedEl = this.epochEl = this.noteEl = undefined;
    if (!s) return this.renderForms();
    let shown = false;
    const tokenEl = h("code", { class: "secret", testid: "session-token" }, "•".repeat(12));
    const reveal = h("button", { class: "btn tiny ghost", type: "button" }, "show");
    reveal.addEventListener("click", () => {
      shown = !shown;
      tokenEl.textContent = shown ? s.token : "•".repeat(12);
      reveal.textContent = shown ? "hide" : "show";
    });
    this.ackedEl = h("span", { testid: "session-acked" }, String(s.acked));
    this.epochEl = h("span", { testid: "session-epoch" }, "–");
    this.noteEl = h("p", { class: "note", testid: "session-note", hidden: true });
    const onCopyError = (e: unknown) => this.ctx.error("copy", e);
    replace(
      this.body,
      h(
        "dl",
        { class: "kv" },
        h("dt", null, "sid"),
        h("dd", null, h("code", { testid: "session-sid" }, s.sid), copyButton(() => s.sid, "copy", onCopyError)),
        h("dt", null, "token"),
        h("dd", null, tokenEl, reveal, copyButton(() => s.token, "copy", onCopyError)),
        h("dt", null, "roles"),
        h("dd", { testid: "session-roles" }, s.roles.length ? s.roles.map((r) => h("span", { class: "chip" }, r)) : h("span", { class: "muted" }, "(none: the sid is the seat)")),
        h("dt", null, "acked"),
        h("dd", null, "seq ", this.ackedEl, h("span", { class: "muted" }, " · epoch "), this.epochEl),
      ),
      this.noteEl,
      h(
        "div",
        { class: "row" },
        h("button", { class: "btn", type: "button", testid: "reconnect", onclick: () => this.ctx.link()?.reconnectNow() }, "Reconnect"),
        h("button", { class: "btn ghost", type: "button", testid: "leave-session", title: "Forget this session in this browser (it stays on the server)", onclick: () => this.actions.leave() }, "Leave"),
        h("button", { class: "btn danger", type: "button", testid: "delete-session", onclick: () => void this.deleteSession(s) }, "Delete"),
      ),
    );
  }

  /** Live fields, without re-rendering (keeps focus and selection). */
  update(s: SavedSession | undefined, state: ConnState): void {
    if (!s) return;
    if (this.ackedEl) this.ackedEl.textContent = String(s.acked);
    if (this.epochEl && state.kind === "connected") this.epochEl.textContent = String(state.epoch);
    if (this.noteEl) {
      this.noteEl.hidden = state.kind !== "closed";
      if (state.kind === "closed") {
        this.noteEl.textContent = /NOT_FOUND|UNAUTHENTICATED/.test(state.reason)
          ? "The server does not know this session (or its token) any more. Leave, then create or join one."
          : "The stream is closed and will not reopen by itself. Reconnect to take the session back.";
      }
    }
  }

  private renderForms(): void {
    const roles = h("input", { type: "text", value: "remote", placeholder: "remote, reviewer", testid: "roles-input", "aria-label": "roles" });
    const create = h("button", { class: "btn primary", type: "submit", testid: "create-session" }, "Create session");
    const sid = h("input", { type: "text", placeholder: "op-…", testid: "join-sid", "aria-label": "sid" });
    const token = h("input", { type: "password", placeholder: "session token", testid: "join-token", "aria-label": "token", autocomplete: "off" });
    const join = h("button", { class: "btn", type: "submit", testid: "join-session" }, "Join");
    const createForm = h(
      "form",
      { class: "stack" },
      h("label", null, "Roles ", h("span", { class: "muted" }, "(seats, comma separated)"), roles),
      create,
    );
    createForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const list = roles.value.split(",").map((r) => r.trim()).filter(Boolean);
      create.disabled = true;
      operators.createSession({ roles: list }).then(
        (r) => {
          this.ctx.log("ok", `session ${r.sid} created (roles: ${r.roles.join(", ") || "none"})`);
          this.actions.open({ sid: r.sid, token: r.token, roles: r.roles, acked: 0, handled: [] });
        },
        (e) => {
          create.disabled = false;
          this.ctx.error("CreateSession", e);
        },
      );
    });
    const joinForm = h("form", { class: "stack" }, h("label", null, "Session id", sid), h("label", null, "Token", token), join);
    joinForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const s = sid.value.trim();
      const t = token.value.trim();
      if (!s || !t) return this.ctx.error("Join", new Error("both sid and token are needed"));
      join.disabled = true;
      operators.getSession({ sid: s }, bearer(t)).then(
        (r) => {
          this.ctx.log("ok", `joined session ${s}`);
          this.actions.open({ sid: s, token: t, roles: r.session?.roles ?? [], acked: 0, handled: [] });
        },
        (e) => {
          join.disabled = false;
          this.ctx.error("Join (GetSession)", e);
        },
      );
    });
    replace(this.body, createForm, h("div", { class: "or" }, "or join an existing session"), joinForm);
  }

  private async deleteSession(s: SavedSession): Promise<void> {
    if (!confirm(`Delete session ${s.sid}? Its pending requests fail and its roles are freed.`)) return;
    try {
      await operators.deleteSession({ sid: s.sid }, bearer(s.token));
      this.ctx.log("ok", `session ${s.sid} deleted`);
      this.actions.leave();
    } catch (e) {
      this.ctx.error("DeleteSession", e);
    }
  }
}
