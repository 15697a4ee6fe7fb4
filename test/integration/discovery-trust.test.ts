/**
 * Discovery's trust against a real etcd (the pinned one, scripts/setup) run with the TLS flags of the rendered
 * discovery-etcd.service, on certificates from the overlord's own PKI (CertificateAuthority.ensureDiscovery):
 * the auth the overlord sets up (overlord/trust/discovery-auth.ts) gives root everything, lets a node holding the
 * join token ask to join — over TLS with curl through etcd's JSON gateway, as the announce script does, and
 * with the real announce script — but read nothing and write nowhere else; a machine's own user
 * (overlord/trust/machine-credentials.ts) writes its own record and subnet lease only; running the setup again
 * changes nothing (tokens issued before stay valid).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Etcd3, Range } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootPlan } from '../../cloud-config/index.ts';
import { CONFIG_FILES, DISCOVERY_TLS_FILES } from '../../cloud-config/machine-paths.ts';
import { CorekubeError } from '../../core/errors.ts';
import { findSecrets } from '../../core/secrets.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import {
  discoveryClientOptions,
  discoveryRbac,
  ensureDiscoveryAuth,
  ensureDiscoveryPasswords,
  pingDiscovery,
  type DiscoveryConnection,
  type DiscoveryRbac,
} from '../../overlord/trust/discovery-auth.ts';
import { createEtcdStore } from '../../overlord/edges/etcd-store.ts';
import { DiscoveryMachineCredentials, machinePassword } from '../../overlord/trust/machine-credentials.ts';
import { flannelGrants } from '../../overlord/pod-network/flannel.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import { CertificateAuthority, type DiscoveryPki } from '../../overlord/trust/pki/authority.ts';
import { DirectoryPkiStore } from '../../overlord/trust/pki/store.ts';
import { onExit } from '../harness/cleanup.ts';
import { missingParts } from '../harness/requirements.ts';
import { announceEnv } from '../harness/announce-env.ts';
import { startDiscoveryEtcd } from '../../localcloud/etcd/discovery-etcd.ts';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const skip = missingParts(...['etcd', 'curl', 'ip', 'bash', 'ssh-keygen'].filter((b) => !has(b)).map((b) => `${b} is not installed`));

const CLUSTER = 'trust-it';
const spec = parseClusterSpec({ flags: { name: CLUSTER } });
const keys = clusterKeys(CLUSTER);
const JOIN_TOKEN = randomBytes(24).toString('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


describe.skipIf(skip)('discovery trust on a real etcd with discovery\'s TLS flags', () => {
  let dir = '';
  let etcd: ChildProcess | undefined;
  let endpoint = '';
  let port = 0;
  let pki: DiscoveryPki;
  let conn: DiscoveryConnection;
  let rbac: DiscoveryRbac;
  let passwords: { root: string; machines: string };
  let tlsFlags: string[] = [];
  const clients: Etcd3[] = [];
  let unregister = () => {};

  const teardown = () => {
    if (etcd?.pid !== undefined && etcd.exitCode === null) etcd.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-trust-'));
    unregister = onExit('discovery trust test', teardown);
    const authority = new CertificateAuthority({ store: new DirectoryPkiStore(path.join(dir, 'state', 'pki')), clock: { now: () => Date.now() }, cluster: CLUSTER });
    pki = await authority.ensureDiscovery(spec);
    passwords = await ensureDiscoveryPasswords(new DirectoryPkiStore(path.join(dir, 'state', 'pki')));

    // the files the overlord pushes to discovery, where discovery-etcd.service reads them
    const started = await startDiscoveryEtcd({ spec, dir, pki });
    ({ endpoint, port } = started);
    etcd = started.proc;
    tlsFlags = [...started.tlsFlags];

    conn = { endpoints: [endpoint], ca: pki.ca, cert: pki.overlordClient.cert, key: pki.overlordClient.key, callTimeoutMs: 3_000 };
    rbac = discoveryRbac(keys, { root: passwords.root, joiner: JOIN_TOKEN });
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (etcd.exitCode !== null) throw new Error(`etcd exited: ${await readFile(path.join(dir, 'etcd.log'), 'utf8')}`);
      try {
        await pingDiscovery(conn);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  });

  afterAll(() => {
    for (const c of clients) c.close();
    teardown();
    unregister();
  });

  const client = (auth?: { username: string; password: string }) => {
    const c = new Etcd3(discoveryClientOptions(conn, auth));
    clients.push(c);
    return c;
  };
  const root = () => client({ username: 'root', password: passwords.root });

  /** etcd's JSON gateway through curl, TLS verified with the discovery CA, as corekube-announce talks to it. */
  async function gateway(urlPath: string, body: object, token?: string): Promise<{ status: number; json: Record<string, unknown> }> {
    const caFile = path.join(dir, 'tls', DISCOVERY_TLS_FILES.ca);
    const args = ['--silent', '--show-error', '--max-time', '10', '--cacert', caFile, '-H', 'Content-Type: application/json', '--data-binary', '@-', '-w', '\n%{http_code}'];
    if (token !== undefined) {
      const header = path.join(dir, `auth-header-${randomUUID()}`);
      await writeFile(header, `Authorization: ${token}\n`, { mode: 0o600 });
      args.push('-H', `@${header}`);
    }
    const r = spawnSync('curl', [...args, `${endpoint}${urlPath}`], { input: JSON.stringify(body), encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`curl failed: ${r.stderr}`);
    const at = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(at + 1)), json: JSON.parse(r.stdout.slice(0, at) || '{}') as Record<string, unknown> };
  }
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  async function joinerToken(password = JOIN_TOKEN): Promise<string> {
    const res = await gateway('/v3/auth/authenticate', { name: 'joiner', password });
    expect(res.status).toBe(200);
    return res.json.token as string;
  }

  it('runs etcd the way discovery-etcd.service does: TLS with the pushed server cert, no client certificate required, cheap password hashing (random secrets only), requests and database bounded', () => {
    expect(tlsFlags.map((f) => f.split('=')[0])).toEqual(['--cert-file', '--key-file', '--bcrypt-cost', '--max-request-bytes', '--quota-backend-bytes']);
  });

  it('sets up auth on first run (deleting the shared flannel user of earlier versions); then root (the overlord) can do anything and an anonymous client nothing', async () => {
    const old = client();
    await old.role('flannel').create();
    await old.user('flannel').create('an-old-shared-password');
    await old.user('flannel').addRole('flannel');
    const first = await ensureDiscoveryAuth(conn, rbac);
    expect(first.wasEnabled).toBe(false);
    expect(first.changes).toEqual(expect.arrayContaining(['created role joiner', 'created user root', 'created user joiner', 'deleted retired role flannel', 'deleted retired user flannel', 'enabled auth']));
    expect((await root().getUsers()).map((u) => u.name).sort()).toEqual(['joiner', 'root']);

    // the overlord's own store, as bootstrap.ts opens it
    const store = createEtcdStore({ endpoints: [endpoint], tls: { ca: Buffer.from(pki.ca), cert: Buffer.from(pki.overlordClient.cert), key: Buffer.from(pki.overlordClient.key) }, auth: { username: 'root', password: passwords.root } });
    try {
      for (const key of [keys.ledgerOf('a'.repeat(32)), `${keys.network}config`, keys.hostkeyOf('a'.repeat(32)), keys.machine('b'.repeat(32)), keys.overlordSshKey, '/elsewhere/x']) {
        await store.put(key, 'v');
        expect((await store.get(key))?.value).toBe('v');
      }
      expect((await store.list(keys.machines)).kvs.length).toBe(1);
      await store.delete(keys.machine('b'.repeat(32)));
      await store.put(keys.overlordSshKey, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOverlordKeyForTheTrustTest00000000000000000 corekube-overlord@trust-it');
    } finally {
      await store.close();
    }
    const anonymous = client();
    await expect(anonymous.get(keys.overlordSshKey).string()).rejects.toThrow(/user name is empty/);
    const refused = await gateway('/v3/kv/range', { key: b64(keys.overlordSshKey) });
    expect(refused.status).not.toBe(200);
  });

  it('lets a joiner ask to join under join/ under its lease, and nothing else: no record, no reads of requests, records, ledger, network, PKI', async () => {
    const token = await joinerToken();
    const lease = await gateway('/v3/lease/grant', { TTL: '30' }, token);
    expect(lease.status).toBe(200);
    const leaseId = lease.json.ID as string;
    const mine = keys.joinOf('c'.repeat(32));
    const put = await gateway('/v3/kv/put', { key: b64(mine), value: b64('{"schema":1}'), lease: leaseId }, token);
    expect(put.status).toBe(200);
    expect((await root().get(mine).string())).toBe('{"schema":1}');
    // the one key it may read: the overlord's public key
    const pub = await gateway('/v3/kv/range', { key: b64(keys.overlordSshKey) }, token);
    expect(pub.status).toBe(200);
    expect(Buffer.from((pub.json.kvs as { value: string }[])[0]!.value, 'base64').toString()).toMatch(/^ssh-ed25519 /);

    const refusedReads = [
      { key: b64(mine) }, // not even its own request
      { key: b64(keys.join), range_end: b64(`${keys.join.slice(0, -1)}0`) }, // others' requests
      { key: b64(keys.machines), range_end: b64(`${keys.machines.slice(0, -1)}0`) }, // records
      { key: b64(keys.ledgerOf('a'.repeat(32))) },
      { key: b64(keys.ledger), range_end: b64(`${keys.ledger.slice(0, -1)}0`) },
      { key: b64(`${keys.network}config`) },
      { key: b64(keys.hostkeyOf('a'.repeat(32))) },
      { key: b64('/'), range_end: b64('\0') }, // everything (where any PKI would be)
    ];
    for (const body of refusedReads) {
      const r = await gateway('/v3/kv/range', body, token);
      expect(r.status, JSON.stringify(body)).not.toBe(200);
      expect(String(r.json.message ?? r.json.error)).toMatch(/permission denied/);
    }
    const refusedWrites = [keys.machine('c'.repeat(32)), keys.machine('d'.repeat(32)), keys.ledgerOf('c'.repeat(32)), `${keys.network}config`, keys.hostkeyOf('c'.repeat(32)), keys.overlordSshKey, clusterKeys('other').machine('c'.repeat(32)), `${keys.prefix}machines`];
    for (const key of refusedWrites) {
      const r = await gateway('/v3/kv/put', { key: b64(key), value: b64('x') }, token);
      expect(r.status, key).not.toBe(200);
    }
    expect(await root().get(keys.ledgerOf('c'.repeat(32))).string()).toBeNull();
    const revoke = await gateway('/v3/lease/revoke', { ID: leaseId }, token);
    expect(revoke.status).toBe(200);
    expect(await root().get(mine).string()).toBeNull();
    // a wrong token is refused
    expect((await gateway('/v3/auth/authenticate', { name: 'joiner', password: 'not-the-join-token-0123' })).status).not.toBe(200);
  });

  it("gives a machine's own user its record and, once reserved, its subnet lease — and nothing else", async () => {
    const credentials = new DiscoveryMachineCredentials(conn, passwords.root, keys, passwords.machines, flannelGrants);
    const id = 'e'.repeat(32);
    const other = 'f'.repeat(32);
    try {
      expect(await credentials.ensure(id)).toEqual(expect.arrayContaining([`created role machine-${id}`, `created user machine-${id}`]));
      await root().put(`${keys.network}subnets/10.244.9.0-24`).value('{"PublicIP":"10.240.0.40"}');
      await root().put(keys.machine(other)).value('{"schema":1}');
      const mine = client({ username: `machine-${id}`, password: machinePassword(passwords.machines, id) });
      const lease = mine.lease(30, { autoKeepAlive: false });
      await lease.put(keys.machine(id)).value('{"schema":1,"mine":true}');
      expect(await mine.get(keys.machine(id)).string()).toBe('{"schema":1,"mine":true}');
      // flanneld's reads
      expect(await mine.get(`${keys.network}config`).string()).toBe('v');
      expect(Object.keys(await mine.getAll().prefix(`${keys.network}subnets/`).strings())).toContain(`${keys.network}subnets/10.244.9.0-24`);
      // not before the overlord reserved it for this machine
      await expect(mine.put(`${keys.network}subnets/10.244.9.0-24`).value('x')).rejects.toThrow(/permission denied/);
      expect(await credentials.ensure(id, '10.244.9.0-24')).toEqual([`granted role machine-${id} readwrite on ${keys.network}subnets/10.244.9.0-24`]);
      await mine.put(`${keys.network}subnets/10.244.9.0-24`).value('{"PublicIP":"10.240.0.40","BackendType":"vxlan"}');

      const refusedReads = [keys.machine(other), keys.joinOf(id), keys.ledgerOf(id), keys.hostkeyOf(id), keys.subnetOf(id), keys.overlordSshKey];
      for (const key of refusedReads) await expect(mine.get(key).string(), key).rejects.toThrow(/permission denied/);
      await expect(mine.getAll().prefix(keys.machines).keys()).rejects.toThrow(/permission denied/);
      const refusedWrites = [keys.machine(other), keys.joinOf(other), keys.ledgerOf(id), `${keys.network}config`, `${keys.network}subnets/10.244.10.0-24`, keys.hostkeyOf(id), `${keys.machine(id)}x`];
      for (const key of refusedWrites) await expect(mine.put(key).value('x'), key).rejects.toThrow(/permission denied/);
      expect(await root().get(keys.machine(other)).string()).toBe('{"schema":1}');
      await lease.revoke();
      expect(await root().get(keys.machine(id)).string()).toBeNull();

      // idempotent, also for an overlord that restarted (a new object: nothing cached)
      const again = new DiscoveryMachineCredentials(conn, passwords.root, keys, passwords.machines, flannelGrants);
      try {
        expect(await again.ensure(id, '10.244.9.0-24')).toEqual([]);
      } finally {
        again.close();
      }
    } finally {
      credentials.close();
    }
  });

  it('runs the real announce script: a join request with the join token; with its own credentials, its record; credentials discovery refuses fall back to joining', async () => {
    const m = path.join(dir, 'machine');
    const config = path.join(m, 'etc-corekube');
    await mkdir(path.join(config, path.dirname(CONFIG_FILES.discoveryCa)), { recursive: true });
    await mkdir(path.join(config, path.dirname(CONFIG_FILES.joinToken)), { recursive: true });
    await writeFile(path.join(config, CONFIG_FILES.discoveryCa), pki.ca);
    await writeFile(path.join(config, CONFIG_FILES.joinToken), `${JOIN_TOKEN}\n`, { mode: 0o600 });
    const id = randomBytes(16).toString('hex');
    await writeFile(path.join(m, 'machine-id'), `${id}\n`);
    await writeFile(path.join(m, 'boot_id'), `${randomUUID()}\n`);
    await writeFile(path.join(m, 'hostname'), 'minion-7\n');
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'root@minion-7', '-f', path.join(m, 'host_key')]);
    const script = path.join(m, 'corekube-announce');
    await writeFile(script, bootPlan('minion', spec).files.find((x) => x.path.endsWith('/corekube-announce'))!.content);
    chmodSync(script, 0o755);
    const credentialsFile = path.join(config, CONFIG_FILES.discoveryCredentials);
    const credentials = new DiscoveryMachineCredentials(conn, passwords.root, keys, passwords.machines, flannelGrants);
    const r = root();
    const announce = () => {
      const proc = spawn('bash', [script], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: announceEnv(m, config, port),
      });
      const run = { proc, stderr: '', exited: new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code))) };
      proc.stderr!.setEncoding('utf8').on('data', (c: string) => (run.stderr += c));
      return run;
    };
    const appears = async (key: string, what: string) => {
      const deadline = Date.now() + 15_000;
      for (;;) {
        const v = await r.get(key).string();
        if (v !== null) return v;
        if (Date.now() > deadline) throw new Error(`${what} did not appear`);
        await sleep(100);
      }
    };
    const runs: ReturnType<typeof announce>[] = [];
    try {
      // 1. first boot: the join token only
      runs.push(announce());
      const request = await appears(keys.joinOf(id), 'the join request');
      expect(request, runs[0]!.stderr).toContain(`"id":"${id}"`);
      expect(await r.get(keys.machine(id)).string()).toBeNull();
      // past the lease TTL it is still there: keepalives work with write-only rights
      await sleep(4_500);
      expect(await r.get(keys.joinOf(id)).string()).toBe(request);

      // 2. admitted (what overlord/discovery/admission.ts does over SSH): its user, the file, a restart
      await credentials.ensure(id);
      await writeFile(credentialsFile, credentials.fileFor(id).content, { mode: 0o600 });
      runs[0]!.proc.kill('SIGTERM');
      expect(await runs[0]!.exited).toBe(0);
      expect(await r.get(keys.joinOf(id)).string()).toBeNull(); // its lease revoked on the way out
      runs.push(announce());
      const record = await appears(keys.machine(id), 'the machine record');
      expect(record, runs[1]!.stderr).toContain(`"id":"${id}"`);
      expect(runs[1]!.stderr).toContain(`as machine-${id}`);
      await sleep(4_500);
      expect(await r.get(keys.machine(id)).string()).toBe(record);
      runs[1]!.proc.kill('SIGTERM');
      expect(await runs[1]!.exited).toBe(0);
      expect(await r.get(keys.machine(id)).string()).toBeNull();
      expect(runs[1]!.stderr).toContain('revoked lease');

      // 3. credentials discovery no longer takes (the overlord's state was rebuilt): it asks to join again
      await writeFile(credentialsFile, `FLANNELD_ETCD_USERNAME=machine-${id}\nFLANNELD_ETCD_PASSWORD=${'0'.repeat(64)}\n`, { mode: 0o600 });
      runs.push(announce());
      await appears(keys.joinOf(id), 'the join request after refused credentials');
      expect(runs[2]!.stderr).toContain('refuses this machine\'s own user; asking to join instead');
      runs[2]!.proc.kill('SIGTERM');
      expect(await runs[2]!.exited).toBe(0);
      const all = runs.map((x) => x.stderr).join('\n');
      expect(findSecrets(all, { values: [JOIN_TOKEN, machinePassword(passwords.machines, id)] })).toEqual([]);
    } finally {
      for (const x of runs) if (x.proc.exitCode === null) x.proc.kill('SIGKILL');
      credentials.close();
    }
  });

  it('changes nothing when run again: same answer, and a joiner token from before stays valid', async () => {
    const before = await joinerToken();
    const again = await ensureDiscoveryAuth(conn, rbac);
    expect(again).toEqual({ changes: [], wasEnabled: true });
    const lease = await gateway('/v3/lease/grant', { TTL: '30' }, before);
    expect(lease.status).toBe(200); // etcd invalidates every token on any auth change: there was none
    await gateway('/v3/lease/revoke', { ID: lease.json.ID }, before);
  });

  it('puts back what was changed by hand: an extra grant is revoked, a changed password is reset', async () => {
    const r = root();
    await r.role('joiner').grant({ permission: 'Read', range: Range.prefix(keys.ledger) });
    await r.user('joiner').setPassword('changed-by-hand-0123456789');
    const fixed = await ensureDiscoveryAuth(conn, rbac);
    expect(fixed.changes).toEqual(['revoked read on /corekube/trust-it/ledger/* from role joiner', 'set the password of user joiner']);
    const token = await joinerToken();
    expect((await gateway('/v3/kv/range', { key: b64(keys.ledgerOf('a'.repeat(32))) }, token)).status).not.toBe(200);
    expect(await ensureDiscoveryAuth(conn, rbac)).toEqual({ changes: [], wasEnabled: true });
  });

  it('refuses to go on with a root password etcd does not take, and does not print it', async () => {
    const wrong = discoveryRbac(keys, { root: 'f0'.repeat(32), joiner: JOIN_TOKEN });
    const err = (await ensureDiscoveryAuth(conn, wrong).catch((e: unknown) => e)) as CorekubeError;
    expect(err).toBeInstanceOf(CorekubeError);
    expect(err).toMatchObject({ code: 'E_ETCD', retryable: false });
    expect(err.message).toMatch(/refuses the overlord's root password/);
    expect(findSecrets(`${err.message} ${err.hint}`, { values: ['f0'.repeat(32), passwords.root, JOIN_TOKEN] })).toEqual([]);
  });
});
