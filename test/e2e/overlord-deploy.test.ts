/**
 * The overlord deploying real machines: systemd-nspawn machines (real systemd, sshd, sudo) on the harness's
 * net 42, a real etcd, the real SSH runner — deploying small REAL units (test/harness/test-units.ts: a oneshot
 * like the download, then `sleep infinity` services in order, a file naming the machine), because these tests are
 * about the overlord's mechanics: announce, plan, write, reload, start in order, record every step, resume.
 * Kubernetes' own units need the cluster's PKI and are deployed by the local cloud's e2e test. Machines announce
 * themselves by records the test writes into etcd (what cloud-config's announce script writes). Each scenario is
 * its own cluster (etcd prefix) on its own machines; assertions read the machines (systemd's facts of each unit,
 * sudo's log, the journal) and etcd (ledger, `corekube status --json`).
 */
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../core/clock.ts';
import { createEtcdStore } from '../../overlord/edges/etcd-store.ts';
import { etcdHostKeys } from '../../overlord/discovery/hostkeys.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import type { LedgerEntry } from '../../contracts/ledger-entry.ts';
import { createLogger } from '../../overlord/edges/log.ts';
import type { Role } from '../../contracts/roles.ts';
import { runOverlord, type Overlord } from '../../overlord/term.ts';
import { createSshRunner } from '../../overlord/edges/ssh-runner.ts';
import type { Store } from '../../overlord/edges/store.ts';
import { announce, CLI, doneSteps, doneUnitFacts, inFlight, ledgerText, notDeployedOnce, overlordProcess, readLedger, stepCount } from '../harness/deploy-e2e.ts';
import { etcdMissing, startEtcd, type EtcdServer } from '../../localcloud/etcd/etcd.ts';
import { bootMachines, machinesMissing, netFromEnv, type Fleet, type Machine } from '../harness/machines.ts';
import { missingParts } from '../harness/requirements.ts';
import { DEPLOYED_FOR, FAULT_FILE, TEST_SERVICES, TEST_UNIT, testUnits, unitFacts } from '../harness/test-units.ts';
import type { UnitFacts } from '../harness/test-units.ts';

const run = promisify(execFile);
const skip = missingParts(etcdMissing(), machinesMissing());
const NET = netFromEnv(42);

