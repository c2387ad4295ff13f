// Left column: edit and store a Blueprint, then start a task from a stored one or from the
// editor's content directly (inline).

import { h, replace } from "../dom";
import { blueprints, errorText, parseObject, tasks } from "../rpc";
import { loadDrafts, saveDrafts, type Drafts } from "../store";
import type { Ctx } from "./context";

/** A one-step Blueprint whose agent is served by whoever holds the seat "remote". */
const EXAMPLE = {
  schema_version: "0.1.0",
  id: "op-one",
  flow: { kind: "step", ref: "worker", in: { op: "path", at: "$.input" }, out: { op: "path", at: "$.output" } },
  agents: [{ name: "worker", kind: "operator", spec: { operator_ref: "remote" }, profile: { system_prompt: "You are a careful worker." } }],
  operators: [{ name: "remote", kind: "main_ai" }],
  spawner_hints: { layers: ["main_ai", "senior_escalation"] },
};

export class BlueprintsView {
  readonly editor: HTMLElement;
  readonly starter: HTMLElement;
  private id: HTMLInputElement;
  private json: HTMLTextAreaElement;
  private storeResult: HTMLElement;
  private select: HTMLSelectElement;
  private initCtx: HTMLTextAreaElement;
  private pin: HTMLInputElement;
  private startResult: HTMLElement;
  private drafts: Drafts = loadDrafts();

  constructor(
    private readonly ctx: Ctx,
    private readonly onStarted: (taskId: string) => void,
    private readonly sessionSid: () => string | undefined,
  ) {
    this.id = h("input", { type: "text", value: EXAMPLE.id, testid: "bp-id", "aria-label": "Blueprint id", spellcheck: "false" });
    this.json = h("textarea", { rows: 14, class: "code", testid: "bp-json", "aria-label": "Blueprint JSON", spellcheck: "false" });
    this.json.value = this.drafts.blueprintJson ?? JSON.stringify(EXAMPLE, null, 2);
    if (this.drafts.blueprintId !== undefined) this.id.value = this.drafts.blueprintId;
    this.storeResult = h("span", { class: "result-line", testid: "bp-result" });
    const store = h("button", { class: "btn primary", type: "button", testid: "bp-store" }, "Store");
    store.addEventListener("click", () => void this.store(store));
    const format = h("button", { class: "btn ghost", type: "button", title: "Re-indent the JSON" }, "Format");
    format.addEventListener("click", () => {
      try {
        this.json.value = JSON.stringify(parseObject(this.json.value, "Blueprint"), null, 2);
      } catch (e) {
        this.ctx.error("Format", e);
      }
    });
    this.editor = h(
      "section",
      { class: "card" },
      h("header", { class: "card-head" }, h("h2", null, "Blueprint editor"), h("span", { class: "muted small" }, "store it, or run it unstored with \u201cStart inline\u201d")),
      h(
        "div",
        { class: "card-body stack" },
        h("div", { class: "row" }, h("label", { class: "inline" }, "Id", this.id), store, format, this.storeResult),
        this.json,
      ),
    );

    this.select = h("select", { testid: "bp-select", "aria-label": "stored Blueprint" });
    const reload = h("button", { class: "btn tiny ghost", type: "button", title: "Reload the list", onclick: () => void this.refresh() }, "↻");
    this.initCtx = h("textarea", { rows: 3, class: "code", testid: "init-ctx", "aria-label": "init_ctx JSON", spellcheck: "false" });
    this.initCtx.value = this.drafts.initCtx ?? '{"input": "hello"}';
    this.pin = h("input", { type: "checkbox", testid: "pin-session", checked: this.drafts.pin ?? false });
    const remember = () => {
      this.drafts = {
        blueprintId: this.id.value,
        blueprintJson: this.json.value,
        stored: this.select.value || this.drafts.stored,
        initCtx: this.initCtx.value,
        pin: this.pin.checked,
      };
      saveDrafts(this.drafts);
    };
    for (const el of [this.id, this.json, this.initCtx, this.pin, this.select]) el.addEventListener("change", remember);
    for (const el of [this.id, this.json, this.initCtx]) el.addEventListener("input", remember);
    this.startResult = h("span", { class: "result-line", testid: "start-result" });
    const startStored = h("button", { class: "btn primary", type: "button", testid: "start-task" }, "Start stored");
    const startInline = h("button", { class: "btn", type: "button", testid: "start-inline", title: "Run the Blueprint editor's JSON without storing it" }, "Start inline");
    startStored.addEventListener("click", () => void this.start("stored", [startStored, startInline]));
    startInline.addEventListener("click", () => void this.start("inline", [startStored, startInline]));
    this.starter = h(
      "section",
      { class: "card" },
      h("header", { class: "card-head" }, h("h2", null, "Start a task")),
      h(
        "div",
        { class: "card-body stack" },
        h("label", null, "Stored Blueprint", h("div", { class: "row" }, this.select, reload)),
        h("label", null, "init_ctx", this.initCtx),
        h("label", { class: "check" }, this.pin, " pin to my session (operator_sid)"),
        h("div", { class: "row" }, startStored, startInline),
        this.startResult,
      ),
    );
  }

