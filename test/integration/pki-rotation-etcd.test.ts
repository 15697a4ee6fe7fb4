import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertificateAuthority, type MachinePki } from '../../overlord/trust/pki/authority.ts';
import { MemoryPkiStore } from '../../overlord/trust/pki/store.ts';
import { onExit } from '../harness/cleanup.ts';
import { freePort } from '../harness/ports.ts';
import { etcdMissing, missingParts } from '../harness/requirements.ts';
import { machine, manualClock, spec } from '../unit/pki/fixtures.ts';
import { killAll } from '../harness/processes.ts';

/**
 * The etcd CA rotated under a real 3-member etcd (Go's TLS, client-cert auth on the client and peer ports), the way
 * the overlord rolls it out: phase by phase, one master at a time, each member restarted on its master's files of
 * the new phase while the others still run on the previous phase's. After every restart the restarted member
 * serves a write through its peers (raft over the peer links) and every member answers a client of either phase —
 * the cluster never loses its quorum nor any member its peers.
 */
const run = promisify(execFile);
const skip = missingParts(etcdMissing());

type Phase = 'before' | 'trust' | 'sign' | 'finish';
interface Member {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly log: string;
  proc?: ChildProcess;
}
interface Creds {
  readonly cacert: string;
  readonly cert: string;
  readonly key: string;
}

const masters = [machine(1, 'master', '10.240.0.32'), machine(2, 'master', '10.240.0.33'), machine(3, 'master', '10.240.0.34')];

