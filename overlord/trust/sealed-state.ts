import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, scryptSync } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { CorekubeError } from '../../core/errors.ts';
import { DISCOVERY_MAX_REQUEST_BYTES } from '../../contracts/discovery-limits.ts';
import { writeFileAtomic } from '../../core/private-files.ts';

/**
 * The overlord's state, sealed for standby overlords (shared-state.ts publishes, fetches and follows it through
 * discovery). A standby needs exactly what the bootstrap overlord made at first boot — its SSH key, its CAs
 * and their keys, discovery's certificates and the discovery passwords: every file under `<stateDir>/ssh`
 * and `<stateDir>/pki` — and `<stateDir>/handles`, the stack's cluster_ready handle, so a standby that leads
 * before the first deploy is done can signal it (never `heat/`, whose markers belong to the server that
 * signalled).
 *
 * Contract of the value at `<prefix>overlord/state` (keys.overlordState):
 * - ONE etcd value, the JSON envelope `{"schema":1,"cipher":"aes-256-gcm","kdf":{"name":"scrypt","N","r","p",
 *   "salt"},"nonce","tag","data"}` (binary fields base64). `data` is AES-256-GCM of the gzip of the packed
 *   files (`{"schema":1,"files":[{"path","content"}…]}`, sorted by path); the key is
 *   scrypt(overlord secret, salt); the etcd key name is the additional authenticated data, so a value moved
 *   to another key or cluster does not open.
 * - Written by `root` only (the overlord that leads or boots), and only when absent or holding other files:
 *   the comparison is on the decrypted content (salt and nonce are fresh at every write).
 * - Read by discovery's `overlord` user, whose password is derived from the secret (overlordDiscoveryPassword),
 *   never the secret itself: that user may read this one key and nothing else (overlord/trust/discovery-auth.ts).
 * - The overlord secret (`/etc/corekube/secrets/overlord-secret`, 0600, a Heat RandomString in every overlord
 *   server's user_data) never leaves the overlord servers: etcd holds only the ciphertext.
 *
 * Nothing secret is logged: files are named and counted, the state is named by a fingerprint (sha256 of the
 * packed plaintext, first 16 hex digits), which says whether two overlords hold the same state and nothing more.
 */
export const SHARED_STATE_DIRS = ['ssh', 'pki', 'handles', 'cloud'] as const;
export const STATE_SCHEMA = 1;

/** The HMAC message of the `overlord` discovery user's password. */
const DISCOVERY_PASSWORD_CONTEXT = 'corekube discovery user overlord';
/** What an overlord secret may be: a Heat RandomString of letters and digits, long enough to be a key. */
const SECRET = /^[A-Za-z0-9]{32,256}$/;
/** scrypt's cost as written; an envelope asking for more than MAX_N is refused (it would only burn memory). */
const SCRYPT = Object.freeze({ N: 2 ** 15, r: 8, p: 1 });
const MAX_N = 2 ** 17;
/** discovery's etcd refuses requests above DISCOVERY_MAX_REQUEST_BYTES (1 MiB): keep room for the request itself. */
export const MAX_SEALED_BYTES = DISCOVERY_MAX_REQUEST_BYTES - 32 * 1024;
const REL_PATH = new RegExp(`^(${SHARED_STATE_DIRS.join('|')})(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$`);

export interface StateFile {
  /** relative to the state directory, slash-separated: `ssh/id_ed25519`, `pki/ca/cluster.key` */
  readonly path: string;
  /** never log it */
  readonly content: string;
}

/** PURE: the `overlord` discovery user's password: HMAC-SHA256(secret, context), hex. */
export function overlordDiscoveryPassword(secret: string): string {
  return createHmac('sha256', secret).update(DISCOVERY_PASSWORD_CONTEXT).digest('hex');
}

/** PURE: the canonical bytes of a set of files (sorted by path; duplicate or stray paths refused). */
export function packState(files: readonly StateFile[]): Buffer {
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (let i = 0; i < sorted.length; i++) {
    checkPath(sorted[i]!.path);
    if (i > 0 && sorted[i - 1]!.path === sorted[i]!.path) throw new CorekubeError('E_INTERNAL', `the overlord state holds ${sorted[i]!.path} twice`);
  }
  return Buffer.from(JSON.stringify({ schema: STATE_SCHEMA, files: sorted.map((f) => ({ path: f.path, content: f.content })) }), 'utf8');
}

