/**
 * The overlord deploying real machines: systemd-nspawn machines (real systemd, sshd, sudo) on the harness's
 * net 42, a real etcd, the release mirror of stand-in binaries over HTTP. Machines announce themselves by
 * records the test writes into etcd (what cloud-config's announce script writes). Each scenario is its own
 * cluster (etcd prefix) on its own machines; assertions read the machines (units active, stand-in start
 * counters, the journal) and etcd (ledger, `corekube status --json`).
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unitsForSpec } from '../../cli/overlord.ts';
import { systemClock } from '../../overlord/clock.ts';
import { createEtcdStore } from '../../overlord/etcd-store.ts';
import { etcdHostKeys } from '../../overlord/hostkeys.ts';
import { clusterKeys } from '../../overlord/keys.ts';
import type { LedgerEntry } from '../../overlord/ledger.ts';
import { createLogger } from '../../overlord/log.ts';
import type { Role } from '../../overlord/machine-record.ts';
import { runOverlord, type Overlord } from '../../overlord/overlord.ts';
import { createSshRunner } from '../../overlord/ssh-runner.ts';
import type { Store } from '../../overlord/store.ts';
import { parseClusterSpec, type ClusterSpec } from '../../spec/cluster-spec.ts';
import { UNITS } from '../../units/index.ts';
import { etcdMissing, startEtcd, type EtcdServer } from '../harness/etcd.ts';
import { bootMachines, machinesMissing, netFromEnv, type Fleet, type Machine } from '../harness/machines.ts';
import { startMirror, type MirrorServer } from '../harness/mirror.ts';
import { missingParts } from '../harness/requirements.ts';
import { buildReleaseMirror, STANDIN_STATE_DIR } from '../standins/index.ts';
import { DISCOVERY_CLIENT_PATHS } from '../../units/pki-paths.ts';

const run = promisify(execFile);
const skip = missingParts(etcdMissing(), machinesMissing());
const NET = netFromEnv(42);
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(REPO, 'bin/corekube.js');

/** the stand-ins whose services each role runs (each counts its starts on the machine) */
const SERVICES: Record<Role, readonly string[]> = {
  master: ['etcd', 'flanneld', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler'],
  minion: ['containerd', 'flanneld', 'kube-proxy', 'kubelet'],
};
const unitsOf = (role: Role) => UNITS.filter((u) => u.roles.includes(role)).map((u) => u.unit);

describe.skipIf(skip)('overlord deploys machines over SSH (e2e)', () => {
  let dir: string;
  let privateKey: string;
  let privateKeyFile: string;
  let etcd: EtcdServer;
  let client: Etcd3;
  let fleet: Fleet;
  let mirror: MirrorServer;
  let releaseBaseUrl: string;
  const stores: Store[] = [];
  const overlords: Overlord[] = [];
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'corekube-e2e-'));
    privateKeyFile = path.join(dir, 'overlord_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'corekube-overlord', '-f', privateKeyFile]);
    privateKey = readFileSync(privateKeyFile, 'utf8');
    const [etcdServer, machines] = await Promise.all([
      startEtcd(),
      bootMachines([], { net: NET, authorizedKey: readFileSync(`${privateKeyFile}.pub`, 'utf8') }),
    ]);
    etcd = etcdServer;
    fleet = machines;
    client = new Etcd3(etcd.clientOptions());
    const mirrorDir = path.join(dir, 'mirror');
    mirror = await startMirror({ root: mirrorDir, listenOn: [fleet.gateway] });
    releaseBaseUrl = mirror.urlOn(fleet.gateway);
    // the tree's paths do not depend on the cluster's name or counts: one mirror serves every scenario
    await buildReleaseMirror(specOf('mirror', 1, 1), mirrorDir);
  });

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.allSettled(overlords.map((o) => o.stop()));
    await Promise.allSettled(stores.map((s) => s.close()));
    client?.close();
    await mirror?.close();
    await fleet?.teardown();
    await etcd?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function specOf(name: string, masters: number, minions: number): ClusterSpec {
    return parseClusterSpec({ flags: { name, masters: String(masters), minions: String(minions), 'release-base-url': releaseBaseUrl ?? 'http://127.0.0.1:1' } });
  }

  /** What a node's announce script writes: its record, with its host key pinned unless `pin` is false. */
  async function announce(cluster: string, m: Machine, role: Role, pin = true): Promise<void> {
    const bootId = (await m.exec(['cat', '/proc/sys/kernel/random/boot_id'])).stdout.trim();
    const record = { schema: 1, id: m.id, role, ip: m.ip, hostname: m.hostname, bootId, announcedAt: new Date().toISOString(), ...(pin ? { sshHostKey: m.hostKey } : {}) };
    provideDiscoveryAccess(m);
    await client.put(clusterKeys(cluster).machine(m.id)).value(JSON.stringify(record));
  }

  /**
   * What the booting overlord delivers for flanneld and this test's overlord (run on --etcd-endpoints, with
   * no PKI) does not: the discovery etcd credentials file its unit reads, and — since the discovery etcd of
   * the spec is not on this test's network — the subnet flanneld's stand-in reports (flannel.env). The
   * overlord's own reservations are tested against a real etcd in test/integration/subnets-etcd.test.ts and
   * end to end by the local cloud.
   */
  function provideDiscoveryAccess(m: Machine): void {
    mkdirSync(path.join(m.root, path.dirname(DISCOVERY_CLIENT_PATHS.credentials)), { recursive: true });
    writeFileSync(path.join(m.root, DISCOVERY_CLIENT_PATHS.credentials), `FLANNELD_ETCD_USERNAME=machine-${m.id}\nFLANNELD_ETCD_PASSWORD=${'e2'.repeat(32)}\n`, { mode: 0o600 });
    const state = path.join(m.root, STANDIN_STATE_DIR);
    if (existsSync(state) && !statSync(state).isDirectory()) return; // the failing-unit scenario's fault
    mkdirSync(state, { recursive: true });
    writeFileSync(path.join(state, 'flannel.env'), `FLANNEL_NETWORK=10.244.0.0/14\nFLANNEL_SUBNET=10.244.${m.ip.split('.')[3]}.1/24\n`);
  }

  async function ledger(cluster: string): Promise<Map<string, LedgerEntry>> {
    const prefix = clusterKeys(cluster).ledger;
    const kvs = await client.getAll().prefix(prefix).strings();
    return new Map(Object.entries(kvs).map(([k, v]) => [k.slice(prefix.length), JSON.parse(v) as LedgerEntry]));
  }

  async function until(what: string, cond: () => Promise<boolean>, timeoutMs: number, explain: () => Promise<string>): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}\n${await explain()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  const ledgerText = async (cluster: string) =>
    [...(await ledger(cluster)).values()].map((e) => `${e.hostname}: ${e.state} ${e.error ?? ''}`).join('\n');

  async function untilStates(cluster: string, want: Record<string, LedgerEntry['state']>, timeoutMs: number): Promise<Map<string, LedgerEntry>> {
    await until(
      `ledger of ${cluster} shows ${JSON.stringify(want)}`,
      async () => {
        const l = await ledger(cluster);
        return Object.entries(want).every(([id, state]) => l.get(id)?.state === state);
      },
      timeoutMs,
      () => ledgerText(cluster),
    );
    return ledger(cluster);
  }

  /** `systemctl is-active` of every unit of the role, read on the machine. */
  async function unitStates(m: Machine, role: Role): Promise<Record<string, string>> {
    const units = unitsOf(role);
    const r = await m.exec(['systemctl', 'is-active', ...units]);
    const states = r.stdout.trim().split('\n');
    return Object.fromEntries(units.map((u, i) => [u, states[i] ?? '?']));
  }

  /** How often each stand-in started on the machine (lines of its counter file). */
  function starts(m: Machine): Record<string, number> {
    const d = path.join(m.root, STANDIN_STATE_DIR);
    return Object.fromEntries(
      readdirSync(d)
        .filter((f) => f.endsWith('.starts'))
        .map((f) => [f.slice(0, -'.starts'.length), readFileSync(path.join(d, f), 'utf8').split('\n').filter(Boolean).length]),
    );
  }

  /** How often systemd started the download oneshot in this boot. */
  async function downloadRuns(m: Machine): Promise<number> {
    const r = await m.exec(['journalctl', '-b', '-u', 'corekube-download.service', '-o', 'cat', '--no-pager']);
    return r.stdout.split('\n').filter((l) => l.startsWith('Starting corekube-download.service')).length;
  }

  /** What the overlord ran through sudo on the machine (sudo logs every command to the journal). */
  async function sudoCommands(m: Machine): Promise<string> {
    return (await m.exec(['journalctl', '-b', '_COMM=sudo', '-o', 'cat', '--no-pager'])).stdout;
  }

  async function expectDeployed(m: Machine, role: Role): Promise<void> {
    const expected = Object.fromEntries(unitsOf(role).map((u) => [u, 'active']));
    expect(await unitStates(m, role), `units of ${m.hostname}`).toEqual(expected);
    expect(starts(m), `stand-in starts on ${m.hostname}`).toEqual(Object.fromEntries(SERVICES[role].map((s) => [s, 1])));
    expect(await downloadRuns(m), `download runs on ${m.hostname}`).toBe(1);
    // enabled: systemd brings them back at the next boot by itself
    const enabled = (await m.exec(['systemctl', 'is-enabled', ...unitsOf(role)])).stdout.trim().split('\n');
    expect(enabled, `units enabled on ${m.hostname}`).toEqual(unitsOf(role).map(() => 'enabled'));
  }

  function logSink(): { stream: Writable; lines: () => Record<string, unknown>[]; text: () => string } {
    const chunks: string[] = [];
    const stream = new Writable({
      write(chunk, _enc, done) {
        chunks.push(String(chunk));
        done();
      },
    });
    const text = () => chunks.join('');
    return { stream, text, lines: () => text().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
  }

  async function startInProcess(spec: ClusterSpec, sink: Writable): Promise<Overlord> {
    const store = createEtcdStore({ endpoints: [etcd.endpoints[0]!] });
    stores.push(store);
    const keys = clusterKeys(spec.name);
    const hosts = createSshRunner({ user: 'corekube', privateKey, connectTimeoutMs: 5000, hostKeys: etcdHostKeys(store, keys) });
    const overlord = await runOverlord(
      { store, hosts, clock: systemClock, log: createLogger({ format: 'json', destination: sink }) },
      {
        cluster: spec.name,
        sshUser: 'corekube',
        unitsFor: unitsForSpec(spec),
        expected: { masters: spec.masters, minions: spec.minions },
        concurrency: 4,
        retry: { retries: 1, minMs: 300, factor: 1, maxMs: 300 },
      },
    );
    overlords.push(overlord);
    return overlord;
  }

  const expectNoSecret = (text: string) => {
    for (const line of privateKey.split('\n').filter((l) => l.length > 20)) expect(text).not.toContain(line);
  };

  it('deploys machines announced before it started and one that joins later, skipping malformed records', async () => {
    const cluster = 'e2e-join';
    const spec = specOf(cluster, 1, 2);
    const [master, minion1, minion2] = await fleet.add([{ hostname: 'join-master' }, { hostname: 'join-minion-1' }, { hostname: 'join-minion-2' }]);
    await announce(cluster, master!, 'master');
    await announce(cluster, minion1!, 'minion');
    await announce(cluster, minion2!, 'minion', false); // no pinned key: trusted on first use, recorded in etcd
    const keys = clusterKeys(cluster);
    await client.put(keys.machine('0123456789abcdef0123456789abcdef')).value('{"schema":1,"id":"0123456789abcdef0123');
    await client.put(keys.machine('fedcba9876543210fedcba9876543210')).value(JSON.stringify({ schema: 1, id: 'fedcba9876543210fedcba9876543210', role: 'gateway', ip: '10.200.42.250', hostname: 'odd', bootId: 'f'.repeat(32), announcedAt: new Date().toISOString() }));

    const sink = logSink();
    const overlord = await startInProcess(spec, sink.stream);
    await Promise.race([overlord.clusterReady, new Promise((_, reject) => setTimeout(() => reject(new Error(`not ready: ${overlord.summary().text}`)), 60_000))]);
    await untilStates(cluster, { [master!.id]: 'deployed', [minion1!.id]: 'deployed', [minion2!.id]: 'deployed' }, 5_000);

    // a minion boots and announces while the overlord runs: the watch picks it up, no restart
    const [late] = await fleet.add([{ hostname: 'join-minion-3' }]);
    await announce(cluster, late!, 'minion');
    const entries = await untilStates(cluster, { [late!.id]: 'deployed' }, 60_000);

    await expectDeployed(master!, 'master');
    for (const m of [minion1!, minion2!, late!]) await expectDeployed(m, 'minion');
    for (const m of [master!, minion1!, minion2!, late!]) {
      const e = entries.get(m.id)!;
      expect(e.plan.every((s) => e.steps[s]?.state === 'done'), `every step of ${m.hostname} done`).toBe(true);
    }
    // the minion that pinned no key had its key recorded on first use; pinned ones needed no record
    expect((await client.get(keys.hostkeyOf(minion2!.id)).string())?.trim()).toBe(minion2!.hostKey);
    expect(await client.get(keys.hostkeyOf(minion1!.id)).string()).toBeNull();

    expect(overlord.summary()).toMatchObject({ deployed: 4, total: 4, invalid: 2, failed: [] });
    const invalid = sink.lines().filter((l) => l.event === 'machine.invalid').map((l) => String(l.machine ?? l.id ?? ''));
    expect(new Set(invalid)).toEqual(new Set(['0123456789abcdef0123456789abcdef', 'fedcba9876543210fedcba9876543210']));
    expect(mirror.requests.filter((r) => r.from === late!.ip && r.status === 200).length).toBeGreaterThan(0);
    expectNoSecret(sink.text());

    // the status every script relies on: both malformed records are listed as skipped, never crashing it
    const { stdout } = await run(process.execPath, [CLI, 'status', '--etcd-endpoints', etcd.endpoints[0]!, '--cluster', cluster, '--json']);
    const status = JSON.parse(stdout) as { machines: { id: string; role: string | null; state: string; error: string | null }[] };
    expect(status.machines.filter((m) => m.state === 'deployed').map((m) => m.id).sort()).toEqual([master!, minion1!, minion2!, late!].map((m) => m.id).sort());
    const skipped = status.machines.filter((m) => m.state === 'failed');
    expect(skipped.map((m) => m.id).sort()).toEqual(['0123456789abcdef0123456789abcdef', 'fedcba9876543210fedcba9876543210']);
    for (const s of skipped) expect(s.error).toMatch(/^skipped: /);
    await overlord.stop();
  }, 120_000);

  it('fails the machine whose unit fails, with the journal excerpt, and deploys the others', async () => {
    const cluster = 'e2e-fail';
    const spec = specOf(cluster, 1, 2);
    const [master, good, bad] = await fleet.add([{ hostname: 'fail-master' }, { hostname: 'fail-minion-1' }, { hostname: 'fail-minion-2' }]);
    // fault: the stand-ins' state directory is a file on this machine, so its first service (flanneld)
    // exits 2 at start ("cannot create …") and systemd keeps restarting it
    writeFileSync(path.join(bad!.root, STANDIN_STATE_DIR), 'not a directory\n');
    for (const [m, role] of [[master!, 'master'], [good!, 'minion'], [bad!, 'minion']] as const) await announce(cluster, m, role);

    const sink = logSink();
    const overlord = await startInProcess(spec, sink.stream);
    const entries = await untilStates(cluster, { [master!.id]: 'deployed', [good!.id]: 'deployed', [bad!.id]: 'failed' }, 90_000);

    const failed = entries.get(bad!.id)!;
    expect(failed.error).toContain('start:flanneld.service');
    expect(failed.error).toContain('flanneld.service failed');
    expect(failed.error).toContain(`STAND-IN flanneld: cannot create ${STANDIN_STATE_DIR}`); // the journal excerpt
    expect(failed.steps['start:flanneld.service']?.state).toBe('failed');
    expect(failed.steps['start:corekube-download.service']?.state).toBe('done');
    await expectDeployed(master!, 'master');
    await expectDeployed(good!, 'minion');
    expect((await bad!.exec(['systemctl', 'is-active', 'kubelet.service'])).stdout.trim()).not.toBe('active');

    expect(overlord.summary().failed.map((f) => f.hostname)).toEqual(['fail-minion-2']);
    expect(sink.lines().some((l) => l.event === 'machine.failed' && l.machine === bad!.id)).toBe(true);
    expectNoSecret(sink.text());
    const { stdout } = await run(process.execPath, [CLI, 'status', '--etcd-endpoints', etcd.endpoints[0]!, '--cluster', cluster, '--json']);
    const row = (JSON.parse(stdout) as { machines: { id: string; state: string; step: string | null; error: string | null }[] }).machines.find((m) => m.id === bad!.id);
    expect(row).toMatchObject({ state: 'failed', step: 'start:flanneld.service' });
    expect(row?.error).toContain('cannot create');
    await overlord.stop();
  }, 120_000);

  it('resumes after kill -9 at several points mid-deploy: every machine deployed, no completed step run twice', async () => {
    const cluster = 'e2e-crash';
    const [master, minion1, minion2] = await fleet.add([{ hostname: 'crash-master' }, { hostname: 'crash-minion-1' }, { hostname: 'crash-minion-2' }]);
    for (const [m, role] of [[master!, 'master'], [minion1!, 'minion'], [minion2!, 'minion']] as const) await announce(cluster, m, role);
    const machines = [master!, minion1!, minion2!];
    const totalSteps = 2 + unitsOf('master').length + 2 * (2 + unitsOf('minion').length);

    const logs: string[] = [];
    const startChild = () => {
      const child = spawn(
        process.execPath,
        // a short lease: each restart after a kill -9 waits out the killed leader's lease before taking over
        [CLI, 'overlord', '--etcd-endpoints', etcd.endpoints[0]!, '--ssh-user', 'corekube', '--ssh-key', privateKeyFile, '--concurrency', '3', '--lease-ttl', '3',
          '--name', cluster, '--masters', '1', '--minions', '2', '--release-base-url', releaseBaseUrl, '--log-format', 'json'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      children.push(child);
      child.stdout!.setEncoding('utf8').on('data', (c: string) => logs.push(c));
      child.stderr!.setEncoding('utf8').on('data', (c: string) => logs.push(c));
      return child;
    };
    const exited = (c: ChildProcess) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())));
    const doneSteps = (l: Map<string, LedgerEntry>) => [...l.values()].reduce((n, e) => n + Object.values(e.steps).filter((s) => s.state === 'done').length, 0);

    // kill -9 as soon as the ledger shows at least this many steps done across the cluster: the write
    // that marks a step done also puts the next one in flight, so each kill lands mid-step
    const killPoints = [1, 4, 9, 14];
    const killedAt: number[] = [];
    /** per kill, what the ledger (read after the process died) had in flight on each machine */
    const inFlightAtKill: Map<string, string>[] = [];
    const watcher = await client.watch().prefix(clusterKeys(cluster).ledger).create();
    try {
      for (const point of killPoints) {
        const child = startChild();
        let fired = false;
        const reached = new Promise<void>((resolve) => {
          const check = async () => {
            const l = await ledger(cluster);
            if (!fired && doneSteps(l) >= point && child.exitCode === null && child.signalCode === null) {
              fired = true;
              child.kill('SIGKILL');
              resolve();
            }
          };
          watcher.on('put', () => void check());
          void check();
        });
        await Promise.race([reached, exited(child).then(() => { throw new Error(`overlord exited on its own before kill point ${point}:\n${logs.join('').slice(-3000)}`); })]);
        await exited(child);
        watcher.removeAllListeners('put');
        const after = await ledger(cluster);
        killedAt.push(doneSteps(after));
        inFlightAtKill.push(new Map([...after.values()].flatMap((e) => Object.entries(e.steps).filter(([, st]) => st.state === 'in-flight').map(([step]) => [e.id, step] as [string, string]))));
      }
    } finally {
      await watcher.cancel();
    }
    // every kill happened before the deployment was complete
    expect(killedAt.every((n) => n < totalSteps), `kill points ${killedAt.join(', ')} of ${totalSteps} steps`).toBe(true);

    const last = startChild();
    const entries = await untilStates(cluster, Object.fromEntries(machines.map((m) => [m.id, 'deployed'])), 90_000);
    last.kill('SIGTERM');
    await exited(last);
    expect(last.exitCode).toBe(0); // SIGTERM stops it cleanly

    // start steps: each stand-in started once and the download ran once (a start step in flight at a
    // kill checks the unit before starting it again)
    await expectDeployed(master!, 'master');
    await expectDeployed(minion1!, 'minion');
    await expectDeployed(minion2!, 'minion');
    expect(doneSteps(entries)).toBe(totalSteps);
    // write-units and daemon-reload, counted from sudo's log on each machine: run once, plus once more
    // only for a kill that caught that very step in flight on that machine
    for (const m of machines) {
      const ran = await sudoCommands(m);
      const writes = Math.max(...[...ran.matchAll(/corekube-write-file (\S+) /g)].reduce((counts, [, file]) => counts.set(file!, (counts.get(file!) ?? 0) + 1), new Map<string, number>()).values());
      const reloads = ran.split('\n').filter((l) => l.endsWith('COMMAND=/usr/bin/systemctl daemon-reload')).length;
      const redone = (step: string) => inFlightAtKill.filter((k) => k.get(m.id) === step).length;
      expect(writes, `write-units runs on ${m.hostname}`).toBeGreaterThanOrEqual(1);
      expect(writes, `write-units runs on ${m.hostname}`).toBeLessThanOrEqual(1 + redone('write-units'));
      expect(reloads, `daemon-reload runs on ${m.hostname}`).toBeGreaterThanOrEqual(1);
      expect(reloads, `daemon-reload runs on ${m.hostname}`).toBeLessThanOrEqual(1 + redone('daemon-reload'));
    }
    expect(logs.join('')).toContain('"event":"step.done"');
    expectNoSecret(logs.join(''));
  }, 150_000);
});
