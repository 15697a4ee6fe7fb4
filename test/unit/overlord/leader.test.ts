import { describe, expect, it } from 'vitest';
import type { ExecOptions, HostRunner, HostTarget } from '../../../overlord/edges/host-runner.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { runLeader, stepDownAfterMs, validateLeaseTtl, type Leadership } from '../../../overlord/availability/leader.ts';
import { overlordTerms } from '../../../overlord/term.ts';
import { parseLedgerEntry, type LedgerEntry } from '../../../contracts/ledger-entry.ts';
import { silentLogger } from '../../../overlord/edges/log.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { FakeElection } from './fake-election.ts';
import { FakeClock, FakeMachines, fakeUnits, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const TTL = 9; // seconds: steps down after 6 s without a confirmed renewal
const master = makeRecord(1, 'master');
const minions = [makeRecord(10, 'minion'), makeRecord(11, 'minion'), makeRecord(12, 'minion')];

/** A HostRunner in front of the shared machines that records when each overlord ran what. */
class Attributed implements HostRunner {
  readonly runs: { at: number; machine: string; argv: string }[] = [];
  constructor(
    private readonly inner: FakeMachines,
    private readonly clock: FakeClock,
  ) {}
  async exec(target: HostTarget, argv: readonly string[], options?: ExecOptions) {
    this.runs.push({ at: this.clock.now(), machine: target.id, argv: argv.join(' ') });
    return this.inner.exec(target, argv, options);
  }
  async close() {}
}

function world() {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const machines = new FakeMachines({ clock, ms: 500 });
  const election = new FakeElection(store, keys, clock);
  const start = (id: string) => {
    const hosts = new Attributed(machines, clock);
    const ports = { store, hosts, clock, log: silentLogger() };
    const leadership = runLeader(ports, {
      id,
      election,
      leaseTtlSeconds: TTL,
      backoff: { initialMs: 1_000, maxMs: 4_000 },
      term: overlordTerms(ports, {
        cluster: 't',
        sshUser: 'corekube',
        unitsFor: fakeUnits(),
        expected: { masters: 1, minions: 3 },
        concurrency: 4,
        retry: { retries: 2, initialMs: 1_000, factor: 2, maxMs: 10_000 },
        executor: { poll: { initialMs: 200, factor: 1.5, maxMs: 1_000 } },
      }),
    });
    return { leadership, hosts };
  };
  const ledger = (id: string): LedgerEntry | null => {
    const kv = store.data.get(keys.ledgerOf(id));
    return kv ? parseLedgerEntry(kv.value) : null;
  };
  const allDeployed = () => [master, ...minions].every((r) => ledger(r.id)?.state === 'deployed');
  const doneSteps = () => [master, ...minions].reduce((n, r) => n + Object.values(ledger(r.id)?.steps ?? {}).filter((s) => s.state === 'done').length, 0);
  return { store, clock, machines, election, start, ledger, allDeployed, doneSteps };
}

async function announce(store: MemoryStore, records: readonly MachineRecord[]) {
  for (const r of records) await store.put(keys.machine(r.id), JSON.stringify(r));
}

/** every unit on every machine started exactly once */
function startedOnce(machines: FakeMachines): boolean {
  return [...machines.machines.values()].every((m) => [...m.units.values()].every((u) => u.starts === 1));
}

async function stopAll(...ls: Leadership[]) {
  await Promise.all(ls.map((l) => l.stop()));
}

describe('leader election', () => {
  it('lets only the elected overlord deploy; the standby takes over from the ledger when the leader stops', async () => {
    const w = world();
    await announce(w.store, [master, ...minions]);
    const a = w.start('a');
    await w.clock.runUntil(() => a.leadership.role() === 'leader');
    const b = w.start('b');
    await w.clock.runUntil(() => w.doneSteps() >= 8);
    expect(b.leadership.role()).toBe('standby');
    expect(b.leadership.overlord()).toBeUndefined();
    expect(b.hosts.runs).toEqual([]);

    await a.leadership.stop(); // resigns: the standby is elected at once, not a TTL later
    expect(a.leadership.role()).toBe('stopped');
    const handover = w.clock.now();
    await w.clock.runUntil(() => b.leadership.role() === 'leader');
    expect(w.clock.now() - handover).toBeLessThan(1_000);
    await w.clock.runUntil(() => w.allDeployed());
    expect(startedOnce(w.machines)).toBe(true);
    expect(a.hosts.runs.every((r) => r.at <= handover)).toBe(true);
    expect(b.hosts.runs.length).toBeGreaterThan(0);
    await stopAll(b.leadership);
  });

  it('stops a leader cut off from etcd before its lease can expire; the standby takes over; the old leader follows once back', async () => {
    const w = world();
    await announce(w.store, [master, ...minions]);
    const a = w.start('a');
    await w.clock.runUntil(() => a.leadership.role() === 'leader');
    const b = w.start('b');
    await w.clock.runUntil(() => w.doneSteps() >= 6);

    const cut = w.clock.now();
    w.election.partition('a');
    await w.clock.runUntil(() => a.leadership.role() !== 'leader');
    const steppedDown = w.clock.now();
    expect(steppedDown - cut).toBeLessThanOrEqual(stepDownAfterMs(TTL));
    // nothing ran after it stepped down (its waits are aborted, no new step)
    expect(a.hosts.runs.filter((r) => r.at > steppedDown)).toEqual([]);
    expect(b.leadership.role()).toBe('standby'); // the lease has not expired yet

    // etcd expires a's lease a TTL after its last renewal: b is elected and finishes from the ledger
    await w.clock.advance(cut + TTL * 1000 - w.clock.now());
    await w.election.expire('a');
    await w.clock.runUntil(() => b.leadership.role() === 'leader');
    await w.clock.runUntil(() => w.allDeployed());
    expect(startedOnce(w.machines)).toBe(true);
    expect(a.hosts.runs.every((r) => r.at <= steppedDown)).toBe(true);

    // a comes back: it campaigns again and stands by behind b
    w.election.heal('a');
    await w.clock.runUntil(() => w.election.candidates.get('a')?.key !== undefined && w.store.data.has(w.election.candidates.get('a')!.key));
    await w.clock.advance(10_000);
    expect(a.leadership.role()).toBe('standby');
    expect(b.leadership.role()).toBe('leader');
    expect(await w.election.leader()).toBe('b');
    expect(a.leadership.terms()).toBe(1);
    await stopAll(a.leadership, b.leadership);
  });

  it('refuses every ledger write of a leader whose key is gone, and that leader steps down (the fence)', async () => {
    const w = world();
    await announce(w.store, [master, ...minions]);
    // every ledger write that etcd accepted or refused, with the fence it carried
    const writes: { fence: string | undefined; ok: boolean }[] = [];
    const put = w.store.put.bind(w.store);
    w.store.put = async (key, value, options) => {
      if (!key.startsWith(keys.ledger)) return put(key, value, options);
      try {
        const rev = await put(key, value, options);
        writes.push({ fence: options?.fence?.key, ok: true });
        return rev;
      } catch (err) {
        writes.push({ fence: options?.fence?.key, ok: false });
        throw err;
      }
    };
    const a = w.start('a');
    await w.clock.runUntil(() => w.doneSteps() >= 3);
    // the lease expires while a does not know yet (e.g. a long pause of its process)
    const oldKey = w.election.leaderKey()!;
    const before = writes.length;
    await w.store.delete(oldKey);
    // its next write is refused, it steps down, campaigns again and, alone, leads a new term
    await w.clock.runUntil(() => a.leadership.terms() === 2);
    const afterLoss = writes.slice(before).filter((x) => x.fence === oldKey);
    expect(afterLoss).toEqual([{ fence: oldKey, ok: false }]);
    await w.clock.runUntil(() => w.allDeployed());
    expect(writes.every((x) => x.fence !== undefined)).toBe(true);
    expect(startedOnce(w.machines)).toBe(true);
    await stopAll(a.leadership);
  });

  it('retries a campaign that cannot reach etcd with backoff, and leads once etcd answers', async () => {
    const w = world();
    await announce(w.store, [master]);
    w.election.down = true;
    const a = w.start('a');
    await w.clock.advance(10_000);
    expect(a.leadership.role()).toBe('standby');
    const tries = w.election.campaigns;
    expect(tries).toBeGreaterThanOrEqual(3); // 1 s, 2 s, 4 s, 4 s …: backoff, not a busy loop
    expect(tries).toBeLessThanOrEqual(6);
    w.election.down = false;
    await w.clock.runUntil(() => a.leadership.role() === 'leader');
    await w.clock.runUntil(() => w.ledger(master.id)?.state === 'deployed');
    await stopAll(a.leadership);
    await a.leadership.done;
  });

  it('steps down when etcd3 reports the lease lost', async () => {
    const w = world();
    await announce(w.store, [master]);
    const a = w.start('a');
    await w.clock.runUntil(() => a.leadership.role() === 'leader');
    await w.election.expire('a', true);
    await w.clock.runUntil(() => a.leadership.terms() === 2);
    expect(a.leadership.role()).toBe('leader');
    await stopAll(a.leadership);
  });

  it('accepts lease TTLs from 2 s to 300 s', () => {
    expect(validateLeaseTtl(10)).toBe(10);
    expect(() => validateLeaseTtl(1)).toThrow(/from 2 to 300/);
    expect(() => validateLeaseTtl(2.5)).toThrow(/whole number/);
    expect(stepDownAfterMs(15)).toBe(10_000);
  });
});
