/**
 * The ubuntu profile's user_data booted for real: systemd-nspawn machines with a real systemd and cloud-init
 * (NoCloud seed, test/harness/machines.ts), a discovery and a minion on a harness bridge. The test plays
 * the overlord and Heat around them: it fills the placeholders, serves etcd from a local release mirror,
 * records the Heat signal, installs discovery's TLS files, creates the etcd users, and then asserts what the
 * machines did — the overlord can log in and sudo, discovery's etcd starts only once its certificate is
 * there and then signals, the minion's record appears in discovery, and it goes when the minion powers off.
 *
 * Net: 10.200.<k>.0/24 with k = 46 (+ $COREKUBE_TEST_NET_OFFSET); discovery's address-plan IP (.10) is added to the
 * discovery machine (the harness numbers machines from .101).
 */
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fillPlaceholders, renderUserData } from '../../cloud-config/index.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import { parseMachineRecord } from '../../contracts/machine-record.ts';
import { addressPlan } from '../../clusterspec/address-plan.ts';
import { parseClusterSpec, type ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { etcdReleaseMirror } from '../harness/etcd-release.ts';
import { onExit } from '../harness/cleanup.ts';
import { bootMachines, machinesMissing, netFromEnv, type Fleet, type Machine } from '../harness/machines.ts';
import { startMirror, type MirrorServer } from '../harness/mirror.ts';
import { missingParts } from '../harness/requirements.ts';
import { until } from '../../localcloud/until.ts';

const run = promisify(execFile);
const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const skip = missingParts(machinesMissing(), ...['etcd', 'etcdctl', 'openssl', 'ssh', 'ssh-keygen', 'tar'].filter((b) => !has(b)).map((b) => `${b} is not installed`));

const NET = netFromEnv(46);
const ETCD_VERSION = parseClusterSpec({}).versions.etcd;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


interface Signal {
  path: string;
  token: string | undefined;
  body: string;
}

describe.skipIf(skip)('ubuntu user_data booted by cloud-init on real systemd machines', () => {
  let dir = '';
  let fleet: Fleet | undefined;
  let mirror: MirrorServer | undefined;
  let heat: http.Server | undefined;
  let client: Etcd3 | undefined;
  let spec: ClusterSpec;
  let discovery: Machine;
  let minion: Machine;
  let discoveryIp = '';
  const signals: Signal[] = [];
  const joinToken = randomBytes(24).toString('hex');
  const readyToken = randomBytes(16).toString('hex');
  const rootPassword = randomBytes(16).toString('hex');
  let overlordKey = '';
  const f = (n: string) => path.join(dir, n);
  let unregister = () => {};

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-ccboot-'));
    unregister = onExit('cloud-config boot test dir', () => spawnSync('rm', ['-rf', dir]));

    // the overlord's key pair and the discovery CA + server certificate, as the overlord would make them
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'overlord@boot', '-f', f('overlord')]);
    overlordKey = (await readFile(f('overlord.pub'), 'utf8')).trim();
    fleet = await bootMachines([], { net: NET });
    const gateway = fleet.gateway;

    // the release mirror: the pinned etcd's release tarball, built from its Go module (release/), its digest
    // pinned in the spec as a mirror's manifest pins it
    const tree = f('mirror');
    const etcd = await etcdReleaseMirror(tree, parseClusterSpec({}).versions);
    mirror = await startMirror({ root: tree, listenOn: [gateway] });

    spec = parseClusterSpec({
      flags: {
        name: 'boot', os: 'ubuntu', 'private-cidr': `10.200.${NET}.0/24`,
        'release-base-url': mirror.urlOn(gateway), 'release-digests': etcd.digests,
      },
    });
    discoveryIp = addressPlan(spec).discovery;

    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', f('ca.key'), '-out', f('ca.crt'), '-days', '1', '-subj', '/CN=boot-test-discovery-ca']);
    await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=discovery']);
    await writeFile(f('server.ext'), `subjectAltName=IP:${discoveryIp}\nextendedKeyUsage=serverAuth\n`);
    await run('openssl', ['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-out', f('server.crt'), '-days', '1', '-extfile', f('server.ext')]);

    // Heat's wait-condition handle: records each signal
    heat = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        signals.push({ path: req.url ?? '', token: req.headers['x-auth-token'] as string | undefined, body });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => heat!.listen(0, gateway, resolve));
    const heatPort = (heat.address() as { port: number }).port;

    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const ca = await readFile(f('ca.crt'), 'utf8');
    const seed = (hostname: string, userData: string) => ({ hostname, cloudInit: { userData, metaData: `instance-id: iid-${hostname}\nlocal-hostname: ${hostname}\n` } });
    [discovery, minion] = (await fleet.add([
      seed('boot-discovery', fillPlaceholders(renderUserData('discovery', spec), {
        overlordSshKey: b64(overlordKey),
        readyUrl: `http://${gateway}:${heatPort}/v1/signal/discovery_ready_handle`,
        readyToken,
      })),
      seed('boot-minion', fillPlaceholders(renderUserData('minion', spec), { joinToken, overlordSshKey: b64(overlordKey), discoveryCa: b64(ca) })),
    ])) as [Machine, Machine];
  });

  afterAll(async () => {
    client?.close();
    await new Promise((r) => (heat ? heat.close(r) : r(undefined)));
    await mirror?.close();
    await fleet?.teardown();
    await rm(dir, { recursive: true, force: true });
    unregister();
  });

  const out = async (m: Machine, argv: string[]) => (await m.exec(argv)).stdout.trim();
  const ssh = (m: Machine, command: string) =>
    run('ssh', ['-i', f('overlord'), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
      '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=10', `corekube@${m.ip}`, command], { timeout: 30_000 });

  it('runs cloud-init to the end without an error on both machines', async () => {
    for (const m of [discovery, minion]) {
      const r = await m.exec(['cloud-init', 'status', '--wait']);
      expect({ host: m.hostname, code: r.code, out: r.stdout.trim() }).toEqual({ host: m.hostname, code: 0, out: expect.stringContaining('status: done') });
    }
  });

  it('lets the overlord log in as corekube with its key and run sudo -n', async () => {
    for (const m of [discovery, minion]) {
      expect((await ssh(m, 'sudo -n id -u')).stdout.trim()).toBe('0');
      expect(await out(m, ['stat', '-c', '%U %a', '/home/corekube/.ssh/authorized_keys'])).toBe('corekube 600');
      expect(await out(m, ['cat', '/home/corekube/.ssh/authorized_keys'])).toBe(overlordKey);
    }
  });

  it('writes the secrets root-only and decodes the CA', async () => {
    expect(await out(minion, ['stat', '-c', '%U %a', '/etc/corekube/secrets/join-token'])).toBe('root 600');
    expect(await out(minion, ['cat', '/etc/corekube/secrets/join-token'])).toBe(joinToken);
    expect(await out(minion, ['cat', '/etc/corekube/pki/discovery-ca.crt'])).toBe((await readFile(f('ca.crt'), 'utf8')).trim());
    expect(await out(discovery, ['stat', '-c', '%U %a', '/etc/corekube/heat/ready.header'])).toBe('root 600');
  });

  it("keeps discovery's etcd down until the overlord installs its certificate, then starts it and signals discovery_ready", async () => {
    expect(await out(discovery, ['systemctl', 'is-active', 'discovery-etcd.path'])).toBe('active');
    expect(await out(discovery, ['systemctl', 'is-active', 'discovery-etcd.service'])).toBe('inactive');
    expect(await out(discovery, ['systemctl', 'is-active', 'corekube-discovery-ready.service'])).toBe('active');
    expect(signals).toEqual([]);

    // what the overlord does: the address is the Neutron port's in a cloud; the files come over SSH + sudo
    expect((await discovery.exec(['ip', 'addr', 'add', `${discoveryIp}/24`, 'dev', 'host0'])).code).toBe(0);
    expect((await discovery.exec(['install', '-d', '-m', '0755', '/etc/corekube/pki/discovery'])).code).toBe(0);
    for (const [file, mode] of [['ca.crt', '0644'], ['server.crt', '0644'], ['server.key', '0600']] as const) {
      const target = `/etc/corekube/pki/discovery/${file}`;
      const tmp = `/etc/corekube/pki/discovery/.${file}.tmp`;
      for (const argv of [['tee', tmp], ['chmod', mode, tmp], ['mv', tmp, target]]) {
        const r = await discovery.exec(argv, argv[0] === 'tee' ? { stdin: await readFile(f(file), 'utf8') } : {});
        expect(r, argv.join(' ')).toMatchObject({ code: 0 });
      }
    }
    await until('discovery-etcd.service to be active', 60_000, async () => ((await out(discovery, ['systemctl', 'is-active', 'discovery-etcd.service'])) === 'active' ? true : undefined));
    // the tarball only: its digest came with the user_data, never from the mirror
    expect(mirror!.requests.filter((r) => r.from === discovery.ip).map((r) => `${r.status} ${r.path}`)).toEqual([`200 /etcd/${ETCD_VERSION}/etcd-${ETCD_VERSION}-linux-amd64.tar.gz`]);

    const signal = await until('the discovery_ready signal', 30_000, async () => signals[0]);
    expect(signal.path).toBe('/v1/signal/discovery_ready_handle');
    expect(signal.token).toBe(readyToken);
    expect(JSON.parse(signal.body)).toEqual({ status: 'SUCCESS', reason: 'discovery etcd is serving', id: 'discovery', data: `https://${discoveryIp}:2379` });
  });

  it('asks to join in discovery once the overlord has made the joiner user; stopping the unit removes the request', async () => {
    const etcdctl = (...args: string[]) =>
      run('etcdctl', [`--endpoints=https://${discoveryIp}:2379`, `--cacert=${f('ca.crt')}`, '--dial-timeout=5s', '--command-timeout=10s', ...args], { timeout: 30_000 });
    const join = clusterKeys(spec.name).join;
    await etcdctl('user', 'add', 'root', `--new-user-password=${rootPassword}`);
    await etcdctl('role', 'add', 'joiner');
    await etcdctl('role', 'grant-permission', 'joiner', 'readwrite', join, '--prefix=true');
    await etcdctl('user', 'add', 'joiner', `--new-user-password=${joinToken}`);
    await etcdctl('user', 'grant-role', 'joiner', 'joiner');
    await etcdctl('auth', 'enable');
    client = new Etcd3({ hosts: `https://${discoveryIp}:2379`, credentials: { rootCertificate: await readFile(f('ca.crt')) }, auth: { username: 'root', password: rootPassword } });

    // until now discovery refused the minion (no etcd, then no joiner): skip the backoff it has built up
    await minion.exec(['rm', '-f', '/run/corekube/announce/announce.failures']);
    await minion.exec(['systemctl', 'restart', 'corekube-announce.service']);
    // with the join token only, its record is a join request (the admission is tested in discovery-trust-boot)
    const key = clusterKeys(spec.name).joinOf(minion.id);
    const kv = await until('the minion record', 30_000, async () => (await client!.get(key).exec()).kvs[0]);
    const bootId = await out(minion, ['cat', '/proc/sys/kernel/random/boot_id']);
    expect(parseMachineRecord(minion.id, kv.value.toString())).toMatchObject({
      ok: true,
      record: { id: minion.id, role: 'minion', ip: minion.ip, hostname: 'boot-minion', bootId, sshHostKey: minion.hostKey },
    });
    expect(kv.lease.toString()).not.toBe('0');

    // stopping the unit (as a shutdown does) revokes its lease: the record goes long before the 60 s TTL
    expect((await minion.exec(['systemctl', 'stop', 'corekube-announce.service'])).code).toBe(0);
    let journal = '';
    await until('the record to go', 25_000, async () => {
      journal = await out(minion, ['journalctl', '-u', 'corekube-announce', '--no-pager', '-o', 'short-precise', '-n', '40']);
      return (await client!.get(key).exec()).kvs.length === 0 ? true : undefined;
    }, () => journal);
    expect(await out(minion, ['journalctl', '-u', 'corekube-announce', '--no-pager', '-o', 'cat'])).toMatch(/revoked lease \d+: the record is gone/);

    // started again, it announces again under a new lease
    expect((await minion.exec(['systemctl', 'start', 'corekube-announce.service'])).code).toBe(0);
    const again = await until('the record again', 30_000, async () => (await client!.get(key).exec()).kvs[0]);
    expect(again.lease.toString()).not.toBe(kv.lease.toString());
  });
});
