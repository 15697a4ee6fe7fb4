/**
 * The leader election's etcd adapter (overlord/availability/etcd-election.ts) against a REAL etcd: etcd3's Election on
 * a lease, the fence of a term, resigning, lease renewals as leader.ts reads them, and a candidate cut
 * off by a suspended TCP proxy. The overlord-level faults (kill -9, cut-off, etcd restarts, SSH) run on
 * real machines in test/e2e/overlord-faults.test.ts.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../core/clock.ts';
import { createEtcdElection } from '../../overlord/availability/etcd-election.ts';
import { createEtcdStore } from '../../overlord/edges/etcd-store.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import type { LeaderElection } from '../../overlord/availability/leader.ts';
import { readStatus } from '../../overlord/status.ts';
import type { Store } from '../../overlord/edges/store.ts';
import { etcdMissing, startEtcd, type EtcdServer } from '../../localcloud/etcd/etcd.ts';
import { missingParts } from '../harness/requirements.ts';
import { startTcpProxy } from '../harness/tcp-proxy.ts';

const skip = missingParts(etcdMissing());

describe.skipIf(skip)('leader election over a real etcd', () => {
  let etcd: EtcdServer;
  let store: Store;
  let raw: Etcd3;
  const elections: LeaderElection[] = [];
  let n = 0;
  const cluster = () => `lead${++n}-${process.pid}`;
  const electionFor = (c: string, endpoint = etcd.endpoints[0]!) => {
    const e = createEtcdElection({ endpoints: [endpoint], callTimeoutMs: 1_500, keys: clusterKeys(c), clock: systemClock });
    elections.push(e);
    return e;
  };

  beforeAll(async () => {
    etcd = await startEtcd();
    store = createEtcdStore({ endpoints: [etcd.endpoints[0]!] });
    raw = new Etcd3(etcd.clientOptions());
  });

  afterAll(async () => {
    await Promise.allSettled(elections.map((e) => e.close()));
    await store?.close();
    raw?.close();
    await etcd?.destroy();
  });

  it('elects the first candidate, fences its writes, and hands over at once when it resigns', async () => {
    const c = cluster();
    const keys = clusterKeys(c);
    const [ea, eb] = [electionFor(c), electionFor(c)];
    const a = await ea.campaign('overlord-a', 5, new AbortController().signal);
    expect(a.fence.key.startsWith(keys.leaderCandidates)).toBe(true);
    expect(await raw.get(a.fence.key).string()).toBe('overlord-a');
    let bElected = false;
    const bTerm = eb.campaign('overlord-b', 5, new AbortController().signal).then((t) => ((bElected = true), t));
    await new Promise((r) => setTimeout(r, 300));
    expect(bElected).toBe(false);
    expect(await eb.leader()).toBe('overlord-a');
    expect((await readStatus(store, keys)).leader).toBe('overlord-a');

    await store.put(keys.ledgerOf('m'), 'by a', { fence: a.fence });
    const handover = Date.now();
    await a.resign();
    const b = await bTerm;
    expect(Date.now() - handover).toBeLessThan(1_000);
    expect(await ea.leader()).toBe('overlord-b');
    await expect(store.put(keys.ledgerOf('m'), 'late write by a', { fence: a.fence })).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    await store.put(keys.ledgerOf('m'), 'by b', { fence: b.fence });
    expect(await raw.get(keys.ledgerOf('m')).string()).toBe('by b');
    await b.resign();
    expect((await readStatus(store, keys)).leader).toBeUndefined();
  });

  it('withdraws a candidacy when its signal aborts', async () => {
    const c = cluster();
    const keys = clusterKeys(c);
    const a = await electionFor(c).campaign('a', 5, new AbortController().signal);
    const abort = new AbortController();
    const waiting = electionFor(c).campaign('b', 5, abort.signal);
    await new Promise((r) => setTimeout(r, 200));
    expect(Object.keys(await raw.getAll().prefix(keys.leaderCandidates).strings())).toHaveLength(2);
    abort.abort(new Error('stop'));
    await expect(waiting).rejects.toThrow('stop');
    expect(Object.values(await raw.getAll().prefix(keys.leaderCandidates).strings())).toEqual(['a']);
    await a.resign();
  });

  it('confirms renewals while etcd answers, and stops confirming them while cut off, until etcd expires the lease', async () => {
    const c = cluster();
    const keys = clusterKeys(c);
    const proxy = await startTcpProxy(etcd.clientPort);
    try {
      const term = await electionFor(c, proxy.endpoint).campaign('a', 3, new AbortController().signal);
      const first = term.renewedAt();
      await new Promise((r) => setTimeout(r, 1_600)); // keepalives every TTL/3 = 1 s
      const renewed = term.renewedAt();
      expect(renewed).toBeGreaterThan(first);

      const deleted = new Promise<number>((resolve) => {
        void raw.watch().key(term.fence.key).create().then((w) => w.on('delete', () => resolve(Date.now())));
      });
      proxy.suspend();
      const cut = Date.now();
      await new Promise((r) => setTimeout(r, 1_500));
      const lastConfirmed = term.renewedAt();
      expect(lastConfirmed).toBeLessThanOrEqual(cut);
      // etcd expires the lease a TTL after the last renewal it received, never before renewedAt + TTL
      const expiredAt = await deleted;
      expect(expiredAt).toBeGreaterThanOrEqual(lastConfirmed + 3_000);
      expect(await raw.getAll().prefix(keys.leaderCandidates).keys()).toEqual([]);
      proxy.resume();
      await expect(store.put(keys.ledgerOf('m'), 'late', { fence: term.fence })).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
    } finally {
      await proxy.close();
    }
  });

  it('rejects a campaign with E_ETCD, retryable, while etcd is unreachable', async () => {
    const proxy = await startTcpProxy(etcd.clientPort);
    proxy.cut();
    try {
      await expect(electionFor(cluster(), proxy.endpoint).campaign('a', 3, new AbortController().signal)).rejects.toMatchObject({ code: 'E_ETCD', retryable: true });
    } finally {
      await proxy.close();
    }
  });
});
