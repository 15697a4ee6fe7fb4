/**
 * The overlord state shared with standbys (overlord/trust/shared-state.ts): packing, sealing with the overlord
 * secret, refusing a wrong secret or a changed byte, and the publish/fetch edges over an in-memory store.
 * The real etcd with discovery's auth: test/integration/overlord-standby.test.ts.
 */
import { mkdtemp, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { findSecrets } from '../../../core/secrets.ts';
import { discoveryRbac } from '../../../overlord/trust/discovery-auth.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { fetchSharedState, followSharedState, publishSharedState } from '../../../overlord/trust/shared-state.ts';
import { openState, overlordDiscoveryPassword, packState, readOverlordSecret, readStateFiles, sealState, stateFingerprint, unpackState, type StateFile } from '../../../overlord/trust/sealed-state.ts';
import { FakeClock, flush, MemoryStore } from './fakes.ts';
import { captureLog } from '../../harness/log-capture.ts';

const keys = clusterKeys('demo');
const SECRET = 'S3cr3t'.repeat(10) + 'abcd';
const OTHER = 'x'.repeat(64);
const FILES: StateFile[] = [
  { path: 'ssh/id_ed25519', content: '-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n' },
  { path: 'pki/ca/cluster.key', content: '-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n' },
  { path: 'pki/discovery/root.password', content: `${'a'.repeat(64)}\n` },
];


const errorOf = (fn: () => unknown): CorekubeError => {
  try {
    fn();
  } catch (err) {
    return err as CorekubeError;
  }
  throw new Error('expected a throw');
};

describe('packing and sealing the overlord state', () => {
  it('packs canonically (order does not matter) and unpacks to the same files', () => {
    const packed = packState(FILES);
    expect(packState([...FILES].reverse()).equals(packed)).toBe(true);
    expect(unpackState(packed)).toEqual([...FILES].sort((a, b) => a.path.localeCompare(b.path)));
  });

  it('opens with the secret it was sealed with, and seals afresh each time (salt and nonce)', () => {
    const packed = packState(FILES);
    const a = sealState(packed, SECRET, keys.overlordState);
    const b = sealState(packed, SECRET, keys.overlordState);
    expect(a).not.toBe(b);
    expect(openState(a, SECRET, keys.overlordState).equals(packed)).toBe(true);
    expect(openState(b, SECRET, keys.overlordState).equals(packed)).toBe(true);
    const env = JSON.parse(a) as Record<string, unknown>;
    expect(env).toMatchObject({ schema: 1, cipher: 'aes-256-gcm', kdf: { name: 'scrypt', N: 32768, r: 8, p: 1 } });
    // nothing of the content, the secret or the derived password is readable in the sealed value
    expect(findSecrets(a, { values: [SECRET, overlordDiscoveryPassword(SECRET), 'a'.repeat(64), 'AAAA\n', 'BBBB\n'] })).toEqual([]);
  });

  it('refuses a wrong secret with E_OVERLORD_STATE and a hint, naming no secret', () => {
    const sealed = sealState(packState(FILES), SECRET, keys.overlordState);
    const err = errorOf(() => openState(sealed, OTHER, keys.overlordState));
    expect(err).toBeInstanceOf(CorekubeError);
    expect(err).toMatchObject({ code: 'E_OVERLORD_STATE', retryable: false });
    expect(err.message).toMatch(/does not open with this server's overlord secret/);
    expect(err.hint).toMatch(/overlord_secret/);
    expect(findSecrets(`${err.message} ${err.hint}`, { values: [SECRET, OTHER] })).toEqual([]);
  });

  it('refuses a tampered value: a changed ciphertext byte, tag, or the value moved to another key', () => {
    const sealed = sealState(packState(FILES), SECRET, keys.overlordState);
    const env = JSON.parse(sealed) as { data: string; tag: string };
    const data = Buffer.from(env.data, 'base64');
    data[5]! ^= 1;
    expect(errorOf(() => openState(JSON.stringify({ ...env, data: data.toString('base64') }), SECRET, keys.overlordState)).code).toBe('E_OVERLORD_STATE');
    const tag = Buffer.from(env.tag, 'base64');
    tag[0]! ^= 1;
    expect(errorOf(() => openState(JSON.stringify({ ...env, tag: tag.toString('base64') }), SECRET, keys.overlordState)).code).toBe('E_OVERLORD_STATE');
    expect(errorOf(() => openState(sealed, SECRET, clusterKeys('other').overlordState)).code).toBe('E_OVERLORD_STATE');
    expect(errorOf(() => openState('not json', SECRET, keys.overlordState)).message).toMatch(/not JSON/);
    expect(errorOf(() => openState(JSON.stringify({ ...env, kdf: { name: 'scrypt', N: 2 ** 24, r: 8, p: 1, salt: 'AAAAAAAAAAAAAAAAAAAAAA==' } }), SECRET, keys.overlordState)).message).toMatch(/envelope/);
  });

  it('refuses paths outside its directories, and `..`', () => {
    for (const p of ['heat/overlord-ready.sent', 'ssh/../heat/x', '/etc/passwd', 'pki', 'pki//x']) {
      expect(() => packState([{ path: p, content: 'x' }]), p).toThrow(/not a state file path/);
      const forged = Buffer.from(JSON.stringify({ schema: 1, files: [{ path: p, content: 'x' }] }));
      expect(errorOf(() => unpackState(forged)).code, p).toBe('E_OVERLORD_STATE');
    }
  });

  it('derives the overlord discovery user\'s password from the secret (HMAC-SHA256, hex), never the secret itself', () => {
    const pw = overlordDiscoveryPassword(SECRET);
    expect(pw).toMatch(/^[0-9a-f]{64}$/);
    expect(pw).not.toContain(SECRET);
    expect(overlordDiscoveryPassword(SECRET)).toBe(pw);
    expect(overlordDiscoveryPassword(OTHER)).not.toBe(pw);
  });
});

describe('the discovery RBAC with an overlord secret', () => {
  it('adds user overlord with read of exactly <prefix>overlord/state; without a secret there is none', () => {
    const base = { root: 'r'.repeat(64), joiner: 'join-token-0123456789' };
    const withSecret = discoveryRbac(keys, { ...base, overlord: overlordDiscoveryPassword(SECRET) });
    expect(withSecret.roles.find((r) => r.name === 'overlord')).toEqual({ name: 'overlord', permissions: [{ permission: 'Read', key: '/corekube/demo/overlord/state', prefix: false }] });
    expect(withSecret.users.find((u) => u.name === 'overlord')).toEqual({ name: 'overlord', password: overlordDiscoveryPassword(SECRET), roles: ['overlord'] });
    expect(withSecret.users.map((u) => u.name)).toEqual(['root', 'joiner', 'overlord']);
    const without = discoveryRbac(keys, base);
    expect(without.users.map((u) => u.name)).toEqual(['root', 'joiner']);
    expect(without.roles.map((r) => r.name)).toEqual(['joiner']);
  });
});

describe('publishing and fetching the state', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-shared-state-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function stateDir(name: string, files: readonly StateFile[]): Promise<string> {
    const d = path.join(dir, name);
    for (const f of files) {
      await mkdir(path.dirname(path.join(d, f.path)), { recursive: true, mode: 0o700 });
      await writeFile(path.join(d, f.path), f.content, { mode: 0o600 });
    }
    return d;
  }

  it('reads ssh/, pki/, handles/ and cloud/ only, skipping heat/ markers and temporary files', async () => {
    const d = await stateDir('a', [...FILES, { path: 'heat/overlord-ready.sent', content: 'x' } as StateFile]);
    await writeFile(path.join(d, 'pki', '.root.password.1.ab.tmp'), 'partial');
    expect((await readStateFiles(d)).map((f) => f.path).sort()).toEqual(FILES.map((f) => f.path).sort());
  });

  it('packs what the stack channel and the cloud provider keep (cloud/): a standby gets the stack user and the credentials', () => {
    const files = [{ path: 'cloud/channel-agent.json', content: '{}' }, { path: 'cloud/openstack.json', content: '{}' }];
    expect(unpackState(packState(files)).map((f) => f.path).sort()).toEqual(['cloud/channel-agent.json', 'cloud/openstack.json']);
  });

  it('publishes once, changes nothing the second time, and again when a file is added', async () => {
    const d = await stateDir('bootstrap', FILES);
    const store = new MemoryStore();
    const { log, text } = captureLog();
    const first = await publishSharedState({ store, keys, stateDir: d, secret: SECRET, log });
    expect(first).toMatchObject({ published: true, files: 3 });
    const rev = store.data.get(keys.overlordState)!.modRevision;
    expect(await publishSharedState({ store, keys, stateDir: d, secret: SECRET, log })).toMatchObject({ published: false, fingerprint: first.fingerprint });
    expect(store.data.get(keys.overlordState)!.modRevision).toBe(rev);
    await writeFile(path.join(d, 'pki', 'discovery', 'flannel.password'), `${'f'.repeat(64)}\n`, { mode: 0o600 });
    expect(await publishSharedState({ store, keys, stateDir: d, secret: SECRET, log })).toMatchObject({ published: true, files: 4 });
    expect(findSecrets(text(), { values: [SECRET, overlordDiscoveryPassword(SECRET), 'a'.repeat(64), 'f'.repeat(64)] })).toEqual([]);
  });

  it('publishes nothing when fenced on a leader key that is gone: a deposed leader cannot overwrite its successor\'s state', async () => {
    const store = new MemoryStore();
    const { log } = captureLog();
    const d = await stateDir('deposed', FILES);
    await store.put(keys.overlordState, sealState(packState(FILES.slice(0, 2)), SECRET, keys.overlordState));
    const before = store.data.get(keys.overlordState)!;
    const fence = { key: `${keys.leaderCandidates}old-lease`, createRevision: '1' };
    await expect(publishSharedState({ store, keys, stateDir: d, secret: SECRET, log, fence })).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    expect(store.data.get(keys.overlordState)).toEqual(before);
    // while the fence holds, it publishes
    await store.put(fence.key, 'leader');
    const created = String(store.data.get(fence.key)!.createRevision);
    expect(await publishSharedState({ store, keys, stateDir: d, secret: SECRET, log, fence: { key: fence.key, createRevision: created } })).toMatchObject({ published: true, files: 3 });
  });

  it('at boot takes the published state over first: a restarted overlord never publishes an older state than the last leader\'s', async () => {
    const store = new MemoryStore();
    const { log } = captureLog();
    const reissued: StateFile = { path: 'pki/machines/m1/kubelet.crt', content: 're-issued by the leader since\n' };
    await store.put(keys.overlordState, sealState(packState([...FILES, reissued]), SECRET, keys.overlordState));
    // the restarted overlord holds the older pair and a file of its own the leader never had
    const own: StateFile = { path: 'ssh/discovery.host-key', content: 'ssh-ed25519 AAAA discovery\n' };
    const d = await stateDir('restarted', [...FILES, { ...reissued, content: 'older\n' }, own]);
    const result = await publishSharedState({ store, keys, stateDir: d, secret: SECRET, log, adopt: true });
    expect(result).toMatchObject({ published: true, files: 5 });
    expect(await readFile(path.join(d, reissued.path), 'utf8')).toBe(reissued.content);
    const now = unpackState(openState(store.data.get(keys.overlordState)!.value, SECRET, keys.overlordState));
    expect(now.find((f) => f.path === reissued.path)!.content).toBe(reissued.content);
    expect(now.find((f) => f.path === own.path)!.content).toBe(own.content);
  });

  it('fetches: waits while the state is absent, then writes the files 0600 in 0700 directories', async () => {
    const store = new MemoryStore();
    const clock = new FakeClock();
    const { log, text } = captureLog();
    const standby = path.join(dir, 'standby');
    const logins: string[] = [];
    const fetching = fetchSharedState(
      { etcd: { endpoints: ['https://127.0.0.1:2379'] }, keys, stateDir: standby, secret: SECRET },
      { log, clock, createStore: (o) => (logins.push(o.auth!.password), store), backoff: { initialMs: 1_000, maxMs: 4_000 } },
    );
    await clock.advance(3_000);
    expect(text()).toContain('"event":"overlord-state.waiting"');
    await store.put(keys.overlordState, sealState(packState(FILES), SECRET, keys.overlordState));
    await clock.advance(4_000); // the next attempt finds it (its file writes are real I/O: awaited below)
    const got = await fetching;
    expect(got).toMatchObject({ files: 3, fingerprint: stateFingerprint(packState(FILES)) });
    expect(logins.every((p) => p === overlordDiscoveryPassword(SECRET))).toBe(true);
    for (const f of FILES) {
      expect(await readFile(path.join(standby, f.path), 'utf8')).toBe(f.content);
      expect((await stat(path.join(standby, f.path))).mode & 0o777).toBe(0o600);
    }
    expect((await stat(path.join(standby, 'pki', 'ca'))).mode & 0o777).toBe(0o700);
    expect(findSecrets(text(), { values: [SECRET, overlordDiscoveryPassword(SECRET), 'a'.repeat(64)] })).toEqual([]);
  });

  it('with a wrong secret fails with E_OVERLORD_STATE and writes nothing', async () => {
    const store = new MemoryStore();
    await store.put(keys.overlordState, sealState(packState(FILES), SECRET, keys.overlordState));
    const standby = path.join(dir, 'standby');
    const err = await fetchSharedState(
      { etcd: { endpoints: ['https://127.0.0.1:2379'] }, keys, stateDir: standby, secret: OTHER },
      { log: captureLog().log, clock: new FakeClock(), createStore: () => store },
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_OVERLORD_STATE' });
    await expect(stat(standby)).rejects.toThrow(/ENOENT/);
  });

  it('follows: a standby writes each newly published state; a leader does not; a lost watch re-reads the key', async () => {
    const store = new MemoryStore();
    const standby = path.join(dir, 'follower');
    let leading = false;
    const { log, text } = captureLog();
    const seal = (files: StateFile[]) => sealState(packState(files), SECRET, keys.overlordState);
    await store.put(keys.overlordState, seal(FILES));
    const follower = followSharedState({ store, keys, stateDir: standby, secret: SECRET, log, clock: new FakeClock(), applies: () => !leading });
    // the follower's work is real (scrypt, file writes): polled, not driven by the fake clock
    const until = async (n: number) => {
      for (let i = 0; i < 200 && follower.applied() < n; i++) await new Promise((r) => setTimeout(r, 5));
    };
    try {
      await until(1);
      expect(await readFile(path.join(standby, 'ssh/id_ed25519'), 'utf8')).toBe(FILES[0]!.content);
      const issued: StateFile = { path: 'pki/machines/m1/kubelet.key', content: 'issued by the leader\n' };
      await store.put(keys.overlordState, seal([...FILES, issued]));
      await until(2);
      expect(await readFile(path.join(standby, issued.path), 'utf8')).toBe(issued.content);
      leading = true;
      await store.put(keys.overlordState, seal([...FILES, { ...issued, content: 'older, from a deposed leader\n' }]));
      await flush(20);
      expect(follower.applied()).toBe(2);
      expect(await readFile(path.join(standby, issued.path), 'utf8')).toBe(issued.content);
      leading = false;
      store.compactAndLoseWatches();
      await store.put(keys.overlordState, seal([...FILES, { ...issued, content: 'newest\n' }]));
      await until(3);
      expect(await readFile(path.join(standby, issued.path), 'utf8')).toBe('newest\n');
      expect(text()).toContain('"event":"overlord-state.followed"');
    } finally {
      await follower.stop();
    }
  });

  it('reads the secret file: absent or empty = none; anything else than 32+ letters and digits refused', async () => {
    const file = path.join(dir, 'overlord-secret');
    expect(await readOverlordSecret(file)).toBeUndefined();
    await writeFile(file, '\n', { mode: 0o600 });
    expect(await readOverlordSecret(file)).toBeUndefined();
    await writeFile(file, `${SECRET}\n`, { mode: 0o600 });
    expect(await readOverlordSecret(file)).toBe(SECRET);
    await writeFile(file, 'short-and-bad\n', { mode: 0o600 });
    const err = await readOverlordSecret(file).catch((e: unknown) => e as CorekubeError);
    expect(err).toMatchObject({ code: 'E_USAGE' });
    expect((err as CorekubeError).message).not.toContain('short-and-bad');
  });
});
