// The API token prompt (a modal dialog) and the header button that opens it to change or
// forget the token. The token itself is never shown, logged or kept beyond this tab.

import { createContextValues } from "@connectrpc/connect";
import {
  ACCESS_HEADER,
  RAW_CREDENTIALS,
  apiToken,
  apiTokenWanted,
  callsWaitingForToken,
  declineApiToken,
  forgetApiToken,
  onApiTokenChange,
  onApiTokenNeeded,
  setApiToken,
  type TokenNeed,
} from "../auth";
import { h } from "../dom";
import { Code, errorCode, errorText, operators } from "../rpc";
import type { Ctx } from "./context";

type PromptState = "missing" | "refused" | "change" | "error";

export class TokenView {
  /** The header button. */
  readonly button: HTMLButtonElement;
  private dialog: HTMLDialogElement;
  private message: HTMLElement;
  private input: HTMLInputElement;
  private save: HTMLButtonElement;
  private forget: HTMLButtonElement;
  private busy = false;

  constructor(private readonly ctx: Ctx) {
    this.button = h("button", { class: "btn tiny token-btn", type: "button", testid: "api-token-button", onclick: () => this.open("change") }, "API token");
    this.message = h("p", { class: "note", testid: "api-token-message" });
    this.input = h("input", {
      type: "password",
      testid: "api-token-input",
      "aria-label": "API token",
      placeholder: "the server's --api-token",
      autocomplete: "off",
      spellcheck: "false",
    });
    this.save = h("button", { class: "btn primary", type: "submit", testid: "api-token-save" }, "Use token");
    this.forget = h("button", { class: "btn ghost", type: "button", testid: "api-token-forget", title: "Stop sending it and remove it from this tab" }, "Forget");
    const cancel = h("button", { class: "btn ghost", type: "button", testid: "api-token-cancel" }, "Cancel");
    const form = h(
      "form",
      { class: "card-body stack" },
      this.message,
      h("label", null, "API token", this.input),
      h("p", { class: "muted small hint" }, "Kept for this tab only (sessionStorage) and sent with every call; closing the tab forgets it."),
      h("div", { class: "row end" }, this.forget, cancel, this.save),
    );
    this.dialog = h(
      "dialog",
      { class: "modal", testid: "api-token-dialog", "aria-labelledby": "api-token-title" },
      h("header", { class: "card-head" }, h("h2", { id: "api-token-title" }, "API token")),
      form,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      void this.submit();
    });
    cancel.addEventListener("click", () => this.dismiss());
    // Escape closes a modal dialog: the same as Cancel.
    this.dialog.addEventListener("cancel", (ev) => {
      ev.preventDefault();
      this.dismiss();
    });
    this.forget.addEventListener("click", () => {
      forgetApiToken();
      this.ctx.log("info", "API token forgotten (this tab no longer sends one)");
      this.close();
    });
    document.body.append(this.dialog);
    onApiTokenNeeded((need) => this.ask(need));
    onApiTokenChange(() => this.sync());
    this.sync();
  }

  /** A call was refused for want of the token (or with the stored one). */
  private ask(need: TokenNeed): void {
    if (this.dialog.open) {
      // Several calls fail together; "refused" wins over "missing".
      if (need.reason === "refused" && !this.busy) this.setState("refused", need);
      return;
    }
    this.open(need.reason, need);
  }

  private open(state: PromptState, need?: TokenNeed): void {
    this.input.value = "";
    this.setState(state, need);
    if (!this.dialog.open) this.dialog.showModal();
    this.input.focus();
  }

  private setState(state: PromptState, need?: TokenNeed, detail?: string): void {
    this.dialog.dataset.state = state;
    this.message.className = state === "refused" || state === "error" ? "note err" : "note";
    const why = need ? ` (${need.call}: ${need.message || "UNAUTHENTICATED"})` : "";
    switch (state) {
      case "missing":
        this.message.textContent = `This server needs an API token (it was started with --api-token)${why}. Enter it to continue.`;
        break;
      case "refused":
        this.message.textContent = `The server refused that token${detail ? ` (${detail})` : why}. Check it and enter it again.`;
        break;
      case "change":
        this.message.textContent = apiToken()
          ? "This tab sends an API token with every call. Enter another one, or forget it."
          : "This tab sends no API token. Enter one if the server was started with --api-token.";
        break;
      case "error":
        this.message.textContent = `Could not check the token: ${detail ?? "unknown error"}.`;
        break;
    }
    this.forget.hidden = !apiToken();
  }

  /** Checks the token with one call before keeping it, so a wrong one is never stored. */
  private async submit(): Promise<void> {
    const token = this.input.value.trim();
    if (!token || this.busy) return;
    this.busy = true;
    this.save.disabled = true;
    this.save.textContent = "Checking…";
    try {
      await operators.listSessions(
        {},
        {
          headers: { [ACCESS_HEADER]: token, authorization: `Bearer ${token}` },
          contextValues: createContextValues().set(RAW_CREDENTIALS, true),
        },
      );
      setApiToken(token);
      this.ctx.log("ok", "API token accepted; kept for this tab (sessionStorage)");
      this.close();
    } catch (e) {
      if (errorCode(e) === Code.Unauthenticated) {
        this.setState("refused", undefined, errorText(e));
        this.ctx.log("warn", "the server refused the API token that was entered");
      } else {
        this.setState("error", undefined, errorText(e));
      }
      this.input.select();
    } finally {
      this.busy = false;
      this.save.disabled = false;
      this.save.textContent = "Use token";
    }
  }

  /** Cancel: calls waiting for a token fail with their own error. */
  private dismiss(): void {
    const waiting = callsWaitingForToken();
    this.close();
    if (waiting) {
      declineApiToken();
      this.ctx.log("warn", "no API token given: calls that need one fail until you set it (API token button, top right)");
    }
  }

  private close(): void {
    if (this.dialog.open) this.dialog.close();
  }

  private sync(): void {
    const set = apiToken() !== undefined;
    const state = set ? "set" : apiTokenWanted() ? "needed" : "none";
    this.button.dataset.state = state;
    this.button.textContent = state === "set" ? "API token ✓" : state === "needed" ? "API token needed" : "API token";
    this.button.title =
      state === "set"
        ? "An API token is sent with every call (this tab only). Click to change or forget it."
        : state === "needed"
          ? "The server refused calls without an API token. Click to enter it."
          : "No API token is sent. Click to enter one.";
    if (this.dialog.open) this.forget.hidden = !set;
  }
}
