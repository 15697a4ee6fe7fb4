/**
 * The rendered corekube-announce script against a real etcd (the pinned one, scripts/setup) set up the way discovery
 * is: https on the client port (certificates made with openssl here), auth enabled, a `root` user, and the
 * `joiner` user whose password is the join token with readwrite on the cluster's join/ prefix only: the
 * machine holds no credentials of its own yet, so its record is a join request (overlord/discovery/admission.ts).
 * The script runs on this host with its file paths and discovery address overridden through the
 * environment; 127.0.0.1 plays the discovery IP. Short TTLs keep the test quick.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, closeSync, openSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootPlan } from '../../cloud-config/index.ts';
import { CONFIG_FILES } from '../../cloud-config/machine-paths.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import { parseMachineRecord } from '../../contracts/machine-record.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { announceEnv } from '../harness/announce-env.ts';
import { onExit } from '../harness/cleanup.ts';
import { freePort } from '../harness/ports.ts';
import { missingParts } from '../harness/requirements.ts';
import { until } from '../../localcloud/until.ts';

const run = promisify(execFile);
const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const skip = missingParts(...['etcd', 'etcdctl', 'openssl', 'curl', 'ip', 'bash'].filter((b) => !has(b)).map((b) => `${b} is not installed`));

const CLUSTER = 'announce-it';
const JOIN_TOKEN = randomBytes(24).toString('hex');
const ROOT_PASSWORD = randomBytes(24).toString('hex');
const LEASE_TTL = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip)('corekube-announce against a real etcd with TLS and auth', () => {
  let dir = '';
  let etcd: ChildProcess | undefined;
  let clientPort = 0;
  let client: Etcd3 | undefined;
  let script = '';
  const scripts = new Set<ChildProcess>();
  const keys = clusterKeys(CLUSTER);

  const killGroup = (p: ChildProcess) => {
    if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) {
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
  const teardown = () => {
    for (const p of scripts) killGroup(p);
    if (etcd?.pid !== undefined && etcd.exitCode === null) etcd.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  };
  let unregister = () => {};

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-announce-'));
    unregister = onExit('announce test', teardown);
    const tls = path.join(dir, 'tls');
    await mkdir(tls, { mode: 0o700 });
    const f = (n: string) => path.join(tls, n);
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '1', '-subj', '/CN=announce-test-discovery-ca']);
    await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=discovery']);
    await writeFile(f('server.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
    await run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-out', f('server.crt'), '-days', '1', '-extfile', f('server.ext')]);
    const ca = await readFile(f('ca.crt'));

    // discovery's flags: TLS server, no client certificates (nodes hold none), auth by etcd users
    clientPort = await freePort();
    const peerPort = await freePort(['127.0.0.1'], [clientPort]);
    const log = openSync(path.join(dir, 'etcd.log'), 'a');
    etcd = spawn('etcd', [
      '--name', 'discovery', '--data-dir', path.join(dir, 'data'),
      '--listen-client-urls', `https://127.0.0.1:${clientPort}`, '--advertise-client-urls', `https://127.0.0.1:${clientPort}`,
      '--listen-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-cluster', `discovery=http://127.0.0.1:${peerPort}`, '--initial-cluster-state', 'new',
      '--cert-file', f('server.crt'), '--key-file', f('server.key'), '--log-level', 'warn', '--logger', 'zap',
    ], { stdio: ['ignore', log, log] });
    closeSync(log);
    await waitHealthy(clientPort, ca, etcd);

    const etcdctl = (...args: string[]) =>
      run('etcdctl', [`--endpoints=https://127.0.0.1:${clientPort}`, `--cacert=${f('ca.crt')}`, '--dial-timeout=5s', '--command-timeout=10s', ...args], { timeout: 30_000 });
    await etcdctl('user', 'add', 'root', `--new-user-password=${ROOT_PASSWORD}`);
    await etcdctl('role', 'add', 'joiner');
    await etcdctl('role', 'grant-permission', 'joiner', 'readwrite', keys.join, '--prefix=true');
    await etcdctl('user', 'add', 'joiner', `--new-user-password=${JOIN_TOKEN}`);
    await etcdctl('user', 'grant-role', 'joiner', 'joiner');
    await etcdctl('auth', 'enable');
    client = new Etcd3({ hosts: `https://127.0.0.1:${clientPort}`, credentials: { rootCertificate: ca }, auth: { username: 'root', password: ROOT_PASSWORD } });

    // the machine: config dir as cloud-config writes it, identity files, and the rendered script
    const config = path.join(dir, 'etc-corekube');
    await mkdir(path.join(config, path.dirname(CONFIG_FILES.discoveryCa)), { recursive: true });
    await mkdir(path.join(config, path.dirname(CONFIG_FILES.joinToken)), { recursive: true });
    await writeFile(path.join(config, CONFIG_FILES.discoveryCa), ca);
    await writeFile(path.join(config, CONFIG_FILES.joinToken), `${JOIN_TOKEN}\n`, { mode: 0o600 });
    const spec = parseClusterSpec({ flags: { name: CLUSTER } });
    script = path.join(dir, 'corekube-announce');
    await writeFile(script, bootPlan('minion', spec).files.find((x) => x.path.endsWith('/corekube-announce'))!.content);
    chmodSync(script, 0o755);
  });

  afterAll(async () => {
    client?.close();
    teardown();
    unregister();
  });

  /** A machine: its own id files, then the script running in its own process group (like a unit's cgroup). */
  async function startMachine(opts: { token?: string; leaseTtl?: number; requestTimeout?: number; noHostKey?: boolean } = {}) {
    const id = randomBytes(16).toString('hex');
    const m = path.join(dir, `machine-${id}`);
    await mkdir(m);
    const bootId = randomUUID();
    await writeFile(path.join(m, 'machine-id'), `${id}\n`);
    await writeFile(path.join(m, 'boot_id'), `${bootId}\n`);
    await writeFile(path.join(m, 'hostname'), 'minion-7\n');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'root@minion-7', '-f', path.join(m, 'host_key')]).catch(async () => {
      await writeFile(path.join(m, 'host_key.pub'), 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeHostKeyForTestsOnly0000000000000000000000 root@minion-7\n');
    });
    const hostKey = (await readFile(path.join(m, 'host_key.pub'), 'utf8')).split(' ').slice(0, 2).join(' ');
    if (opts.noHostKey) await rm(path.join(m, 'host_key.pub'));
    let config = path.join(dir, 'etc-corekube');
    if (opts.token !== undefined) {
      config = path.join(m, 'etc-corekube');
      await mkdir(path.join(config, 'secrets'), { recursive: true });
      await mkdir(path.join(config, 'pki'), { recursive: true });
      await writeFile(path.join(config, CONFIG_FILES.discoveryCa), await readFile(path.join(dir, 'tls', 'ca.crt')));
      await writeFile(path.join(config, CONFIG_FILES.joinToken), `${opts.token}\n`, { mode: 0o600 });
    }
    const proc = spawn('bash', [script], {
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: announceEnv(m, config, clientPort, { COREKUBE_LEASE_TTL: String(opts.leaseTtl ?? LEASE_TTL), COREKUBE_REQUEST_TIMEOUT: String(opts.requestTimeout ?? 10) }),
    });
    scripts.add(proc);
    let stderr = '';
    proc.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    return { id, bootId, hostKey, proc, exited, stderr: () => stderr, key: keys.joinOf(id), nonceFile: path.join(m, 'run', 'join-nonce') };
  }

  async function read(key: string) {
    const res = await client!.get(key).exec();
    const kv = res.kvs[0];
    return kv ? { value: kv.value.toString(), lease: kv.lease.toString() } : undefined;
  }


  it('puts the machine record under a lease, keeps it alive, and the record expires once the machine dies', async () => {
    const m = await startMachine();
    const first = await until('the record', 15_000, () => read(m.key));
    const parsed = parseMachineRecord(m.id, first.value);
    expect(parsed).toMatchObject({ ok: true, record: { schema: 1, id: m.id, role: 'minion', ip: '127.0.0.1', hostname: 'minion-7', bootId: m.bootId, sshHostKey: m.hostKey } });
    expect(first.lease).not.toBe('0');
    // the request commits to this boot's join nonce: kept root-only beside the script's state, only its digest sent
    const nonce = (await readFile(m.nonceFile, 'utf8')).trim();
    expect(nonce).toMatch(/^[0-9a-f]{64}$/);
    expect(((await stat(m.nonceFile)).mode & 0o777).toString(8)).toBe('600');
    expect(parsed.ok && parsed.record.nonceDigest).toBe(createHash('sha256').update(nonce).digest('hex'));
    expect(first.value).not.toContain(nonce);

    // well past the TTL, the record is still there under the same lease: the keepalives work
    await sleep((LEASE_TTL + 2) * 1000);
    expect(await read(m.key)).toEqual(first);

    // the machine dies (no chance to revoke): the lease expires and takes the record with it
    process.kill(-m.proc.pid!, 'SIGKILL');
    const killedAt = Date.now();
    await until('the record to expire', (LEASE_TTL + 5) * 1000, async () => ((await read(m.key)) === undefined ? true : undefined));
    expect(Date.now() - killedAt).toBeGreaterThan(500);
    expect(m.stderr()).not.toContain(JOIN_TOKEN);
    expect(m.stderr()).not.toContain(nonce);
  });

  it('does not ask to join without the machine\'s SSH host key: exits non-zero and writes nothing', async () => {
    const m = await startMachine({ noHostKey: true });
    expect(await m.exited).toBe(1);
    expect(await read(m.key)).toBeUndefined();
    expect(m.stderr()).toMatch(/a join request carries it/);
  });

  it('revokes its lease on SIGTERM (a clean shutdown), so the record goes at once', async () => {
    const m = await startMachine();
    await until('the record', 15_000, () => read(m.key));
    process.kill(m.proc.pid!, 'SIGTERM');
    expect(await m.exited).toBe(0);
    expect(await read(m.key)).toBeUndefined();
    expect(m.stderr()).toContain('revoked lease');
  });

  it('rides out discovery pausing for less than the lease TTL, keeping its record and lease', async () => {
    const m = await startMachine({ leaseTtl: 8, requestTimeout: 1 });
    const before = await until('the record', 15_000, () => read(m.key));
    etcd!.kill('SIGSTOP');
    try {
      await until('a failed renewal', 10_000, async () => (m.stderr().includes('could not renew') ? true : undefined));
    } finally {
      etcd!.kill('SIGCONT');
    }
    await sleep(2500);
    expect(await read(m.key)).toEqual(before);
    expect(m.proc.exitCode).toBeNull();
    process.kill(-m.proc.pid!, 'SIGKILL');
  });

  it('exits non-zero and writes nothing when discovery refuses its join token', async () => {
    const m = await startMachine({ token: 'WrongTokenWrongToken0123456789' });
    expect(await m.exited).toBe(1);
    expect(await read(m.key)).toBeUndefined();
    expect(m.stderr()).toMatch(/cannot authenticate to discovery/);
    expect(m.stderr()).not.toContain('WrongTokenWrongToken0123456789');
  });
});

async function waitHealthy(port: number, ca: Buffer, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`etcd exited with ${proc.exitCode}`);
    const body = await new Promise<string>((resolve) => {
      const req = https.request({ host: '127.0.0.1', port, path: '/health', ca, timeout: 1000 }, (res) => {
        let t = '';
        res.on('data', (c: Buffer) => (t += c.toString()));
        res.on('end', () => resolve(t));
      });
      req.on('error', () => resolve(''));
      req.on('timeout', () => req.destroy());
      req.end();
    });
    if (/"health":\s*"true"/.test(body)) return;
    if (Date.now() > deadline) throw new Error('etcd did not become healthy within 15 s');
    await sleep(50);
  }
}
