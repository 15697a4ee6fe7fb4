/**
 * Faults the overlord survives, on real machines (systemd-nspawn on the harness's net 47, real systemd,
 * sshd, sudo) with a real etcd, the overlord run as operators run it (the CLI process, leader election on)
 * except for the SSH case, which needs short retry backoffs. What it deploys are small REAL units
 * (test/harness/test-units.ts: a oneshot, then `sleep infinity` services in order — the CLI process gets them
 * through test/harness/units-mock.mjs): these tests are about the deploy mechanics, not Kubernetes'
 * programs, which need the cluster's PKI (the local cloud's e2e test deploys those).
 *
 * 1. the leader is killed (kill -9) mid-deploy → the standby takes over within the lease TTL and finishes;
 * 2. the leader is cut off from etcd (a suspended TCP proxy) → it stops acting before etcd expires its
 *    lease, the standby takes over, and once the network heals the old leader follows;
 * 3. etcd restarts mid-deploy (data kept) → the overlord retries and converges without a restart of its
 *    own; then etcd stays down past the retry budget → one clear error, /healthz 503, no exit, and it
 *    deploys again once etcd is back;
 * 4. an SSH host stops answering, another refuses the key → each is failed with the reason and retried
 *    with backoff, the others deploy, and both deploy once fixed.
 *
 * Every case asserts the end state from etcd (ledger, `corekube status --json`) and from the machines
 * (systemd's facts of each unit: active, enabled, one invocation this boot and no restart, the same run as
 * when the fault struck; sudo's log of file writes and reloads): nothing that completed ran twice.
 */
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
import { runOverlord } from '../../overlord/term.ts';
import { createSshRunner } from '../../overlord/edges/ssh-runner.ts';
import { announce as announceIn, CLI, doneSteps, doneUnitFacts, inFlight, ledgerText as textOf, notDeployedOnce, overlordProcess, readLedger, stepCount } from '../harness/deploy-e2e.ts';
import { etcdMissing, startEtcd, type EtcdServer } from '../../localcloud/etcd/etcd.ts';
import { bootMachines, machinesMissing, netFromEnv, type Fleet, type Machine } from '../harness/machines.ts';
import { freePort } from '../harness/ports.ts';
import { missingParts } from '../harness/requirements.ts';
import { startTcpProxy } from '../harness/tcp-proxy.ts';
import { testUnits, type UnitFacts } from '../harness/test-units.ts';

const run = promisify(execFile);
const skip = missingParts(etcdMissing(), machinesMissing());
const NET = netFromEnv(47);
/** lease TTL of the overlords here: a leader steps down 4 s after its last confirmed renewal */
const TTL = 6;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface LogLine {
  readonly event?: string;
  readonly time: string;
  readonly [k: string]: unknown;
}

/** A `corekube overlord` process and its JSON log. */
interface OverlordProcess {
  readonly id: string;
  readonly child: ChildProcess;
  readonly healthUrl: string;
  lines(): LogLine[];
  text(): string;
  exited(): Promise<void>;
  health(): Promise<{ status: number; body: Record<string, unknown> } | undefined>;
}

