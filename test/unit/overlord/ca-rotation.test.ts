import { describe, expect, it } from 'vitest';
import { parseRotationRecord, type RotationRecord } from '../../../contracts/ca-rotation.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { silentLogger } from '../../../overlord/edges/log.ts';
import { CaRotations, progressOf, waitingMachines, type CaRotationHooks } from '../../../overlord/trust/ca-rotation.ts';
import { CertificateAuthority } from '../../../overlord/trust/pki/authority.ts';
import { MemoryPkiStore, type PkiStore } from '../../../overlord/trust/pki/store.ts';
import { master1, spec } from '../pki/fixtures.ts';
import { FakeClock, MemoryStore } from './fakes.ts';

const keys = clusterKeys('demo');

/** The leader's loop over a real authority; the term's hooks faked: `waiting` is what the rollout reports. */
async function leader(pki: PkiStore = new MemoryPkiStore()) {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const authority = new CertificateAuthority({ store: pki, clock, cluster: 'demo' });
  await authority.issueFor(spec, master1);
  let published = 0;
  const rotations = new CaRotations({ authority, publish: async () => void published++ });
  const hooks = { waiting: [] as string[] | undefined, refreshes: 0 };
  const h: CaRotationHooks = { refresh: async () => void hooks.refreshes++, rollout: () => hooks.waiting };
  const look = () => rotations.look({ store, keys, clock, log: silentLogger() }, h);
  const record = async (): Promise<RotationRecord | undefined> => {
    const kv = await store.get(keys.caRotation);
    return kv ? parseRotationRecord(kv.value) : undefined;
  };
  /** what `corekube pki rotate-ca` writes: the request, the leader's part kept */
  const ask = async (ca: 'cluster' | 'etcd', phase: 'trust' | 'sign' | 'finish') => {
    await clock.advance(1000);
    const had = (await record()) ?? { schema: 1, request: null, progress: null, refused: null };
    await store.put(keys.caRotation, JSON.stringify({ ...had, request: { ca, phase, requestedAt: new Date(clock.now()).toISOString() } }));
  };
  return { store, clock, authority, hooks, look, record, ask, published: () => published };
}

