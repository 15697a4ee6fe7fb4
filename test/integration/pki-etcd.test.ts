import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertificateAuthority, type AdminPki, type DiscoveryPki, type IssuedPair, type MachinePki } from '../../overlord/trust/pki/authority.ts';
import { MemoryPkiStore } from '../../overlord/trust/pki/store.ts';
import { onExit } from '../harness/cleanup.ts';
import { freePort } from '../harness/ports.ts';
import { etcdMissing, missingParts } from '../harness/requirements.ts';
import { machine, manualClock, minion1, spec } from '../unit/pki/fixtures.ts';
import { killAll } from '../harness/processes.ts';

/**
 * The certificates in a real etcd (Debian's etcd 3.4): a 3-member cluster on 127.0.0.1 runs on the masters'
 * etcd server and peer certs with client-cert auth on both ports; the API server's and flanneld's client certs
 * work with etcdctl; a cert from the cluster or discovery CA is refused. Discovery's etcd runs on the
 * discovery server cert and accepts the overlord's root cert, not an etcd-CA client.
 */
const run = promisify(execFile);
const skip = missingParts(etcdMissing());

interface Member {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly log: string;
  proc?: ChildProcess;
}

const masters = [machine(1, 'master', '10.240.0.32'), machine(2, 'master', '10.240.0.33'), machine(3, 'master', '10.240.0.34')];

