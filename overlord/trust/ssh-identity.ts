import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { lstat, readFile } from 'node:fs/promises';
import path from 'node:path';
import { CorekubeError } from '../../core/errors.ts';
import { writeFileAtomic } from '../../core/private-files.ts';

/**
 * The overlord's own SSH identity: an ed25519 key pair made at first boot with node:crypto (no ssh-keygen
 * in the image), kept in `<stateDir>/ssh/` (files 0600, directory 0700) and reused by every later start.
 * Its public key line goes to the machines through Heat (overlord_ready's data) and `<prefix>/ssh/overlord.pub`;
 * the private key never leaves the state directory, and no log line or error carries it.
 *
 * The private key is written in OpenSSH's own format (`-----BEGIN OPENSSH PRIVATE KEY-----`, unencrypted),
 * which ssh2 (node-ssh) and OpenSSH read alike: `ssh -i <stateDir>/ssh/id_ed25519 corekube@<machine>` works
 * for an operator on the overlord server.
 */
export const SSH_KEY_FILE = 'ssh/id_ed25519';
export const SSH_PUBLIC_KEY_FILE = 'ssh/id_ed25519.pub';

export interface SshIdentity {
  /** OpenSSH private key text; never log it */
  readonly privateKey: string;
  /** `ssh-ed25519 AAAA… corekube-overlord@<cluster>` (one line, no newline) */
  readonly publicKey: string;
  /** `SHA256:…` as `ssh-keygen -l` prints it: what logs and tests name the key by */
  readonly fingerprint: string;
  /** true when this call made the pair (first boot) */
  readonly created: boolean;
}

const KEY_TYPE = 'ssh-ed25519';
const AUTH_MAGIC = 'openssh-key-v1\0';

/** The key pair in `<stateDir>/ssh/`, made and stored when there is none. */
export async function ensureSshIdentity(stateDir: string, comment: string): Promise<SshIdentity> {
  if (!/^[A-Za-z0-9@._:+-]{1,128}$/.test(comment)) {
    throw new CorekubeError('E_INTERNAL', `SSH key comment ${JSON.stringify(comment)} has characters authorized_keys checks refuse`, { hint: 'use letters, digits and @._:+-' });
  }
  const keyFile = path.join(stateDir, SSH_KEY_FILE);
  const pubFile = path.join(stateDir, SSH_PUBLIC_KEY_FILE);
  const stored = await readPrivate(keyFile);
  if (stored !== undefined) {
    const { publicKey } = parseOpensshPrivateKey(stored, keyFile);
    // the comment is ours, not the file's: the .pub is rewritten when missing or different
    const line = publicKeyLine(publicKey, comment);
    const pub = await readPrivate(pubFile).catch(() => undefined);
    if (pub?.trim() !== line) await writeFileAtomic(pubFile, `${line}\n`, { root: stateDir });
    return Object.freeze({ privateKey: stored, publicKey: line, fingerprint: fingerprintOf(publicKey), created: false });
  }
  const { privateKey } = generateKeyPairSync('ed25519');
  const { seed, publicKey } = rawEd25519(privateKey);
  const text = formatOpensshPrivateKey(seed, publicKey, comment);
  const line = publicKeyLine(publicKey, comment);
  // private key first: a crash before the .pub is written is repaired from it on the next start
  await writeFileAtomic(keyFile, text, { root: stateDir });
  await writeFileAtomic(pubFile, `${line}\n`, { root: stateDir });
  return Object.freeze({ privateKey: text, publicKey: line, fingerprint: fingerprintOf(publicKey), created: true });
}

/** `ssh-ed25519 <base64 blob> <comment>` */
export function publicKeyLine(publicKey: Buffer, comment: string): string {
  return `${KEY_TYPE} ${publicKeyBlob(publicKey).toString('base64')} ${comment}`;
}

/** SHA256 fingerprint of a raw ed25519 public key, as `ssh-keygen -l` prints it. */
export function fingerprintOf(publicKey: Buffer): string {
  return `SHA256:${createHash('sha256').update(publicKeyBlob(publicKey)).digest('base64').replace(/=+$/, '')}`;
}

/** The fingerprint of a public key line (`ssh-ed25519 AAAA… comment`). */
export function fingerprintOfLine(line: string): string {
  const blob = Buffer.from(line.trim().split(/\s+/)[1] ?? '', 'base64');
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

function publicKeyBlob(publicKey: Buffer): Buffer {
  return Buffer.concat([sshString(KEY_TYPE), sshString(publicKey)]);
}

/** The 32-byte seed and 32-byte public key of an ed25519 KeyObject. */
function rawEd25519(privateKey: KeyObject): { seed: Buffer; publicKey: Buffer } {
  const jwk = privateKey.export({ format: 'jwk' });
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || !jwk.d || !jwk.x) throw new CorekubeError('E_INTERNAL', 'node:crypto did not return an Ed25519 key');
  return { seed: Buffer.from(jwk.d, 'base64url'), publicKey: Buffer.from(jwk.x, 'base64url') };
}