  async refresh(select?: string): Promise<void> {
    try {
      const r = await blueprints.listBlueprints({});
      const keep = select ?? (this.select.value || this.drafts.stored);
      replace(
        this.select,
        r.blueprints.length === 0 ? h("option", { value: "" }, "(none stored)") : null,
        r.blueprints.map((b) =>
          h("option", { value: b.id, title: b.description || b.headVersion }, b.versionLabel ? `${b.id} (${b.versionLabel})` : b.id),
        ),
      );
      if (keep && r.blueprints.some((b) => b.id === keep)) this.select.value = keep;
      if (select) this.select.dispatchEvent(new Event("change"));
    } catch (e) {
      this.ctx.error("ListBlueprints", e);
    }
  }

  private async store(btn: HTMLButtonElement): Promise<void> {
    this.storeResult.textContent = "";
    let doc;
    try {
      doc = parseObject(this.json.value, "Blueprint");
    } catch (e) {
      return this.ctx.error("Store Blueprint", e);
    }
    const id = this.id.value.trim() || (typeof doc.id === "string" ? doc.id : "");
    btn.disabled = true;
    try {
      const r = await blueprints.putBlueprint({ id, blueprint: doc });
      const what = r.created ? "stored" : "unchanged";
      this.storeResult.textContent = `${what} ${r.id} @ ${r.version.slice(0, 12)}`;
      this.storeResult.className = "result-line ok";
      this.ctx.log("ok", `Blueprint ${r.id} ${what} (version ${r.version})`);
      await this.refresh(r.id);
    } catch (e) {
      this.storeResult.textContent = errorText(e);
      this.storeResult.className = "result-line err";
      this.ctx.error("PutBlueprint", e);
    } finally {
      btn.disabled = false;
    }
  }

  private async start(source: "stored" | "inline", buttons: HTMLButtonElement[]): Promise<void> {
    this.startResult.textContent = "";
    let initCtx;
    let blueprint;
    try {
      initCtx = parseObject(this.initCtx.value, "init_ctx", {});
      if (source === "inline") {
        blueprint = { source: { case: "inline" as const, value: parseObject(this.json.value, "Blueprint") } };
      } else {
        const id = this.select.value;
        if (!id) throw new Error("no stored Blueprint selected: store one first");
        blueprint = { source: { case: "stored" as const, value: { id } } };
      }
    } catch (e) {
      return this.ctx.error("Start task", e);
    }
    const sid = this.pin.checked ? this.sessionSid() : undefined;
    if (this.pin.checked && !sid) return this.ctx.error("Start task", new Error("no session to pin to: create or join one"));
    buttons.forEach((b) => (b.disabled = true));
    try {
      const r = await tasks.startTask({ blueprint, initCtx, operatorSid: sid ?? "" });
      this.startResult.textContent = `started ${r.taskId}`;
      this.startResult.className = "result-line ok";
      this.ctx.log("ok", `task ${r.taskId} started`);
      this.onStarted(r.taskId);
    } catch (e) {
      this.startResult.textContent = errorText(e);
      this.startResult.className = "result-line err";
      this.ctx.error("StartTask", e);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }
}