describe.skipIf(skip)('issued certificates in a real etcd with client-cert auth', () => {
  let dir: string;
  let unregister: () => void;
  const members: Member[] = [];
  let discoveryMember: Member;
  let pkis: MachinePki[];
  let minion: MachinePki;
  let admin: AdminPki;
  let discovery: DiscoveryPki;
  const files = new Map<string, string>();

  /** writes a PEM once, returns its path */
  const fileOf = async (name: string, pem: string) => {
    const p = path.join(dir, 'tls', name);
    if (!files.has(p)) {
      await writeFile(p, pem, { mode: 0o600 });
      files.set(p, pem);
    }
    return p;
  };
  const client = async (name: string, ca: string, pair: IssuedPair) => ({
    cacert: await fileOf(`${name}-ca.crt`, ca),
    cert: await fileOf(`${name}.crt`, pair.cert),
    key: await fileOf(`${name}.key`, pair.key),
  });

  /** etcdctl with a client's credentials; a refused TLS handshake shows as a timeout, so `timeout` stays short */
  const etcdctl = async (endpoints: string[], creds: { cacert: string; cert: string; key: string }, ...args: string[]) => {
    try {
      const { stdout, stderr } = await run('etcdctl', ['--endpoints', endpoints.join(','), '--cacert', creds.cacert, '--cert', creds.cert, '--key', creds.key,
        '--dial-timeout', '1s', '--command-timeout', '1s', ...args]);
      return { ok: true, out: stdout + stderr };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  };

  const start = (m: Member, args: string[]) => {
    const fd = openSync(m.log, 'a');
    m.proc = spawn('etcd', ['--name', m.name, '--data-dir', path.join(dir, m.name), '--log-level', 'warn', '--logger', 'zap', ...args], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
  };

  const waitHealthy = async (m: Member, creds: { cacert: string; cert: string; key: string }) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (m.proc?.exitCode !== null) throw new Error(`${m.name} exited:\n${await readFile(m.log, 'utf8')}`);
      if ((await etcdctl([m.clientUrl], creds, 'endpoint', 'health')).ok) return;
      if (Date.now() > deadline) throw new Error(`${m.name} not healthy:\n${await readFile(m.log, 'utf8')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-pki-etcd-'));
    unregister = onExit(`pki etcd ${dir}`, () => {
      for (const m of [...members, discoveryMember]) if (m?.proc?.pid && m.proc.exitCode === null) m.proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    });
    await mkdir(path.join(dir, 'tls'), { mode: 0o700 });

    const ca = new CertificateAuthority({ store: new MemoryPkiStore(), clock: manualClock(Date.now()), cluster: 'demo' });
    pkis = [];
    for (const m of masters) pkis.push(await ca.issueFor(spec, m));
    minion = await ca.issueFor(spec, minion1);
    admin = await ca.ensureAdmin();
    discovery = await ca.ensureDiscovery(spec);

    const used: number[] = [];
    const port = async () => {
      const p = await freePort(['127.0.0.1'], used);
      used.push(p);
      return p;
    };
    for (let i = 0; i < masters.length; i++) {
      members.push({ name: `member${i}`, clientUrl: `https://127.0.0.1:${await port()}`, peerUrl: `https://127.0.0.1:${await port()}`, log: path.join(dir, `member${i}.log`) });
    }
    const etcdCa = await fileOf('etcd-ca.crt', pkis[0]!.etcdCa);
    const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
    for (const [i, m] of members.entries()) {
      const p = pkis[i]!.pairs;
      start(m, [
        '--listen-client-urls', m.clientUrl, '--advertise-client-urls', m.clientUrl,
        '--listen-peer-urls', m.peerUrl, '--initial-advertise-peer-urls', m.peerUrl,
        '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', 'corekube-demo',
        '--cert-file', await fileOf(`${m.name}-server.crt`, p.etcdServer!.cert), '--key-file', await fileOf(`${m.name}-server.key`, p.etcdServer!.key),
        '--client-cert-auth', '--trusted-ca-file', etcdCa,
        '--peer-cert-file', await fileOf(`${m.name}-peer.crt`, p.etcdPeer!.cert), '--peer-key-file', await fileOf(`${m.name}-peer.key`, p.etcdPeer!.key),
        '--peer-client-cert-auth', '--peer-trusted-ca-file', etcdCa,
      ]);
    }
    discoveryMember = { name: 'discovery', clientUrl: `https://127.0.0.1:${await port()}`, peerUrl: `http://127.0.0.1:${await port()}`, log: path.join(dir, 'discovery.log') };
    start(discoveryMember, [
      '--listen-client-urls', discoveryMember.clientUrl, '--advertise-client-urls', discoveryMember.clientUrl,
      '--listen-peer-urls', discoveryMember.peerUrl, '--initial-advertise-peer-urls', discoveryMember.peerUrl,
      '--initial-cluster', `discovery=${discoveryMember.peerUrl}`, '--initial-cluster-state', 'new',
      '--cert-file', await fileOf('discovery-server.crt', discovery.server.cert), '--key-file', await fileOf('discovery-server.key', discovery.server.key),
      '--client-cert-auth', '--trusted-ca-file', await fileOf('discovery-ca.crt', discovery.ca),
    ]);

    const apiserver = await client('apiserver-etcd-client', pkis[0]!.etcdCa, pkis[0]!.pairs.apiServerEtcdClient!);
    await Promise.all(members.map((m) => waitHealthy(m, apiserver)));
    await waitHealthy(discoveryMember, await client('overlord-root', discovery.ca, discovery.overlordClient));
  });

  afterAll(async () => {
    await killAll([...members, discoveryMember].map((m) => m?.proc));
    await rm(dir, { recursive: true, force: true });
    unregister();
  });

  it("forms a 3-member cluster over TLS peer links with the masters' peer certs", async () => {
    const creds = await client('apiserver-etcd-client', pkis[0]!.etcdCa, pkis[0]!.pairs.apiServerEtcdClient!);
    const list = await etcdctl([members[0]!.clientUrl], creds, 'member', 'list');
    expect(list.ok).toBe(true);
    expect(list.out.trim().split('\n')).toHaveLength(3);
    for (const m of members) expect(list.out).toContain(m.peerUrl);
  });

  it("lets every master's API server client in", async () => {
    const endpoints = members.map((m) => m.clientUrl);
    for (const [i, pki] of pkis.entries()) {
      const health = await etcdctl(endpoints, await client(`apiserver-${i}`, pki.etcdCa, pki.pairs.apiServerEtcdClient!), 'endpoint', 'health');
      expect(health).toMatchObject({ ok: true });
      expect(health.out.match(/is healthy/g)).toHaveLength(3);
    }
  });

  it('refuses clients of the cluster CA and of the discovery CA', async () => {
    const endpoint = [members[1]!.clientUrl];
    const adminCreds = await client('admin-as-etcd', pkis[0]!.etcdCa, admin.client);
    const rootCreds = await client('discovery-root-as-etcd', pkis[0]!.etcdCa, discovery.overlordClient);
    for (const creds of [adminCreds, rootCreds]) {
      const r = await etcdctl(endpoint, creds, 'endpoint', 'health');
      expect(r.ok).toBe(false);
      expect(r.out).toMatch(/unhealthy|deadline exceeded|bad certificate/);
    }
    expect(await readFile(members[1]!.log, 'utf8')).toMatch(/certificate signed by unknown authority/);
  });

  it("serves discovery on its server cert, for the overlord's root client only", async () => {
    const root = await client('overlord-root', discovery.ca, discovery.overlordClient);
    const health = await etcdctl([discoveryMember.clientUrl], root, 'endpoint', 'health');
    expect(health).toMatchObject({ ok: true, out: expect.stringMatching(/is healthy/) });
    const etcdClient = await client('apiserver-at-discovery', discovery.ca, pkis[0]!.pairs.apiServerEtcdClient!);
    expect((await etcdctl([discoveryMember.clientUrl], etcdClient, 'endpoint', 'health')).ok).toBe(false);
    // and the discovery server is not trusted by a client that only knows the etcd CA
    const wrongTrust = { ...(await client('root-trusting-etcd-ca', pkis[0]!.etcdCa, discovery.overlordClient)) };
    expect((await etcdctl([discoveryMember.clientUrl], wrongTrust, 'endpoint', 'health')).ok).toBe(false);
  });
});