describe.skipIf(skip)('overlord deploys machines over SSH (e2e)', () => {
  let dir: string;
  let privateKey: string;
  let privateKeyFile: string;
  let etcd: EtcdServer;
  let client: Etcd3;
  let fleet: Fleet;
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
  });

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await Promise.allSettled(overlords.map((o) => o.stop()));
    await Promise.allSettled(stores.map((s) => s.close()));
    client?.close();
    await fleet?.teardown();
    await etcd?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function until(what: string, cond: () => Promise<boolean>, timeoutMs: number, explain: () => Promise<string>): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}\n${await explain()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async function untilStates(cluster: string, want: Record<string, LedgerEntry['state']>, timeoutMs: number): Promise<Map<string, LedgerEntry>> {
    await until(
      `ledger of ${cluster} shows ${JSON.stringify(want)}`,
      async () => {
        const l = await readLedger(client, cluster);
        return Object.entries(want).every(([id, state]) => l.get(id)?.state === state);
      },
      timeoutMs,
      async () => ledgerText(await readLedger(client, cluster)),
    );
    return readLedger(client, cluster);
  }

  /** The file the units were rendered with names this very machine (no deploy landed on the wrong one). */
  const deployedFor = async (m: Machine, role: Role) => {
    expect((await m.exec(['cat', DEPLOYED_FOR])).stdout, `${DEPLOYED_FOR} on ${m.hostname}`).toBe(`${m.id} ${m.hostname} ${role} ${m.ip} v1\n`);
  };

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

  async function startInProcess(cluster: string, expected: { masters: number; minions: number }, sink: Writable, unitsFor = testUnits()): Promise<Overlord> {
    const store = createEtcdStore({ endpoints: [etcd.endpoints[0]!] });
    stores.push(store);
    const keys = clusterKeys(cluster);
    const hosts = createSshRunner({ user: 'corekube', privateKey, connectTimeoutMs: 5000, hostKeys: etcdHostKeys(store, keys) });
    const overlord = await runOverlord(
      { store, hosts, clock: systemClock, log: createLogger({ format: 'json', destination: sink }) },
      {
        cluster,
        sshUser: 'corekube',
        unitsFor,
        expected,
        concurrency: 4,
        retry: { retries: 1, initialMs: 300, factor: 1, maxMs: 300 },
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
    const [master, minion1, minion2] = await fleet.add([{ hostname: 'join-master' }, { hostname: 'join-minion-1' }, { hostname: 'join-minion-2' }]);
    await announce(client, cluster, master!, 'master');
    await announce(client, cluster, minion1!, 'minion');
    await announce(client, cluster, minion2!, 'minion', false); // no pinned key: trusted on first use, recorded in etcd
    const keys = clusterKeys(cluster);
    await client.put(keys.machine('0123456789abcdef0123456789abcdef')).value('{"schema":1,"id":"0123456789abcdef0123');
    await client.put(keys.machine('fedcba9876543210fedcba9876543210')).value(JSON.stringify({ schema: 1, id: 'fedcba9876543210fedcba9876543210', role: 'gateway', ip: `10.200.${NET}.250`, hostname: 'odd', bootId: 'f'.repeat(32), announcedAt: new Date().toISOString() }));

    const sink = logSink();
    const overlord = await startInProcess(cluster, { masters: 1, minions: 2 }, sink.stream);
    await Promise.race([overlord.clusterReady, new Promise((_, reject) => setTimeout(() => reject(new Error(`not ready: ${overlord.summary().text}`)), 60_000))]);
    await untilStates(cluster, { [master!.id]: 'deployed', [minion1!.id]: 'deployed', [minion2!.id]: 'deployed' }, 5_000);

    // a minion boots and announces while the overlord runs: the watch picks it up, no restart
    const [late] = await fleet.add([{ hostname: 'join-minion-3' }]);
    await announce(client, cluster, late!, 'minion');
    const entries = await untilStates(cluster, { [late!.id]: 'deployed' }, 60_000);

    for (const [m, role] of [[master!, 'master'], [minion1!, 'minion'], [minion2!, 'minion'], [late!, 'minion']] as const) {
      expect(await notDeployedOnce(m, role), m.hostname).toEqual([]);
      await deployedFor(m, role);
      const e = entries.get(m.id)!;
      expect(e.plan.every((s) => e.steps[s]?.state === 'done'), `every step of ${m.hostname} done`).toBe(true);
    }
    // the minion that pinned no key had its key recorded on first use; pinned ones needed no record
    expect((await client.get(keys.hostkeyOf(minion2!.id)).string())?.trim()).toBe(minion2!.hostKey);
    expect(await client.get(keys.hostkeyOf(minion1!.id)).string()).toBeNull();

    expect(overlord.summary()).toMatchObject({ deployed: 4, total: 4, invalid: 2, failed: [] });
    const invalid = sink.lines().filter((l) => l.event === 'machine.invalid').map((l) => String(l.machine ?? l.id ?? ''));
    expect(new Set(invalid)).toEqual(new Set(['0123456789abcdef0123456789abcdef', 'fedcba9876543210fedcba9876543210']));
    expectNoSecret(sink.text());

    // the status every script relies on: both malformed records are listed as skipped, never crashing it
    const { stdout } = await run(process.execPath, [CLI, 'status', '--etcd-endpoints', etcd.endpoints[0]!, '--cluster', cluster, '--json']);
    const status = JSON.parse(stdout) as { machines: { id: string; role: string | null; state: string; error: string | null }[] };
    expect(status.machines.filter((m) => m.state === 'deployed').map((m) => m.id).sort()).toEqual([master!, minion1!, minion2!, late!].map((m) => m.id).sort());
    const skipped = status.machines.filter((m) => m.state === 'failed');
    expect(skipped.map((m) => m.id).sort()).toEqual(['0123456789abcdef0123456789abcdef', 'fedcba9876543210fedcba9876543210']);
    for (const s of skipped) expect(s.error).toMatch(/^skipped: /);
    await overlord.stop();

    // the check is not blind: a unit started once more is seen
    const node = TEST_SERVICES.minion.at(-1)!;
    await late!.exec(['systemctl', 'restart', node]);
    expect(await notDeployedOnce(late!, 'minion')).toEqual([`${node}: invocations 2, expected 1`]);
  }, 120_000);

  it('fails the machine whose unit fails, with the journal excerpt, and deploys the others', async () => {
    const cluster = 'e2e-fail';
    const [master, good, bad] = await fleet.add([{ hostname: 'fail-master' }, { hostname: 'fail-minion-1' }, { hostname: 'fail-minion-2' }]);
    // fault: on this machine every test service refuses to start (exit 2, the reason in its journal), and
    // systemd keeps restarting the first one
    mkdirSync(path.join(bad!.root, path.dirname(FAULT_FILE)), { recursive: true });
    writeFileSync(path.join(bad!.root, FAULT_FILE), 'disk full (test fault)\n');
    for (const [m, role] of [[master!, 'master'], [good!, 'minion'], [bad!, 'minion']] as const) await announce(client, cluster, m, role);

    const sink = logSink();
    const overlord = await startInProcess(cluster, { masters: 1, minions: 2 }, sink.stream);
    const entries = await untilStates(cluster, { [master!.id]: 'deployed', [good!.id]: 'deployed', [bad!.id]: 'failed' }, 90_000);

    const [first, second] = TEST_SERVICES.minion as [string, string];
    const failed = entries.get(bad!.id)!;
    expect(failed.error).toContain(`start:${first}`);
    expect(failed.error).toContain(`${first} failed`);
    expect(failed.error).toContain('corekube-test: refusing to start: disk full (test fault)'); // the journal excerpt
    expect(failed.steps[`start:${first}`]?.state).toBe('failed');
    expect(failed.steps['start:corekube-test.service']?.state).toBe('done');
    expect(await notDeployedOnce(master!, 'master'), master!.hostname).toEqual([]);
    expect(await notDeployedOnce(good!, 'minion'), good!.hostname).toEqual([]);
    // nothing after the failed unit was started
    expect((await bad!.exec(['systemctl', 'show', '-p', 'InvocationID', '--value', second])).stdout.trim()).toBe('');

    expect(overlord.summary().failed.map((f) => f.hostname)).toEqual(['fail-minion-2']);
    expect(sink.lines().some((l) => l.event === 'machine.failed' && l.machine === bad!.id)).toBe(true);
    expectNoSecret(sink.text());
    const { stdout } = await run(process.execPath, [CLI, 'status', '--etcd-endpoints', etcd.endpoints[0]!, '--cluster', cluster, '--json']);
    const row = (JSON.parse(stdout) as { machines: { id: string; state: string; step: string | null; error: string | null }[] }).machines.find((m) => m.id === bad!.id);
    expect(row).toMatchObject({ state: 'failed', step: `start:${first}` });
    expect(row?.error).toContain('refusing to start');
    await overlord.stop();
  }, 120_000);

  it('applies a change: restarts exactly the units whose files changed (all after the oneshot when it changed), records what each runs on, leaves the rest running', async () => {
    const cluster = 'e2e-apply';
    const [master, minion] = await fleet.add([{ hostname: 'apply-master' }, { hostname: 'apply-minion' }]);
    let editions: Record<string, number> = {};
    await announce(client, cluster, master!, 'master');
    await announce(client, cluster, minion!, 'minion');
    const sink = logSink();
    const overlord = await startInProcess(cluster, { masters: 1, minions: 1 }, sink.stream, testUnits({ editions: () => editions }));
    await untilStates(cluster, { [master!.id]: 'deployed', [minion!.id]: 'deployed' }, 60_000);
    const minionUnits = [TEST_UNIT, ...TEST_SERVICES.minion];
    const masterUnits = [TEST_UNIT, ...TEST_SERVICES.master];
    const ids = async (m: Machine, units: readonly string[]) => Object.fromEntries(Object.entries(await unitFacts(m, units)).map(([u, f]) => [u, f.invocationId]));
    const first = { minion: await ids(minion!, minionUnits), master: await ids(master!, masterUnits), ledger: await readLedger(client, cluster) };
    expect(Object.keys(first.ledger.get(minion!.id)!.applied).sort()).toEqual([...minionUnits].sort());

    // one service's unit file changes: that service alone restarts
    const node = TEST_SERVICES.minion.at(-1)!;
    editions = { [node]: 1 };
    const mark = sink.lines().length;
    await announce(client, cluster, minion!, 'minion'); // a new record: the overlord renders the minion's units again
    const redeployed = async () => (await readLedger(client, cluster)).get(minion!.id)!;
    await until('the minion is deployed with its new units', async () => { const e = await redeployed(); return e.state === 'deployed' && e.unitsHash !== first.ledger.get(minion!.id)!.unitsHash; }, 60_000, async () => ledgerText(await readLedger(client, cluster)));
    const second = await ids(minion!, minionUnits);
    for (const u of minionUnits) {
      if (u === node) expect(second[u], `${u} restarted`).not.toBe(first.minion[u]);
      else expect(second[u], `${u} untouched`).toBe(first.minion[u]);
    }
    expect((await minion!.exec(['systemctl', 'show', '-p', 'Environment', node])).stdout.trim()).toBe('Environment=COREKUBE_TEST_EDITION=1');
    const entry = await redeployed();
    expect(entry.applied[node]).not.toBe(first.ledger.get(minion!.id)!.applied[node]);
    for (const u of minionUnits.filter((x) => x !== node)) expect(entry.applied[u], u).toBe(first.ledger.get(minion!.id)!.applied[u]);
    expect(await ids(master!, masterUnits)).toEqual(first.master);
    expect(sink.lines().slice(mark).filter((l) => l.event === 'step.done' && String(l.step).startsWith('start:') && l.machine === minion!.id && l.changed === true).map((l) => l.step)).toEqual([`start:${node}`]);

    // the oneshot changes (as the download does with a new release): it runs again, and every service after it restarts
    editions = { [node]: 1, [TEST_UNIT]: 1 };
    await announce(client, cluster, minion!, 'minion');
    await until('the minion is deployed with its new oneshot', async () => { const e = await redeployed(); return e.state === 'deployed' && e.applied[TEST_UNIT] !== entry.applied[TEST_UNIT]; }, 60_000, async () => ledgerText(await readLedger(client, cluster)));
    const third = await ids(minion!, minionUnits);
    for (const u of minionUnits) expect(third[u], `${u} restarted`).not.toBe(second[u]);
    expect(await ids(master!, masterUnits)).toEqual(first.master);
    await overlord.stop();
  }, 180_000);

  it('resumes after kill -9 at several points mid-deploy: every machine deployed, no completed step run twice', async () => {
    const cluster = 'e2e-crash';
    const [master, minion1, minion2] = await fleet.add([{ hostname: 'crash-master' }, { hostname: 'crash-minion-1' }, { hostname: 'crash-minion-2' }]);
    const machines = [{ machine: master!, role: 'master' as const }, { machine: minion1!, role: 'minion' as const }, { machine: minion2!, role: 'minion' as const }];
    for (const { machine, role } of machines) await announce(client, cluster, machine, role);
    const totalSteps = machines.reduce((n, m) => n + stepCount(m.role), 0);

    const logs: string[] = [];
    const startChild = () => {
      // `corekube overlord` as operators run it; a short lease: each restart after a kill -9 waits out the killed leader's lease
      const child = overlordProcess(['--etcd-endpoints', etcd.endpoints[0]!, '--ssh-user', 'corekube', '--ssh-key', privateKeyFile, '--concurrency', '3', '--lease-ttl', '3',
        '--name', cluster, '--masters', '1', '--minions', '2', '--log-format', 'json']);
      children.push(child);
      child.stdout!.setEncoding('utf8').on('data', (c: string) => logs.push(c));
      child.stderr!.setEncoding('utf8').on('data', (c: string) => logs.push(c));
      return child;
    };
    const exited = (c: ChildProcess) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())));

    // kill -9 as soon as the ledger shows at least this many steps done across the cluster: the write
    // that marks a step done also puts the next one in flight, so each kill lands mid-step
    const killPoints = [1, 4, 9, 14];
    const killedAt: number[] = [];
    /** per kill, what the ledger (read after the process died) had in flight on each machine */
    const inFlightAtKill: Map<string, string>[] = [];
    /** per machine, systemd's facts of each unit when its start step was first seen done at a kill */
    const doneAtKill = new Map<string, Record<string, UnitFacts>>();
    const watcher = await client.watch().prefix(clusterKeys(cluster).ledger).create();
    try {
      for (const point of killPoints) {
        const child = startChild();
        let fired = false;
        const reached = new Promise<void>((resolve) => {
          const check = async () => {
            const l = await readLedger(client, cluster);
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
        const after = await readLedger(client, cluster);
        killedAt.push(doneSteps(after));
        inFlightAtKill.push(inFlight(after));
        for (const [id, facts] of await doneUnitFacts(machines, after)) doneAtKill.set(id, { ...facts, ...doneAtKill.get(id) });
      }
    } finally {
      await watcher.cancel();
    }
    // every kill happened before the deployment was complete
    expect(killedAt.every((n) => n < totalSteps), `kill points ${killedAt.join(', ')} of ${totalSteps} steps`).toBe(true);
    expect([...doneAtKill.values()].some((f) => Object.keys(f).length > 0), 'some unit was done at a kill').toBe(true);

    const last = startChild();
    const entries = await untilStates(cluster, Object.fromEntries(machines.map((m) => [m.machine.id, 'deployed'])), 90_000);
    last.kill('SIGTERM');
    await exited(last);
    expect(last.exitCode).toBe(0); // SIGTERM stops it cleanly
    expect(doneSteps(entries)).toBe(totalSteps);

    // every unit ran once in this boot (a start step in flight at a kill checks the unit before starting it again),
    // and a unit that was done at a kill is still that same run; write-units and daemon-reload ran once, plus once
    // more only for a kill that caught that very step in flight on that machine
    for (const { machine: m, role } of machines) {
      const redone = (step: string) => inFlightAtKill.filter((k) => k.get(m.id) === step).length;
      expect(await notDeployedOnce(m, role, { before: doneAtKill.get(m.id) ?? {}, redone: { 'write-units': redone('write-units'), 'daemon-reload': redone('daemon-reload') } }), m.hostname).toEqual([]);
      await deployedFor(m, role);
    }
    expect(logs.join('')).toContain('"event":"step.done"');
    expectNoSecret(logs.join(''));
  }, 150_000);
});
