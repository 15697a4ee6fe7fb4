import { createHash } from 'node:crypto';

/**
 * Values written by someone else — discovery's join requests (anyone holding the join token) and machine
 * records (each admitted node) — are untrusted input. Everything the overlord does with one goes
 * through this module first:
 *
 * - `parseBoundedJson`: the size and the nesting depth are checked on the TEXT, before JSON.parse builds
 *   anything, so a 1 MB or 5,000-level value costs a scan and one short refusal, never a deep object;
 * - `excerpt`: what a log line, an error or `corekube status` shows of a value: at most EXCERPT_CHARS
 *   characters, everything outside printable ASCII escaped (no newline, terminal escape or bidi override
 *   reaches a log), never the whole value;
 * - `keyRef`: a key's suffix as the overlord remembers it: itself when short, else a digest (a 1 MB key is
 *   not kept in memory);
 * - `BoundedMemo`: what the overlord remembers per bad key (was it reported already), with a capacity — the
 *   oldest entry goes when it is full — so no sequence of writes grows it without limit.
 */
export const EXCERPT_CHARS = 48;

export type BoundedJson = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly reason: string };

/** Parses `text` as JSON when it is at most `maxBytes` UTF-8 bytes and nests at most `maxDepth` levels; never throws. */
export function parseBoundedJson(text: string, limits: { readonly maxBytes: number; readonly maxDepth: number }): BoundedJson {
  // a string's UTF-8 size is at most 3 bytes a UTF-16 unit: only a near-limit text needs counting
  if (text.length > limits.maxBytes || (text.length * 3 > limits.maxBytes && Buffer.byteLength(text) > limits.maxBytes)) {
    return { ok: false, reason: `is ${text.length > limits.maxBytes ? 'more than' : 'about'} ${limits.maxBytes} bytes, more than a record may be` };
  }
  const depth = jsonDepth(text, limits.maxDepth);
  if (depth > limits.maxDepth) return { ok: false, reason: `nests more than ${limits.maxDepth} levels deep` };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false, reason: 'is not JSON' };
  }
}

/**
 * The nesting depth of JSON text (objects and arrays), counted without parsing: brackets inside strings do not
 * count. Stops counting once past `stopAt` (the answer is then stopAt + 1).
 */
export function jsonDepth(text: string, stopAt = Number.POSITIVE_INFINITY): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (depth > max) {
        max = depth;
        if (max > stopAt) return max;
      }
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    }
  }
  return max;
}

/**
 * What a log line or an error shows of an untrusted value: a short, quoted, escaped excerpt of a string with its
 * length when cut; the kind of anything else ("an object", "a number"). Never the whole value.
 */
export function excerpt(value: unknown): string {
  if (typeof value === 'string') {
    const cut = value.length > EXCERPT_CHARS;
    return `"${escapeText(cut ? value.slice(0, EXCERPT_CHARS) : value)}${cut ? `..." (${value.length} characters)` : '"'}`;
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number') return Number.isFinite(value) && String(value).length <= 24 ? `the number ${value}` : 'a number';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}

/** Printable ASCII as is; anything else as \uXXXX (newlines, escapes, bidi overrides, lone surrogates). */
export function escapeText(s: string): string {
  return s.replace(/[^\x20-\x7e]|\\/g, (c) => (c === '\\' ? '\\\\' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));
}

/** A key suffix as it is remembered and logged: itself when it is short and printable, else a digest of it. */
export function keyRef(suffix: string): string {
  if (suffix.length <= 64 && /^[\x21-\x7e]*$/.test(suffix)) return suffix;
  return `sha256:${createHash('sha256').update(suffix).digest('hex').slice(0, 32)}`;
}

/**
 * A map with a capacity: setting a key moves it to the newest end; once full, the oldest entry is dropped. What
 * the overlord remembers about bad keys (what it reported, why it refused) lives in one, so an attacker writing
 * ever new keys or values costs a fixed amount of memory.
 */
export class BoundedMemo<V> {
  private readonly entries = new Map<string, V>();

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`Expected \`capacity\` to be a positive integer, got ${capacity}.`);
  }

  get size(): number {
    return this.entries.size;
  }

  get(key: string): V | undefined {
    return this.entries.get(key);
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  set(key: string, value: V): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value as string);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  /** true the first time `key` is seen with `value` (then remembered): report it; false when it already was. */
  firstTime(key: string, value: V): boolean {
    if (this.entries.get(key) === value) return false;
    this.set(key, value);
    return true;
  }
}