describe.skipIf(skip)('overlord survives faults (e2e)', () => {
  let dir: string;
  let privateKeyFile: string;
  let etcd: EtcdServer;
  let client: Etcd3;
  let fleet: Fleet;
  const children: ChildProcess[] = [];
  /** one cluster's machines: index 0 the master, the rest minions */
  const pool: Machine[][] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'corekube-faults-'));
    privateKeyFile = path.join(dir, 'overlord_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'corekube-overlord', '-f', privateKeyFile]);
    // every case's machines boot at once: 4 clusters, 14 machines
    const sizes = [3, 3, 4, 4];
    const names = sizes.flatMap((n, c) => Array.from({ length: n }, (_, i) => ({ hostname: `f${c + 1}-${i === 0 ? 'master' : `minion-${i}`}` })));
    const [etcdServer, machines] = await Promise.all([startEtcd(), bootMachines(names, { net: NET, authorizedKey: readFileSync(`${privateKeyFile}.pub`, 'utf8') })]);
    etcd = etcdServer;
    fleet = machines;
    let i = 0;
    for (const n of sizes) pool.push(fleet.machines.slice(i, (i += n)));
    client = new Etcd3(etcd.clientOptions());
  }, 180_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    client?.close();
    await fleet?.teardown();
    await etcd?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const roleOf = (machines: readonly Machine[], m: Machine): Role => (m === machines[0] ? 'master' : 'minion');
  const withRoles = (machines: readonly Machine[]) => machines.map((machine) => ({ machine, role: roleOf(machines, machine) }));
  const announce = (cluster: string, m: Machine, role: Role) => announceIn(client, cluster, m, role);
  const ledger = (cluster: string) => readLedger(client, cluster);
  const totalSteps = (machines: readonly Machine[]) => machines.reduce((n, m) => n + stepCount(roleOf(machines, m)), 0);

  async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number, explain: () => string | Promise<string> = () => ''): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}\n${await explain()}`);
      await sleep(100);
    }
  }

  const ledgerText = async (cluster: string) => textOf(await ledger(cluster));

  async function untilAllDeployed(cluster: string, machines: readonly Machine[], timeoutMs: number, explain: () => string = () => ''): Promise<Map<string, LedgerEntry>> {
    await until(
      `every machine of ${cluster} is deployed`,
      async () => {
        const l = await ledger(cluster);
        return machines.every((m) => l.get(m.id)?.state === 'deployed');
      },
      timeoutMs,
      async () => `${await ledgerText(cluster)}\n${explain()}`,
    );
    return ledger(cluster);
  }

  /** What a fault struck: the ledger then, and systemd's facts of every unit already done (what must not run again). */
  async function atFault(cluster: string, machines: readonly Machine[]): Promise<{ ledger: Map<string, LedgerEntry>; done: Map<string, Record<string, UnitFacts>> }> {
    const l = await ledger(cluster);
    return { ledger: l, done: await doneUnitFacts(withRoles(machines), l) };
  }

  /**
   * Every machine deployed with each unit started once in this boot, each unit done at the fault still that same
   * run, and write-units / daemon-reload run once — once more only where that very step was in flight at the fault
   * (a step an overlord was stopped in, or whose record etcd lost, is redone).
   */
  async function expectNothingRanTwice(machines: readonly Machine[], fault: { ledger: Map<string, LedgerEntry>; done: Map<string, Record<string, UnitFacts>> }): Promise<void> {
    const flying = inFlight(fault.ledger);
    for (const m of machines) {
      const redone = { 'write-units': flying.get(m.id) === 'write-units' ? 1 : 0, 'daemon-reload': flying.get(m.id) === 'daemon-reload' ? 1 : 0 };
      expect(await notDeployedOnce(m, roleOf(machines, m), { before: fault.done.get(m.id) ?? {}, redone }), m.hostname).toEqual([]);
    }
  }

  async function startOverlord(cluster: string, id: string, options: { endpoint?: string; minions: number; budgetSeconds?: number }): Promise<OverlordProcess> {
    const healthPort = await freePort();
    const child = overlordProcess([
      '--etcd-endpoints', options.endpoint ?? etcd.endpoints[0]!, '--ssh-user', 'corekube', '--ssh-key', privateKeyFile, '--concurrency', '3',
      '--name', cluster, '--masters', '1', '--minions', String(options.minions), '--log-format', 'json',
      '--id', id, '--lease-ttl', String(TTL), '--health-port', String(healthPort), '--etcd-retry-budget', String(options.budgetSeconds ?? 60),
    ]);
    children.push(child);
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (out += c));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const healthUrl = `http://127.0.0.1:${healthPort}/healthz`;
    return {
      id,
      child,
      healthUrl,
      text: () => out,
      lines: () => out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine),
      exited: () => exited,
      health: async () => {
        try {
          const res = await fetch(healthUrl, { signal: AbortSignal.timeout(3_000) });
          return { status: res.status, body: (await res.json()) as Record<string, unknown> };
        } catch {
          return undefined;
        }
      },
    };
  }

  const events = (o: OverlordProcess, name: string) => o.lines().filter((l) => l.event === name);
  const roleOfProcess = async (o: OverlordProcess) => (await o.health())?.body.role;

  async function stopOverlord(o: OverlordProcess): Promise<void> {
    if (o.child.exitCode !== null || o.child.signalCode !== null) return;
    o.child.kill('SIGTERM');
    await until(`${o.id} exits on SIGTERM`, () => o.child.exitCode !== null || o.child.signalCode !== null, 20_000, o.text);
    expect(o.child.exitCode, `${o.id} exits 0 on SIGTERM`).toBe(0);
  }

  async function statusOf(cluster: string): Promise<{ machines: { id: string; state: string }[]; leader?: string }> {
    const { stdout } = await run(process.execPath, [CLI, 'status', '--etcd-endpoints', etcd.endpoints[0]!, '--cluster', cluster, '--json']);
    return JSON.parse(stdout) as { machines: { id: string; state: string }[]; leader?: string };
  }

  it('kill -9 of the leader mid-deploy: the standby takes over within the lease TTL and finishes; nothing completed runs twice', async () => {
    const cluster = 'faults-kill';
    const machines = pool[0]!;
    const a = await startOverlord(cluster, 'a', { minions: machines.length - 1 });
    await until('a leads', async () => (await roleOfProcess(a)) === 'leader', 20_000, a.text);
    const b = await startOverlord(cluster, 'b', { minions: machines.length - 1 });
    await until('b stands by', async () => (await b.health())?.body.leader === 'a', 20_000, b.text);
    expect((await statusOf(cluster)).leader).toBe('a');
    // the machines announce once both overlords run: the deployment starts now, and the fault lands in it
    for (const m of machines) await announce(cluster, m, roleOf(machines, m));

    // kill -9 once the master is done and the minions are under way
    await until('the master is deployed', async () => doneSteps(await ledger(cluster)) >= stepCount('master') + 1, 60_000, a.text);
    a.child.kill('SIGKILL');
    await a.exited();
    const killedAt = Date.now();
    const atKill = await atFault(cluster, machines);
    expect(doneSteps(atKill.ledger)).toBeLessThan(totalSteps(machines));

    await until('b leads', () => events(b, 'leader.elected').length > 0, (TTL + 5) * 1000, b.text);
    const electedAt = Date.parse(events(b, 'leader.elected')[0]!.time);
    expect(electedAt - killedAt, 'takeover after the kill, ms').toBeLessThanOrEqual(TTL * 1000 + 1_000);
    await untilAllDeployed(cluster, machines, 60_000, b.text);
    expect((await statusOf(cluster)).leader).toBe('b');

    await expectNothingRanTwice(machines, atKill);
    await stopOverlord(b);
  }, 150_000);

  it('a leader cut off from etcd stops acting before its lease expires; the standby takes over; back, the old leader follows', async () => {
    const cluster = 'faults-cut';
    const keys = clusterKeys(cluster);
    const machines = pool[1]!;
    const proxy = await startTcpProxy(etcd.clientPort);
    try {
      const a = await startOverlord(cluster, 'a', { endpoint: proxy.endpoint, minions: machines.length - 1 });
      await until('a leads', async () => (await roleOfProcess(a)) === 'leader', 20_000, a.text);
      const b = await startOverlord(cluster, 'b', { minions: machines.length - 1 });
      await until('b stands by', async () => (await b.health())?.body.leader === 'a', 20_000, b.text);
      const candidates = await client.getAll().prefix(keys.leaderCandidates).strings();
      const aKey = Object.entries(candidates).find(([, v]) => v === 'a')![0];
      const expired = new Promise<number>((resolve) => {
        void client.watch().key(aKey).create().then((w) => w.on('delete', () => resolve(Date.now())));
      });
      for (const m of machines) await announce(cluster, m, roleOf(machines, m));

      await until('the master is under way', async () => doneSteps(await ledger(cluster)) >= 3, 60_000, a.text);
      const cutAt = Date.now();
      proxy.suspend();

      await until('a steps down', () => events(a, 'leader.stepping-down').length > 0, TTL * 1000, a.text);
      const steppedDownAt = Date.parse(events(a, 'leader.stepping-down')[0]!.time);
      const expiredAt = await Promise.race([expired, sleep(TTL * 2000).then(() => Promise.reject(new Error(`a's lease did not expire\n${a.text()}`)))]);
      // a stopped acting at least a second before etcd expired its lease (4 s after the cut, the lease at ≥ 6 s)
      expect(steppedDownAt - cutAt).toBeLessThanOrEqual((TTL * 2000) / 3 + 500);
      expect(expiredAt - steppedDownAt, 'ms between a stepping down and its lease expiring').toBeGreaterThan(1_000);
      // …and started no step after that
      expect(a.lines().filter((l) => l.event === 'step.start' && Date.parse(l.time) > steppedDownAt)).toEqual([]);
      const atStepDown = await atFault(cluster, machines);

      await until('b leads', () => events(b, 'leader.elected').length > 0, 10_000, b.text);
      expect(Date.parse(events(b, 'leader.elected')[0]!.time)).toBeGreaterThanOrEqual(expiredAt - 50);
      await untilAllDeployed(cluster, machines, 60_000, b.text);

      // the network heals: a's writes held by the partition reach etcd late and are refused; a follows b
      proxy.resume();
      await until('a stands by behind b', async () => {
        const h = await a.health();
        return h?.body.role === 'standby' && h.body.leader === 'b' && h.body.etcd === 'ok';
      }, 30_000, a.text);
      expect(a.child.exitCode).toBeNull();
      expect((await statusOf(cluster)).leader).toBe('b');
      expect(events(a, 'leader.elected')).toHaveLength(1);

      await expectNothingRanTwice(machines, atStepDown);
      await stopOverlord(a);
      await stopOverlord(b);
    } finally {
      await proxy.close();
    }
  }, 150_000);

  it('etcd restarted mid-deploy: the overlord retries and converges without restarting; etcd down past the budget: one error, 503, and it resumes', async () => {
    const cluster = 'faults-etcd';
    const machines = pool[2]!;
    const [first, late] = [machines.slice(0, 3), machines[3]!];
    const o = await startOverlord(cluster, 'solo', { minions: machines.length - 1, budgetSeconds: 3 });
    await until('it leads', async () => (await roleOfProcess(o)) === 'leader', 20_000, o.text);
    for (const m of first) await announce(cluster, m, roleOf(machines, m));

    await until('the deployment is under way', async () => doneSteps(await ledger(cluster)) >= 4, 60_000, o.text);
    await etcd.restart();
    const atRestart = await atFault(cluster, first);
    expect(doneSteps(atRestart.ledger)).toBeLessThan(totalSteps(first));
    await untilAllDeployed(cluster, first, 90_000, o.text);
    expect(o.child.exitCode).toBeNull();

    // etcd away for longer than the retry budget (3 s) and the lease (6 s)
    await etcd.stop();
    await until('health answers 503 and it stood down', async () => {
      const r = await o.health();
      return r?.status === 503 && r.body.role === 'standby';
    }, 20_000, o.text);
    const h = (await o.health())!;
    expect(h.body).toMatchObject({ role: 'standby', etcd: 'down', leader: null });
    expect(String(h.body.error)).toMatch(/^etcd unreachable for \d+ s: /);
    const unreachable = events(o, 'etcd.unreachable');
    expect(unreachable).toHaveLength(1);
    expect(unreachable[0]).toMatchObject({ level: 50, code: 'E_ETCD', budgetMs: 3_000 });
    await sleep(2_000);
    expect(o.child.exitCode).toBeNull(); // no crash loop: it waits for etcd
    expect(events(o, 'etcd.unreachable')).toHaveLength(1);

    await etcd.start();
    await until('it leads again and etcd answers', async () => {
      const r = await o.health();
      return r?.status === 200 && r.body.role === 'leader' && r.body.etcd === 'ok';
    }, 30_000, o.text);
    expect(events(o, 'etcd.reachable').length).toBeGreaterThanOrEqual(1);
    // working, not just alive: a machine that joins now is deployed by the same process
    await announce(cluster, late, 'minion');
    await untilAllDeployed(cluster, machines, 60_000, o.text);
    const status = await statusOf(cluster);
    expect(status.leader).toBe('solo');
    expect(status.machines.map((m) => m.state)).toEqual(machines.map(() => 'deployed'));

    // a write that etcd lost in its restart is retried: the step it records may run once more
    await expectNothingRanTwice(machines, atRestart);
    await stopOverlord(o);
  }, 180_000);

  it('an SSH host that stops answering and one that refuses the key are failed with the reason and retried with backoff; the others deploy', async () => {
    const cluster = 'faults-ssh';
    const machines = pool[3]!;
    const [master, good, silent, refusing] = machines as [Machine, Machine, Machine, Machine];
    const veth = `ck${fleet.net}v${silent.index}`;
    const keys = path.join(refusing.root, 'home/corekube/.ssh/authorized_keys');
    const authorized = readFileSync(keys, 'utf8');
    // faults: the silent machine's link goes down (packets dropped, no answer at all); the other no longer
    // lists the overlord's key
    execFileSync('ip', ['link', 'set', veth, 'down']);
    writeFileSync(keys, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr3OutQpKSxZjAhRJPOyqYUjqWqiOPDnJCGUdfr3RSn someone-else\n');
    const chunks: string[] = [];
    const sink = new Writable({ write: (c, _e, done) => (chunks.push(String(c)), done()) });
    const lines = () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine);
    const store = createEtcdStore({ endpoints: [etcd.endpoints[0]!] });
    const hosts = createSshRunner({ user: 'corekube', privateKey: readFileSync(privateKeyFile, 'utf8'), connectTimeoutMs: 2_000, hostKeys: etcdHostKeys(store, clusterKeys(cluster)) });
    try {
      for (const m of machines) await announce(cluster, m, roleOf(machines, m));
      const overlord = await runOverlord(
        { store, hosts, clock: systemClock, log: createLogger({ format: 'json', destination: sink }) },
        {
          cluster,
          sshUser: 'corekube',
          unitsFor: testUnits(),
          expected: { masters: 1, minions: 3 },
          concurrency: 4,
          retry: { retries: 1, initialMs: 300, factor: 2, maxMs: 1_000 },
          requeue: { initialMs: 1_500, factor: 2, maxMs: 6_000 },
          executor: { commandTimeoutMs: 5_000 },
        },
      );
      try {
        await until(
          'the good machines are deployed and both faulty ones failed, each retried',
          async () => {
            const l = await ledger(cluster);
            const requeued = (m: Machine) => lines().filter((x) => x.event === 'machine.requeued' && x.machine === m.id).length;
            return l.get(master.id)?.state === 'deployed' && l.get(good.id)?.state === 'deployed' && requeued(silent) >= 2 && requeued(refusing) >= 2;
          },
          90_000,
          () => ledgerText(cluster),
        );
        const l = await ledger(cluster);
        for (const [m, reason] of [[silent, /E_SSH: cannot connect to machine \w+ \(10\.200\.\d+\.\d+:22\): .*(Timed out|timed out|EHOSTUNREACH)/], [refusing, /E_SSH: cannot connect to machine \w+ \(10\.200\.\d+\.\d+:22\): the SSH key was refused/]] as const) {
          const e = l.get(m.id);
          expect(e, `ledger of ${m.hostname}`).toMatchObject({ state: 'failed', retryable: true });
          expect(e!.error).toMatch(reason);
          const failures = lines().filter((x) => x.event === 'machine.failed' && x.machine === m.id);
          expect(failures.length, `failures of ${m.hostname} logged`).toBeGreaterThanOrEqual(2);
          expect(failures[0]).toMatchObject({ code: 'E_SSH', willRetry: true });
          // backoff: each retry waits longer than the one before
          const waits = lines().filter((x) => x.event === 'machine.requeued' && x.machine === m.id).map((x) => Number(x.nextRetryMs));
          expect(waits.slice(0, 3)).toEqual([...waits.slice(0, 3)].sort((x, y) => x - y));
          expect(waits[1]!).toBeGreaterThan(waits[0]!);
        }
        expect(await notDeployedOnce(master, 'master'), master.hostname).toEqual([]);
        expect(await notDeployedOnce(good, 'minion'), good.hostname).toEqual([]);

        // fixed: the link is back and the key is listed again; the next retry deploys both
        execFileSync('ip', ['link', 'set', veth, 'up']);
        writeFileSync(keys, authorized);
        await untilAllDeployed(cluster, machines, 60_000);
        for (const m of machines) expect(await notDeployedOnce(m, roleOf(machines, m)), m.hostname).toEqual([]);
        expect(overlord.summary()).toMatchObject({ deployed: 4, total: 4, failed: [] });
      } finally {
        await overlord.stop();
      }
    } finally {
      execFileSync('ip', ['link', 'set', veth, 'up']);
      writeFileSync(keys, authorized);
      await hosts.close();
      await store.close();
    }
  }, 150_000);
});
