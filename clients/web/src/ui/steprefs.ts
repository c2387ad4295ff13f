// The step refs a task can be rerun from: the `ref` of every `step` node of its stored
// Blueprint (in flow order), plus the agents its events show dispatched (inline Blueprints
// have no stored version to read).

import type { JsonValue } from "@bufbuild/protobuf";
import type { Task } from "@mlua-swarm/operator/gen/task_pb";
import { blueprints } from "../rpc";

/** Blueprint step refs by `id@version`; a failed read is not cached. */
const cache = new Map<string, Promise<string[]>>();

/** The `ref` of every `{kind: "step"}` node, depth first, without repeats. */
export function flowRefs(doc: JsonValue | undefined): string[] {
  const out: string[] = [];
  const walk = (v: JsonValue | undefined): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") {
      if (v.kind === "step" && typeof v.ref === "string" && !out.includes(v.ref)) out.push(v.ref);
      Object.values(v).forEach(walk);
    }
  };
  walk(doc && typeof doc === "object" && !Array.isArray(doc) ? doc.flow : undefined);
  return out;
}

/** The step refs of the stored Blueprint version the task runs; [] for inline ones. */
export function blueprintRefs(t: Task): Promise<string[]> {
  if (!t.boundVersion) return Promise.resolve([]);
  const key = `${t.blueprintId}@${t.boundVersion}`;
  let got = cache.get(key);
  if (!got) {
    got = blueprints.getBlueprint({ id: t.blueprintId, version: t.boundVersion }).then((r) => flowRefs(r.blueprint));
    got.catch(() => cache.delete(key));
    cache.set(key, got);
  }
  return got;
}

/** Merges `more` into `refs` keeping order; true when something was added. */
export function mergeRefs(refs: string[], more: Iterable<string>): boolean {
  let added = false;
  for (const r of more) {
    if (r && !refs.includes(r)) {
      refs.push(r);
      added = true;
    }
  }
  return added;
}