/**
 * OpenSSH's private key format (PROTOCOL.key), unencrypted: magic, cipher/kdf "none", one public key, then
 * the private section (two equal check words, the key, its comment, padding 1, 2, 3… to a multiple of 8).
 */
export function formatOpensshPrivateKey(seed: Buffer, publicKey: Buffer, comment: string): string {
  const check = randomBytes(4);
  const section = Buffer.concat([
    check,
    check,
    sshString(KEY_TYPE),
    sshString(publicKey),
    sshString(Buffer.concat([seed, publicKey])),
    sshString(comment),
  ]);
  const padLength = (8 - (section.length % 8)) % 8;
  const padded = Buffer.concat([section, Buffer.from(Array.from({ length: padLength }, (_, i) => i + 1))]);
  const body = Buffer.concat([
    Buffer.from(AUTH_MAGIC, 'latin1'),
    sshString('none'),
    sshString('none'),
    sshString(''),
    uint32(1),
    sshString(publicKeyBlob(publicKey)),
    sshString(padded),
  ]);
  const b64 = body.toString('base64').replace(/.{1,70}/g, '$&\n');
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}-----END OPENSSH PRIVATE KEY-----\n`;
}

/**
 * Reads back a key this module wrote (unencrypted ed25519 in OpenSSH's format) and checks that its halves
 * belong together. Anything else is E_PKI naming the file — never its content.
 */
export function parseOpensshPrivateKey(text: string, what: string): { seed: Buffer; publicKey: Buffer } {
  const bad = (why: string) =>
    new CorekubeError('E_PKI', `${what} is not the overlord's SSH key (${why})`, {
      hint: `restore it from a backup, or delete ${what} and its .pub to make a new one (then every machine must be given the new public key)`,
    });
  const m = /^-----BEGIN OPENSSH PRIVATE KEY-----\n([A-Za-z0-9+/=\n]+)-----END OPENSSH PRIVATE KEY-----\n?$/.exec(text);
  if (!m) throw bad('not an OpenSSH private key');
  const outer = reader(Buffer.from(m[1]!.replace(/\n/g, ''), 'base64'), bad);
  if (outer.take(AUTH_MAGIC.length).toString('latin1') !== AUTH_MAGIC) throw bad('no openssh-key-v1 header');
  if (outer.str().toString() !== 'none' || outer.str().toString() !== 'none') throw bad('encrypted');
  outer.str(); // kdf options
  if (outer.take(4).readUInt32BE(0) !== 1) throw bad('not exactly one key');
  const outerPublic = Buffer.from(outer.str());
  const inner = reader(outer.str(), bad);
  if (!inner.take(4).equals(inner.take(4))) throw bad('check words differ');
  if (inner.str().toString() !== KEY_TYPE) throw bad('not an ed25519 key');
  const publicKey = Buffer.from(inner.str());
  const secret = inner.str();
  if (publicKey.length !== 32 || secret.length !== 64 || !secret.subarray(32).equals(publicKey)) throw bad('malformed ed25519 key');
  const seed = Buffer.from(secret.subarray(0, 32));
  if (!outerPublic.equals(publicKeyBlob(publicKey))) throw bad('its two copies of the public key differ');
  // the seed must derive the stored public key
  const derived = createPublicKey(createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d: seed.toString('base64url'), x: publicKey.toString('base64url') }, format: 'jwk' }))
    .export({ format: 'jwk' });
  if (derived.x !== publicKey.toString('base64url')) throw bad('its public half does not match its private half');
  return { seed, publicKey };
}

/** Reads SSH wire-format fields (uint32-length-prefixed strings) from a buffer. */
function reader(buf: Buffer, bad: (why: string) => Error) {
  let at = 0;
  const take = (n: number): Buffer => {
    if (at + n > buf.length) throw bad('truncated');
    const out = buf.subarray(at, at + n);
    at += n;
    return out;
  };
  return { take, str: () => take(take(4).readUInt32BE(0)) };
}

function sshString(value: string | Buffer): Buffer {
  const b = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  return Buffer.concat([uint32(b.length), b]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

/** A file that must be readable by its owner only; undefined when absent. */
async function readPrivate(file: string): Promise<string | undefined> {
  let st;
  try {
    st = await lstat(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CorekubeError('E_IO', `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { hint: 'check the state directory volume' });
  }
  if (!st.isFile()) throw new CorekubeError('E_PKI', `${file} is not a regular file`, { hint: 'remove it: the overlord keeps its SSH key as a plain file' });
  if ((st.mode & 0o077) !== 0) {
    throw new CorekubeError('E_PKI', `${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)})`, {
      hint: `run 'chmod 600 ${file}': the overlord's SSH key must be readable by its owner only`,
    });
  }
  return readFile(file, 'utf8');
}
