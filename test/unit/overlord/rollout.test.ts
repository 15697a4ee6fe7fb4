import { describe, expect, it } from 'vitest';
import { clusterKeys } from '../../../contracts/keys.ts';
import { parseLedgerEntry } from '../../../contracts/ledger-entry.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { skewProblem } from '../../../contracts/overlord-channel.ts';
import type { RenderedUnits } from '../../../contracts/step.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { DEFAULT_EXECUTOR_OPTIONS } from '../../../overlord/deploy/executor.ts';
import { Ledger } from '../../../overlord/deploy/ledger.ts';
import { planOne, stepsOf } from '../../../overlord/deploy/planner.ts';
import { CONTROL_PLANE_SETTLE_MS, controlPlaneSettling, outOfService, Reconciler } from '../../../overlord/deploy/reconciler.ts';
import { silentLogger } from '../../../overlord/edges/log.ts';
import type { NodeReadiness } from '../../../overlord/kubernetes/node-ready.ts';
import { DesiredSpec } from '../../../overlord/lifecycle/desired-spec.ts';
import { FakeClock, FakeMachines, flush, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const MINORS = ['1.34', '1.35', '1.36'];

/** units with a kubelet's Node for minions; the release version in every file (a new version restarts everything) */
function units(version: { v: string }) {
  return (record: MachineRecord): RenderedUnits => {
    const services = record.role === 'master' ? ['etcd.service', 'kube-apiserver.service'] : ['kubelet.service'];
    const all = ['corekube-download.service', ...services];
    return {
      files: all.map((u) => ({ path: `/etc/systemd/system/${u}`, content: `[Unit]\nDescription=${u} ${version.v}\n`, mode: '0644' })),
      start: all.map((u) => ({ unit: u, until: u.includes('download') ? ('exited' as const) : ('active' as const) })),
      hash: `${version.v}-${record.role}-${record.ip}`,
      ...(record.role === 'minion' ? { node: record.hostname } : {}),
    };
  };
}

describe('version skew', () => {
  it('allows a patch up or down and the next minor, refuses a skipped minor, a minor back and an unsupported one', () => {
    expect(skewProblem('v1.36.3', 'v1.36.5', MINORS)).toBeUndefined();
    expect(skewProblem('v1.36.5', 'v1.36.3', MINORS)).toBeUndefined();
    expect(skewProblem('v1.35.4', 'v1.36.5', MINORS)).toBeUndefined();
    expect(skewProblem('v1.34.2', 'v1.36.5', MINORS)).toMatch(/skips a minor: upgrade one minor at a time \(first to v1\.35\.x\)/);
    expect(skewProblem('v1.36.5', 'v1.35.4', MINORS)).toMatch(/goes back a minor/);
    expect(skewProblem('v1.36.5', 'v1.37.2', MINORS)).toMatch(/1\.37 is not supported/);
  });

  it('keeps the accepted version in etcd for the next leader, and refuses with what to do', async () => {
    const store = new MemoryStore();
    const lines: string[] = [];
    const log = silentLogger();
    const base = parseClusterSpec({ flags: { 'kubernetes-version': 'v1.36.3' } });
    const desired = new DesiredSpec(base, { store, keys, log: Object.assign(Object.create(log), { error: (o: object) => void lines.push(JSON.stringify(o)), info: () => undefined }) });
    let changes = 0;
    desired.onChange = () => void changes++;
    expect(await desired.offer({ kubernetes: 'v1.36.3' })).toBe(false);
    expect(await desired.offer({ kubernetes: 'v1.36.5' })).toBe(true);
    expect(desired.current().versions.kubernetes).toBe('v1.36.5');
    expect(desired.current().network).toEqual(base.network);
    expect([changes, desired.generation]).toEqual([1, 1]);
    expect(await desired.offer({ kubernetes: 'v1.34.2' })).toBe(false);
    expect(lines.join('')).toContain('goes back a minor');
    const next = new DesiredSpec(base, { store, keys, log });
    await next.load();
    expect(next.current().versions.kubernetes).toBe('v1.36.5');
  });
});

describe('rolling a change through the minions (planner rule 11)', () => {
  const minion = makeRecord(10, 'minion');
  const master = makeRecord(1, 'master');

  it('drains a minion that ran before first and uncordons it last; a new minion and a master are not drained', () => {
    const version = { v: 'a' };
    const deployed = { ...planEntry(minion, units(version)(minion)), state: 'deployed' as const, deployedAt: '2026-01-01T00:00:00Z' };
    version.v = 'b';
    const p = planOne({ record: minion, units: units(version)(minion) }, deployed);
    expect(p.action === 'deploy' && p.steps.map((s) => s.id)).toEqual(['drain', 'write-units', 'daemon-reload', 'start:corekube-download.service', 'start:kubelet.service', 'node-ready', 'uncordon']);
    expect(stepsOf(units(version)(minion)).map((s) => s.id)).not.toContain('drain');
    const masterPlan = planOne({ record: master, units: units(version)(master) }, { ...planEntry(master, units({ v: 'a' })(master)), state: 'deployed', deployedAt: '2026-01-01T00:00:00Z' });
    expect(masterPlan.action === 'deploy' && masterPlan.steps.map((s) => s.id)).not.toContain('drain');
  });

  it('changes masters first, then one minion at a time — drained, changed, Ready, uncordoned — and after a stop mid-change resumes the drained minion, never asking for a restart twice', async () => {
    const store = new MemoryStore();
    const clock = new FakeClock();
    const hosts = new FakeMachines();
    const minions = [10, 11, 12].map((n) => makeRecord(n, 'minion'));
    const records = new Map([master, ...minions].map((r) => [r.id, r]));
    const snapshot = { records, invalid: new Map(), overflow: 0 };
    const version = { v: 'a' };
    const cordoned = new Set<string>();
    const events: string[] = [];
    let most = 0;
    const nodes: NodeReadiness = {
      ensureReady: async (_t, node) => (events.push(`ready ${node}`), { changed: false }),
      drain: async (node) => {
        cordoned.add(node);
        most = Math.max(most, cordoned.size);
        events.push(`drain ${node}`);
        return { changed: true };
      },
      uncordon: async (node) => {
        cordoned.delete(node);
        events.push(`uncordon ${node}`);
        return { changed: true };
      },
    };
    const start = async () => {
      const ledger = new Ledger(store, keys);
      await ledger.load();
      const r = new Reconciler(
        { hosts, clock, log: silentLogger(), discovery: { snapshot: () => snapshot }, ledger, nodes },
        { unitsFor: units(version), filesVersion: () => version.v.charCodeAt(0), expected: { masters: 1, minions: 3 }, concurrency: 4, executor: { ...DEFAULT_EXECUTOR_OPTIONS, remote: { user: 'corekube' } }, retry: { retries: 2, initialMs: 1000, factor: 2, maxMs: 10_000 } },
      );
      r.trigger();
      return { r, ledger };
    };
    const settle = async (r: Reconciler) => {
      await clock.runUntil(() => r.summary().deployed === 4 && r.summary().deploying === 0, 5000).catch((e: Error) => { throw new Error(`${e.message}: ${r.summary().text}`); });
      await r.idle();
    };
    const first = await start();
    await settle(first.r);
    expect(events.filter((e) => e.startsWith('drain'))).toEqual([]); // a first deploy drains nothing

    version.v = 'b';
    events.length = 0;
    first.r.trigger();
    // stop once the first minion is drained: a killed overlord
    await clock.runUntil(() => events.some((e) => e.startsWith('drain')), 5000);
    await first.r.stop();
    const drainedFirst = events.find((e) => e.startsWith('drain'))!.slice('drain '.length);
    expect(outOfService(first.ledger.entries(), []).size).toBe(1);

    const second = await start();
    await settle(second.r);
    const drains = events.filter((e) => e.startsWith('drain'));
    expect(drains.length).toBe(3); // each minion drained once, the one drained before the stop not again
    expect(new Set(drains).size).toBe(3);
    expect(drains[0]).toBe(`drain ${drainedFirst}`);
    expect(most).toBe(1);
    expect(cordoned.size).toBe(0);
    // each minion's kubelet restarted once for the change, then Ready, then uncordoned
    for (const m of minions) {
      expect(hosts.machine(m.id).starts('kubelet.service'), `${m.hostname} ${drainedFirst} ${hosts.machine(m.id).log.join(' / ')}`).toBe(2);
      const at = (what: string) => events.indexOf(`${what} ${m.hostname}`);
      expect(at('drain')).toBeLessThan(at('ready'));
      expect(at('ready')).toBeLessThan(at('uncordon'));
      expect(parseLedgerEntry(store.data.get(keys.ledgerOf(m.id))!.value)).toMatchObject({ state: 'deployed', unitsHash: `b-minion-${m.ip}` });
    }
    // the master changed before any minion was drained
    const masterDone = Date.parse(parseLedgerEntry(store.data.get(keys.ledgerOf(master.id))!.value)!.finishedAt!);
    const firstDrain = Date.parse(parseLedgerEntry(store.data.get(keys.ledgerOf(minions.find((m) => m.hostname === drainedFirst)!.id))!.value)!.steps.drain!.startedAt!);
    expect(firstDrain).toBeGreaterThanOrEqual(masterDone);
    // and the first drain waited until every node's watches of the API could be back (client-go: at most 30 s)
    expect(firstDrain - masterDone).toBeGreaterThanOrEqual(CONTROL_PLANE_SETTLE_MS);
    await second.r.stop();
    await flush();
  });
});

describe('after a master changed', () => {
  it('holds drains for 30 s after the last master change finished, not after a first deploy', () => {
    const at = (iso: string) => Date.parse(iso);
    const entry = (hostname: string, role: 'master' | 'minion', deployedAt: string, finishedAt: string) => [hostname, { hostname, role, state: 'deployed', deployedAt, finishedAt }] as const;
    const ledger = new Map([
      entry('m0', 'master', '2026-12-07T00:00:00.000Z', '2026-12-07T01:00:00.000Z'),
      entry('m1', 'master', '2026-12-07T00:00:00.000Z', '2026-12-07T01:00:10.000Z'),
      entry('n0', 'minion', '2026-12-07T00:00:00.000Z', '2026-12-07T01:00:20.000Z'),
    ]) as unknown as Parameters<typeof controlPlaneSettling>[0];
    expect(controlPlaneSettling(ledger, at('2026-12-07T01:00:15.000Z'), 30_000)).toEqual({ until: at('2026-12-07T01:00:40.000Z'), master: 'm1' });
    expect(controlPlaneSettling(ledger, at('2026-12-07T01:00:40.000Z'), 30_000)).toBeUndefined();
    const fresh = new Map([entry('m0', 'master', '2026-12-07T01:00:00.000Z', '2026-12-07T01:00:00.000Z')]) as unknown as Parameters<typeof controlPlaneSettling>[0];
    expect(controlPlaneSettling(fresh, at('2026-12-07T01:00:05.000Z'), 30_000)).toBeUndefined();
  });
});

describe('maxUnavailable', () => {
  it('lets that many drained minions be out of service at once, and no more', () => {
    const entry = (id: string, drain: 'done' | 'in-flight' | 'pending', uncordon: 'done' | 'pending') => [id, { plan: ['drain', 'write-units', 'uncordon'], steps: { drain: { state: drain }, uncordon: { state: uncordon } } }] as const;
    const ledger = new Map([entry('a', 'done', 'pending'), entry('b', 'in-flight', 'pending'), entry('c', 'done', 'done'), entry('d', 'pending', 'pending')]) as unknown as Parameters<typeof outOfService>[0];
    expect([...outOfService(ledger, [])].sort()).toEqual(['a', 'b']);
    expect([...outOfService(ledger, ['e'])].sort()).toEqual(['a', 'b', 'e']);
  });
});

function planEntry(record: MachineRecord, u: RenderedUnits) {
  const steps = stepsOf(u);
  return {
    schema: 1 as const, id: record.id, role: record.role, ip: record.ip, hostname: record.hostname, bootId: record.bootId, unitsHash: u.hash,
    state: 'deploying' as 'deploying' | 'deployed', plan: steps.map((s) => s.id), steps: Object.fromEntries(steps.map((s) => [s.id, { state: 'done' as const, attempts: 1, startedAt: null, finishedAt: null, lastError: null }])),
    error: null, retryable: false, startedAt: '2026-01-01T00:00:00Z', finishedAt: null, deployedAt: null as string | null, certificatesExpire: null,
    applied: Object.fromEntries(steps.filter((s) => s.kind === 'start').map((s) => [s.kind === 'start' ? s.unit : '', s.kind === 'start' ? s.inputs : ''])), updatedAt: '2026-01-01T00:00:00Z',
  };
}
