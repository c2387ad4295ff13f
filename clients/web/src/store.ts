// What survives a page reload: the session's credentials and how far its frames were handled.

const KEY = "mse-console/session/v1";

export interface SavedSession {
  sid: string;
  token: string;
  roles: string[];
  /** Highest seq acknowledged (every frame up to it was handled). Sent as Subscribe.last_seq. */
  acked: number;
  /** Seqs above `acked` already handled, waiting for an earlier one to be handled first. */
  handled: number[];
}

export function loadSession(): SavedSession | undefined {
  let raw: string | null;
  try {
    raw = localStorage.getItem(KEY);
  } catch {
    return undefined;
  }
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw) as Partial<SavedSession>;
    if (typeof v.sid !== "string" || typeof v.token !== "string") return undefined;
    return {
      sid: v.sid,
      token: v.token,
      roles: Array.isArray(v.roles) ? v.roles.map(String) : [],
      acked: Number.isSafeInteger(v.acked) && (v.acked as number) >= 0 ? (v.acked as number) : 0,
      handled: Array.isArray(v.handled) ? v.handled.filter((n) => Number.isSafeInteger(n)) : [],
    };
  } catch {
    return undefined;
  }
}

export function saveSession(s: SavedSession): void {
  localStorage.setItem(KEY, JSON.stringify(s));
}

export function clearSession(): void {
  localStorage.removeItem(KEY);
}

const PREFS_KEY = "mse-console/drafts/v1";

/** Form drafts kept across reloads (a person's typing should survive F5 too). */
export interface Drafts {
  blueprintId?: string;
  blueprintJson?: string;
  stored?: string;
  initCtx?: string;
  pin?: boolean;
}

export function loadDrafts(): Drafts {
  try {
    const v = JSON.parse(localStorage.getItem(PREFS_KEY) || "{}") as unknown;
    return v && typeof v === "object" ? (v as Drafts) : {};
  } catch {
    return {};
  }
}

export function saveDrafts(d: Drafts): void {
  try {
    localStorage.setItem(PREFS_KEY, JSON.stringify(d));
  } catch {
    // Quota or privacy mode: drafts are a convenience only.
  }
}