describe("the leader's CA rotation", () => {
  it('does nothing and writes nothing while nobody asked', async () => {
    const l = await leader();
    await l.look();
    expect(await l.record()).toBeUndefined();
    expect(await l.authority.rotation()).toBeUndefined();
  });

  it('carries out a trust asked for: the authority moves, the state is published, the machines are prepared again, the progress recorded', async () => {
    const l = await leader();
    await l.ask('cluster', 'trust');
    l.hooks.waiting = undefined; // the reconciler has not planned against the new files yet
    await l.look();
    expect(await l.authority.rotation()).toMatchObject({ ca: 'cluster', phase: 'trust' });
    expect(l.published()).toBe(1);
    expect(l.hooks.refreshes).toBe(1);
    expect((await l.record())?.progress).toMatchObject({ ca: 'cluster', phase: 'trust', rolledOut: null });

    l.hooks.waiting = ['demo-minion-11 (deploying)'];
    await l.look();
    expect((await l.record())?.progress).toMatchObject({ rolledOut: null, waiting: ['demo-minion-11 (deploying)'] });
    l.hooks.waiting = [];
    await l.look();
    const done = (await l.record())?.progress;
    expect(done?.rolledOut).toBe(new Date(l.clock.now()).toISOString());
    // rolled out stays rolled out (a machine changing later gets the current files anyway)
    l.hooks.waiting = ['demo-minion-12 (deploying)'];
    await l.look();
    expect((await l.record())?.progress?.rolledOut).toBe(done?.rolledOut);
    expect(l.hooks.refreshes).toBe(1);
  });

  it('refuses the next phase while the current one is not rolled out, naming the machines; nothing changes', async () => {
    const l = await leader();
    await l.ask('cluster', 'trust');
    await l.look();
    l.hooks.waiting = ['demo-master-1 (deploying)'];
    await l.ask('cluster', 'sign');
    await l.look();
    expect(await l.authority.rotation()).toMatchObject({ phase: 'trust' });
    const r = await l.record();
    expect(r?.refused?.requestedAt).toBe(r?.request?.requestedAt);
    expect(r?.refused?.reason).toContain('is not rolled out everywhere: not yet on demo-master-1 (deploying)');
    // a refused request is not carried out later by surprise
    l.hooks.waiting = [];
    await l.look();
    expect(await l.authority.rotation()).toMatchObject({ phase: 'trust' });
    // asked again once rolled out: carried out
    await l.ask('cluster', 'sign');
    await l.look();
    expect(await l.authority.rotation()).toMatchObject({ phase: 'sign' });
    expect((await l.record())?.progress).toMatchObject({ phase: 'sign' });
  });

  it('waits, instead of refusing, while the rollout is not known yet (a leader that just took over)', async () => {
    const l = await leader();
    await l.ask('cluster', 'trust');
    await l.look();
    await l.ask('cluster', 'sign');
    l.hooks.waiting = undefined;
    await l.look();
    expect((await l.record())?.refused).toBeNull();
    expect(await l.authority.rotation()).toMatchObject({ phase: 'trust' });
    l.hooks.waiting = [];
    await l.look();
    expect(await l.authority.rotation()).toMatchObject({ phase: 'sign' });
  });

  it('refuses a phase out of order with the fix', async () => {
    const l = await leader();
    await l.ask('cluster', 'finish');
    await l.look();
    expect((await l.record())?.refused?.reason).toBe('--ca cluster --phase finish: no CA rotation was ever started — start with: corekube pki rotate-ca --ca cluster --phase trust');
    expect(await l.authority.rotation()).toBeUndefined();
  });

  it('records a phase it cannot carry out (the next CA lost from the store) with what to restore, and changes nothing', async () => {
    const inner = new MemoryPkiStore();
    let lost = false;
    const l = await leader({ read: (n) => (lost && n.includes('.next.') ? Promise.resolve(undefined) : inner.read(n)), write: (n, c) => inner.write(n, c) });
    await l.ask('cluster', 'trust');
    await l.look();
    lost = true;
    await l.ask('cluster', 'sign');
    await l.look();
    expect((await l.record())?.refused?.reason).toContain('restore ca/cluster.next.key from the overlord\'s backup');
    expect(await l.authority.rotation()).toMatchObject({ phase: 'trust' });
  });

  it('goes through trust, sign and finish, then lets another CA start', async () => {
    const l = await leader();
    for (const phase of ['trust', 'sign', 'finish'] as const) {
      await l.ask('cluster', phase);
      await l.look();
      expect(await l.authority.rotation()).toMatchObject({ ca: 'cluster', phase });
    }
    expect(await l.authority.rotation()).toMatchObject({ finished: true });
    await l.ask('etcd', 'trust');
    await l.look();
    expect(await l.authority.rotation()).toMatchObject({ ca: 'etcd', phase: 'trust' });
  });

  it('stops at once when the lead is lost (a fenced write refused)', async () => {
    const l = await leader();
    await l.ask('cluster', 'trust');
    const rotations = new CaRotations({ authority: l.authority });
    const fence = { key: `${keys.leader}/gone`, createRevision: '1' };
    const run = rotations.run({ store: l.store, keys, clock: l.clock, log: silentLogger(), fence: () => fence }, { refresh: async () => undefined, rollout: () => [] }, new AbortController().signal);
    await expect(run).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
  });
});

describe('the progress of a phase', () => {
  const state = { schema: 1, ca: 'cluster', phase: 'sign', since: '2026-12-07T00:00:00.000Z', retired: null, finished: false } as const;

  it('is rolled out when no machine waits, and stays so; a new phase starts over', () => {
    const now = '2026-12-07T01:00:00.000Z';
    const p = progressOf(state, null, [], now);
    expect(p).toEqual({ ca: 'cluster', phase: 'sign', since: state.since, rolledOut: now, waiting: [] });
    expect(progressOf(state, p, ['x (deploying)'], 'later').rolledOut).toBe(now);
    expect(progressOf({ ...state, phase: 'finish', since: now }, p, undefined, 'later')).toMatchObject({ phase: 'finish', rolledOut: null, waiting: [] });
  });

  it('names the machines not on the current files, and the ones that stopped announcing', () => {
    const plans = [
      { id: 'a', action: 'none', state: 'deployed' },
      { id: 'b', action: 'deploy' },
      { id: 'c', action: 'none', state: 'failed' },
      { id: 'd', action: 'wait' },
    ];
    expect(waitingMachines(plans, (id) => `host-${id}`, ['e'])).toEqual(['host-b (deploying)', 'host-c (failed)', 'host-d (waiting)', 'host-e (unreachable)']);
  });
});
