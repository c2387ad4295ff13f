// A tiny DOM builder: h("div", {class: "x", testid: "y", onclick: fn}, ...children).

export type Child = Node | string | number | null | undefined | false | Child[];

export interface Props {
  class?: string;
  /** Becomes `data-testid`. */
  testid?: string;
  /** Extra `data-*` attributes. */
  data?: Record<string, string>;
  /** Properties set directly on the element rather than as attributes. */
  value?: string;
  checked?: boolean;
  disabled?: boolean;
  title?: string;
  [attr: string]: unknown;
}

const PROPS = new Set(["value", "checked", "disabled"]);

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props?: Props | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = String(v);
      else if (k === "testid") el.dataset.testid = String(v);
      else if (k === "data") Object.assign(el.dataset, v as Record<string, string>);
      else if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2), v as EventListener);
      } else if (PROPS.has(k)) (el as unknown as Record<string, unknown>)[k] = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
}

/** Replaces an element's children. */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/** "1h 02m", "3m 07s", "4.2s". */
export function duration(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export function clock(d: Date): string {
  return d.toLocaleTimeString([], { hour12: false });
}

/** "abcdef…uvwxyz (312 chars)" for long secrets and ids. */
export function truncate(s: string, keep = 10): string {
  if (s.length <= keep * 2 + 1) return s;
  return `${s.slice(0, keep)}…${s.slice(-keep)} (${s.length} chars)`;
}

/** Copies text, reporting failure to the caller. */
export async function copyText(text: string): Promise<void> {
  if (navigator.clipboard) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const ta = h("textarea", { value: text, style: "position:fixed;opacity:0" });
  document.body.appendChild(ta);
  ta.select();
  const ok = document.execCommand("copy");
  ta.remove();
  if (!ok) throw new Error("the browser refused to copy");
}

export function copyButton(text: () => string, label = "copy", onError?: (e: unknown) => void): HTMLButtonElement {
  const b = h("button", { class: "btn tiny ghost", type: "button", title: "Copy to clipboard" }, label);
  b.addEventListener("click", () => {
    copyText(text()).then(
      () => {
        b.textContent = "copied";
        setTimeout(() => (b.textContent = label), 1200);
      },
      (e) => onError?.(e),
    );
  });
  return b;
}