describe.skipIf(skip)('rotating the etcd CA under a running etcd cluster', () => {
  let dir: string;
  let unregister: () => void;
  const members: Member[] = [];
  const pki = new Map<Phase, MachinePki[]>();
  let initialCluster: string;

  const write = async (name: string, pem: string) => {
    const p = path.join(dir, 'tls', name);
    await writeFile(p, pem, { mode: 0o600 });
    return p;
  };
  /** the API server's etcd client of master `i` at `phase`, as its files say */
  const apiServerOf = async (i: number, phase: Phase): Promise<Creds> => {
    const m = pki.get(phase)![i]!;
    return { cacert: await write(`${phase}-m${i}-ca.crt`, m.etcdCa), cert: await write(`${phase}-m${i}-client.crt`, m.pairs.apiServerEtcdClient!.cert), key: await write(`${phase}-m${i}-client.key`, m.pairs.apiServerEtcdClient!.key) };
  };
  const etcdctl = async (endpoints: string[], creds: Creds, ...args: string[]) => {
    try {
      const { stdout, stderr } = await run('etcdctl', ['--endpoints', endpoints.join(','), '--cacert', creds.cacert, '--cert', creds.cert, '--key', creds.key, '--dial-timeout', '2s', '--command-timeout', '3s', ...args]);
      return { ok: true, out: stdout + stderr };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  };

  /** (re)starts member i on its master's files of `phase` */
  const start = async (i: number, phase: Phase) => {
    const m = members[i]!;
    const p = pki.get(phase)![i]!;
    const ca = await write(`${phase}-member${i}-etcd-ca.crt`, p.etcdCa);
    const fd = openSync(m.log, 'a');
    m.proc = spawn('etcd', [
      '--name', m.name, '--data-dir', path.join(dir, m.name), '--log-level', 'warn', '--logger', 'zap',
      '--listen-client-urls', m.clientUrl, '--advertise-client-urls', m.clientUrl,
      '--listen-peer-urls', m.peerUrl, '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', 'corekube-rotation',
      '--cert-file', await write(`${phase}-member${i}-server.crt`, p.pairs.etcdServer!.cert), '--key-file', await write(`${phase}-member${i}-server.key`, p.pairs.etcdServer!.key),
      '--client-cert-auth', '--trusted-ca-file', ca,
      '--peer-cert-file', await write(`${phase}-member${i}-peer.crt`, p.pairs.etcdPeer!.cert), '--peer-key-file', await write(`${phase}-member${i}-peer.key`, p.pairs.etcdPeer!.key),
      '--peer-client-cert-auth', '--peer-trusted-ca-file', ca,
    ], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
  };
  const stop = async (i: number) => {
    const proc = members[i]!.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  };
  /** until a write through member i is committed (it reaches a quorum over its peer links) */
  const waitServing = async (i: number, creds: Creds, key: string) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const m = members[i]!;
      if (m.proc?.exitCode !== null) throw new Error(`${m.name} exited:\n${await readFile(m.log, 'utf8')}`);
      const put = await etcdctl([m.clientUrl], creds, 'put', key, 'v');
      if (put.ok) return;
      if (Date.now() > deadline) throw new Error(`${m.name} does not serve writes: ${put.out}\n${await readFile(m.log, 'utf8')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-rotation-etcd-'));
    unregister = onExit(`rotation etcd ${dir}`, () => {
      for (const m of members) if (m.proc?.pid && m.proc.exitCode === null) m.proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    });
    await mkdir(path.join(dir, 'tls'), { mode: 0o700 });
    const ca = new CertificateAuthority({ store: new MemoryPkiStore(), clock: manualClock(Date.now()), cluster: 'demo' });
    const issue = async () => Promise.all(masters.map((m) => ca.issueFor(spec, m)));
    pki.set('before', await issue());
    for (const phase of ['trust', 'sign', 'finish'] as const) {
      await ca.rotate('etcd', phase);
      pki.set(phase, await issue());
    }
    const used: number[] = [];
    const port = async () => {
      const p = await freePort(['127.0.0.1'], used);
      used.push(p);
      return p;
    };
    for (let i = 0; i < masters.length; i++) members.push({ name: `member${i}`, clientUrl: `https://127.0.0.1:${await port()}`, peerUrl: `https://127.0.0.1:${await port()}`, log: path.join(dir, `member${i}.log`) });
    initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
    for (let i = 0; i < members.length; i++) await start(i, 'before');
    for (let i = 0; i < members.length; i++) await waitServing(i, await apiServerOf(i, 'before'), `/before/${i}`);
  }, 60_000);

  afterAll(async () => {
    await killAll(members.map((m) => m.proc));
    await rm(dir, { recursive: true, force: true });
    unregister();
  });

  it('keeps every member serving, to clients of either phase, while each phase rolls out one master at a time', async () => {
    const endpoints = members.map((m) => m.clientUrl);
    let previous: Phase = 'before';
    for (const phase of ['trust', 'sign', 'finish'] as const) {
      for (let i = 0; i < members.length; i++) {
        await stop(i);
        await start(i, phase);
        // the restarted member commits a write with its peers, the others still on the previous phase's files
        await waitServing(i, await apiServerOf(i, phase), `/${phase}/${i}`);
        // every member answers an API server of either phase (master i's on the new files, another's on the old)
        for (const creds of [await apiServerOf(i, phase), await apiServerOf((i + 1) % 3, i === 2 ? phase : previous)]) {
          const health = await etcdctl(endpoints, creds, 'endpoint', 'health');
          expect(health.out.match(/is healthy/g), `${phase}, member ${i} restarted: ${health.out}`).toHaveLength(3);
        }
      }
      previous = phase;
    }
    const count = await etcdctl(endpoints, await apiServerOf(0, 'finish'), 'get', '/', '--prefix', '--count-only', '--write-out', 'fields');
    expect(count.out).toMatch(/"Count" : 12/);
    // after finish, an API server client still on the old CA's certificate is refused
    const stale = await etcdctl([members[0]!.clientUrl], { ...(await apiServerOf(0, 'finish')), cert: (await apiServerOf(0, 'before')).cert, key: (await apiServerOf(0, 'before')).key }, 'endpoint', 'health');
    expect(stale.ok).toBe(false);
  }, 240_000);
});
