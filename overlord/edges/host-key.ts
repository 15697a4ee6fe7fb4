import { createHash } from 'node:crypto';

/**
 * SSH host public keys as the overlord stores, pins and compares them: the line `type base64` (a comment after it
 * is not part of the key). PURE.
 */
export interface ParsedHostKey {
  /** the algorithm named inside the key blob (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`, …) */
  readonly type: string;
  /** the wire-format public key blob, as ssh2 hands it to the host verifier */
  readonly blob: Buffer;
}

/** The algorithm name a key blob starts with (uint32 length + name); undefined when the blob is malformed. */
function blobType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const len = blob.readUInt32BE(0);
  if (len === 0 || len > 64 || blob.length < 4 + len) return undefined;
  return blob.subarray(4, 4 + len).toString('latin1');
}

/** Parses `type base64 [comment]`; undefined when it is not a public key line whose blob matches its type. */
export function parseHostKey(line: string): ParsedHostKey | undefined {
  const [type, b64] = line.trim().split(/\s+/);
  if (!type || !b64 || !/^[A-Za-z0-9+/]+=*$/.test(b64)) return undefined;
  const blob = Buffer.from(b64, 'base64');
  return blobType(blob) === type ? { type, blob } : undefined;
}

/** `type base64` of a key blob (what we store and compare). */
export function formatHostKey(blob: Buffer): string {
  return `${blobType(blob) ?? 'unknown'} ${blob.toString('base64')}`;
}

/** OpenSSH's fingerprint (`SHA256:…`, as `ssh-keygen -lf` prints it): what errors show of a host key. */
export function hostKeyFingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** The fingerprint of a key line, or a note that it is not one. */
export function fingerprintOf(line: string): string {
  const parsed = parseHostKey(line);
  return parsed ? hostKeyFingerprint(parsed.blob) : 'not an SSH public key';
}

/** The key of a line, without its comment: `type base64`. */
export function hostKeyOf(line: string): string {
  return line.trim().split(/\s+/).slice(0, 2).join(' ');
}

/** Whether two key lines hold the same key (comments and spacing aside). */
export function sameHostKey(a: string, b: string): boolean {
  return hostKeyOf(a) === hostKeyOf(b);
}
