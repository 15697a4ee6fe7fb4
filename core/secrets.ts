/**
 * A scanner for secrets that must never appear in a log line, an error message, Heat output, user_data or any
 * other rendered artifact: private keys (PEM, base64 of PEM as kubeconfigs embed them, JWK), kubeconfig
 * `client-key-data`, and values the caller knows to be secret (a join token, a wait-condition token).
 *
 * Tests across the project grep their logs and artifacts with it: `expect(findSecrets(text)).toEqual([])`.
 * A finding describes what was found and where, never the secret itself, so a failing test does not print it.
 */
export interface SecretScanOptions {
  /**
   * Secret values to look for verbatim and as base64 (e.g. the join token). Values shorter than
   * MIN_SECRET_LENGTH are ignored: they would match ordinary text and no real credential is that short.
   */
  readonly values?: readonly string[];
}

export const MIN_SECRET_LENGTH = 8;

interface Pattern {
  readonly what: string;
  readonly re: RegExp;
}

/** Every PEM private key header: `PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`, `OPENSSH PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`. */
const PEM_PRIVATE_KEY = /-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----/g;

const PATTERNS: readonly Pattern[] = [
  { what: 'PEM private key block', re: PEM_PRIVATE_KEY },
  ...base64Markers('PRIVATE KEY-----').map((m) => ({ what: 'base64 of a PEM private key', re: new RegExp(escapeRe(m), 'g') })),
  // a kubeconfig user's embedded key, in YAML or JSON form; a reference to a file (`client-key:`) is not a secret
  { what: 'kubeconfig client-key-data value', re: /client-key-data["']?\s*[:=]\s*["']?[A-Za-z0-9+/]{16,}/g },
  // the private member of a JSON Web Key
  { what: 'JWK private key member "d"', re: /"d"\s*:\s*"[A-Za-z0-9_-]{20,}"/g },
];

/** Finds secrets in `text`; returns one description (with its line number) per finding, empty when clean. */
export function findSecrets(text: string, options: SecretScanOptions = {}): string[] {
  const found: { at: number; what: string }[] = [];
  for (const p of PATTERNS) {
    for (const m of text.matchAll(p.re)) {
      const what = p.re === PEM_PRIVATE_KEY ? `${p.what} (${m[0].replace(/-/g, '')})` : p.what;
      found.push({ at: m.index ?? 0, what });
    }
  }
  (options.values ?? []).forEach((value, i) => {
    if (value.length < MIN_SECRET_LENGTH) return;
    const forms: [string, string][] = [
      [value, `secret value #${i + 1}`],
      ...base64Markers(value).filter((m) => m.length >= MIN_SECRET_LENGTH).map((m): [string, string] => [m, `base64 of secret value #${i + 1}`]),
    ];
    for (const [form, what] of forms) {
      for (let at = text.indexOf(form); at !== -1; at = text.indexOf(form, at + 1)) found.push({ at, what });
    }
  });
  found.sort((a, b) => a.at - b.at);
  const seen = new Set<string>();
  const out: string[] = [];
  for (const f of found) {
    const line = `line ${lineOf(text, f.at)}: ${f.what}`;
    if (!seen.has(line)) {
      seen.add(line);
      out.push(line);
    }
  }
  return out;
}

/**
 * The parts of base64(x) that are the same wherever `marker` sits inside x: base64 encodes 3 bytes as 4
 * characters, so the marker's encoding depends on its offset modulo 3. For each of the 3 offsets, keep only
 * the characters of groups made of marker bytes alone.
 */
export function base64Markers(marker: string): string[] {
  const bytes = Buffer.from(marker, 'utf8');
  const out: string[] = [];
  for (let offset = 0; offset < 3; offset++) {
    const padded = Buffer.concat([Buffer.alloc(offset), bytes]);
    const encoded = padded.toString('base64');
    const firstWholeGroup = offset === 0 ? 0 : 1;
    const wholeGroups = Math.floor(padded.length / 3);
    const stable = encoded.slice(firstWholeGroup * 4, wholeGroups * 4);
    if (stable.length > 0) out.push(stable);
  }
  return out;
}

function lineOf(text: string, index: number): number {
  let line = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < index; i = text.indexOf('\n', i + 1)) line++;
  return line;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}
