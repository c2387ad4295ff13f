// The activity feed (everything that happened, newest first) and the error banner (every
// error, until dismissed).

import { clock, h, type Child } from "../dom";

export type Level = "info" | "warn" | "error" | "ok";

const MAX_ENTRIES = 200;

export class ActivityLog {
  readonly el: HTMLElement;
  private list: HTMLOListElement;

  constructor() {
    this.list = h("ol", { class: "feed", testid: "activity" });
    this.el = h(
      "section",
      { class: "card activity" },
      h("header", { class: "card-head" }, h("h2", null, "Activity"), h("button", { class: "btn tiny ghost", type: "button", onclick: () => this.list.replaceChildren() }, "clear")),
      this.list,
    );
  }

  add(level: Level, text: Child, detail?: string): void {
    const li = h(
      "li",
      { class: `entry ${level}`, data: { level } },
      h("time", null, clock(new Date())),
      h("span", { class: "msg" }, text),
      detail ? h("pre", { class: "detail" }, detail) : null,
    );
    this.list.prepend(li);
    while (this.list.children.length > MAX_ENTRIES) this.list.lastElementChild?.remove();
  }
}

export class ErrorBanner {
  readonly el: HTMLElement;
  private list: HTMLUListElement;

  constructor() {
    this.list = h("ul", { class: "errors", testid: "errors" });
    this.el = h("div", { class: "error-banner", hidden: true, testid: "error-banner", role: "alert" }, this.list,
      h("button", { class: "btn tiny ghost", type: "button", onclick: () => this.clear() }, "dismiss all"));
  }

  add(text: string): void {
    const li = h("li", { testid: "error" }, h("time", null, clock(new Date())), " ", text,
      h("button", { class: "x", type: "button", title: "Dismiss", onclick: () => { li.remove(); this.sync(); } }, "×"));
    this.list.prepend(li);
    while (this.list.children.length > 8) this.list.lastElementChild?.remove();
    this.sync();
  }

  clear(): void {
    this.list.replaceChildren();
    this.sync();
  }

  private sync(): void {
    this.el.hidden = this.list.children.length === 0;
  }
}