/** PURE: the files of packed bytes; anything else (a path outside ssh/ and pki/, `..`) is E_OVERLORD_STATE. */
export function unpackState(packed: Buffer): StateFile[] {
  let doc: unknown;
  try {
    doc = JSON.parse(packed.toString('utf8'));
  } catch {
    throw badState('its content is not the packed overlord state');
  }
  const d = doc as { schema?: unknown; files?: unknown };
  if (d?.schema !== STATE_SCHEMA || !Array.isArray(d.files)) throw badState(`its content is not schema ${STATE_SCHEMA}`);
  const out: StateFile[] = [];
  for (const f of d.files as unknown[]) {
    const { path: p, content } = (f ?? {}) as { path?: unknown; content?: unknown };
    if (typeof p !== 'string' || typeof content !== 'string' || !REL_PATH.test(p) || p.split('/').includes('..')) {
      throw badState(`it holds a file entry that is not a path under ${SHARED_STATE_DIRS.join('/ or ')}/`);
    }
    out.push(Object.freeze({ path: p, content }));
  }
  return out;
}

/** PURE: the fingerprint logs name a state by (sha256 of the packed bytes, 16 hex digits). */
export function stateFingerprint(packed: Buffer): string {
  return createHash('sha256').update(packed).digest('hex').slice(0, 16);
}

/**
 * PURE apart from the random salt and nonce (given for tests): the envelope of packed bytes, sealed with a
 * key derived from the overlord secret and bound to `context` (the etcd key name).
 */
export function sealState(packed: Buffer, secret: string, context: string, random: { salt?: Buffer; nonce?: Buffer } = {}): string {
  checkSecret(secret);
  const salt = random.salt ?? randomBytes(16);
  const nonce = random.nonce ?? randomBytes(12);
  const key = deriveKey(secret, salt, SCRYPT);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const data = Buffer.concat([cipher.update(gzipSync(packed)), cipher.final()]);
  return JSON.stringify({
    schema: STATE_SCHEMA,
    cipher: 'aes-256-gcm',
    kdf: { name: 'scrypt', ...SCRYPT, salt: salt.toString('base64') },
    nonce: nonce.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
    data: data.toString('base64'),
  });
}

/**
 * PURE: the packed bytes of an envelope. A wrong secret, a changed byte, another context or a malformed
 * envelope: E_OVERLORD_STATE (terminal), naming which — never the secret or any content.
 */
export function openState(sealed: string, secret: string, context: string): Buffer {
  checkSecret(secret);
  let env: { schema?: unknown; cipher?: unknown; kdf?: { name?: unknown; N?: unknown; r?: unknown; p?: unknown; salt?: unknown }; nonce?: unknown; tag?: unknown; data?: unknown };
  try {
    env = JSON.parse(sealed) as typeof env;
  } catch {
    throw badState('it is not a sealed overlord state (not JSON)');
  }
  const kdf = env?.kdf;
  const b64 = (v: unknown) => (typeof v === 'string' && /^[A-Za-z0-9+/]*={0,2}$/.test(v) ? Buffer.from(v, 'base64') : undefined);
  const salt = b64(kdf?.salt);
  const nonce = b64(env?.nonce);
  const tag = b64(env?.tag);
  const data = b64(env?.data);
  const N = kdf?.N;
  if (
    env?.schema !== STATE_SCHEMA || env.cipher !== 'aes-256-gcm' || kdf?.name !== 'scrypt' ||
    typeof N !== 'number' || !Number.isInteger(N) || N < 2 || N > MAX_N || (N & (N - 1)) !== 0 || kdf.r !== SCRYPT.r || kdf.p !== SCRYPT.p ||
    !salt || salt.length < 16 || !nonce || nonce.length !== 12 || !tag || tag.length !== 16 || !data
  ) {
    throw badState(`it is not a schema ${STATE_SCHEMA} aes-256-gcm/scrypt envelope`);
  }
  const decipher = createDecipheriv('aes-256-gcm', deriveKey(secret, salt, { N, r: SCRYPT.r, p: SCRYPT.p }), nonce);
  decipher.setAAD(Buffer.from(context, 'utf8'));
  decipher.setAuthTag(tag);
  let zipped: Buffer;
  try {
    zipped = Buffer.concat([decipher.update(data), decipher.final()]);
  } catch {
    throw new CorekubeError('E_OVERLORD_STATE', `the overlord state at ${context} does not open with this server's overlord secret (wrong secret, or the value was changed)`, {
      hint: 'every overlord server of a stack gets the same overlord_secret in its user_data (/etc/corekube/secrets/overlord-secret): check that this server belongs to the stack, or let the leading overlord publish the state again (restart it)',
    });
  }
  try {
    return gunzipSync(zipped);
  } catch {
    throw badState('its decrypted content is not gzip');
  }
}

function deriveKey(secret: string, salt: Buffer, params: { N: number; r: number; p: number }): Buffer {
  return scryptSync(secret, salt, 32, { ...params, maxmem: 256 * params.N * params.r + 16 * 1024 * 1024 });
}

function checkSecret(secret: string): void {
  if (!SECRET.test(secret)) throw new CorekubeError('E_INTERNAL', 'the overlord secret must be 32-256 letters and digits');
}

function checkPath(p: string): void {
  if (!REL_PATH.test(p) || p.split('/').includes('..')) throw new CorekubeError('E_INTERNAL', `${JSON.stringify(p)} is not a state file path under ${SHARED_STATE_DIRS.join('/ or ')}/`);
}

function badState(why: string): CorekubeError {
  return new CorekubeError('E_OVERLORD_STATE', `the overlord state in discovery cannot be used: ${why}`, {
    hint: 'the leading overlord publishes it at boot; restart it to publish it again, or delete the key as root so it is written afresh',
  });
}

// ---------------------------------------------------------------------------------------------------------
// Edges: the state directory and the overlord secret file (local files). Discovery's side: shared-state.ts.

/**
 * The overlord secret from its file, or undefined when there is none (booted by hand: no standby can join,
 * nothing is published). A file holding something else is E_USAGE naming the file, never its content.
 */
export async function readOverlordSecret(file: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CorekubeError('E_IO', `cannot read the overlord secret ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
      hint: 'mount /etc/corekube into the container; overlord.service gives the file to the image\'s user before each start',
    });
  }
  const secret = text.trim();
  if (secret === '') return undefined;
  if (!SECRET.test(secret)) {
    throw new CorekubeError('E_USAGE', `${file} does not hold an overlord secret (32-256 letters and digits)`, {
      hint: 'write the stack\'s overlord secret into it, on one line, or empty it to run without standbys',
    });
  }
  return secret;
}

/** Every regular file under `<stateDir>/ssh` and `<stateDir>/pki` (temporary `.…tmp` files of an interrupted write skipped). */
export async function readStateFiles(stateDir: string): Promise<StateFile[]> {
  const out: StateFile[] = [];
  const walk = async (rel: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(path.join(stateDir, rel), { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new CorekubeError('E_IO', `cannot list ${path.join(stateDir, rel)} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { hint: 'check the state directory volume' });
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const child = `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(child);
      else if (e.isFile()) out.push({ path: child, content: await readFile(path.join(stateDir, child), 'utf8') });
    }
  };
  for (const dir of SHARED_STATE_DIRS) await walk(dir);
  return out;
}

/**
 * Writes the files into `stateDir` (0600 each, directories 0700, atomically) where absent or different; files
 * the state does not hold are left alone. Returns the paths written.
 */
export async function writeStateFiles(stateDir: string, files: readonly StateFile[]): Promise<string[]> {
  const written: string[] = [];
  for (const f of files) {
    checkPath(f.path);
    const file = path.join(stateDir, ...f.path.split('/'));
    const st = await lstat(file).catch(() => undefined);
    if (st?.isFile() && (st.mode & 0o077) === 0 && (await readFile(file, 'utf8')) === f.content) continue;
    await writeFileAtomic(file, f.content, { root: stateDir });
    written.push(f.path);
  }
  return written;
}
