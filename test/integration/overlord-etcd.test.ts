/**
 * The overlord's etcd edge against a REAL etcd (the pinned one, started on 127.0.0.1 by the harness):
 * the store adapter (revisions, compare-and-swap, fences, watch, compaction), discovery's list + watch and
 * re-list, the ledger's transactions, and `corekube status --json` through the real CLI. The SSH edge is
 * the in-memory machines of the unit tests: what is under test here is etcd, not systemd (the e2e tests
 * run the same overlord over real SSH into real machines).
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../core/clock.ts';
import { createEtcdStore } from '../../overlord/edges/etcd-store.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import { nodeStateKey, type NodeState } from '../../overlord/kubernetes/node-states.ts';
import { beginDeployment, parseLedgerEntry } from '../../contracts/ledger-entry.ts';
import { Ledger } from '../../overlord/deploy/ledger.ts';
import { silentLogger } from '../../overlord/edges/log.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import { runOverlord, type Overlord } from '../../overlord/term.ts';
import type { Store, WatchEvent } from '../../overlord/edges/store.ts';
import { etcdMissing, startEtcd, type EtcdServer } from '../../localcloud/etcd/etcd.ts';
import { freePort } from '../harness/ports.ts';
import { missingParts } from '../harness/requirements.ts';
import { startTcpProxy } from '../harness/tcp-proxy.ts';
import { FakeMachines, fakeUnits, makeRecord } from '../unit/overlord/fakes.ts';

const run = promisify(execFile);
const skip = missingParts(etcdMissing());
const root = path.resolve(import.meta.dirname, '../..');

/** Polls a condition of the world (etcd, the fake machines) until it holds. */
async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe.skipIf(skip)('overlord against a real etcd', () => {
  let etcd: EtcdServer;
  let store: Store;
  let raw: Etcd3;
  let n = 0;
  /** a fresh cluster prefix per test, so tests share one etcd without seeing each other */
  const cluster = () => `it${++n}-${process.pid}`;
  const announce = (c: string, r: MachineRecord) => raw.put(clusterKeys(c).machine(r.id)).value(JSON.stringify(r));
  const ledgerState = async (c: string, id: string) => {
    const text = await raw.get(clusterKeys(c).ledgerOf(id)).string();
    return text === null ? null : parseLedgerEntry(text)?.state ?? 'unparseable';
  };
  const start = (c: string, s: Store, hosts: FakeMachines, minions: number): Promise<Overlord> =>
    runOverlord(
      { store: s, hosts, clock: systemClock, log: silentLogger() },
      {
        cluster: c,
        sshUser: 'corekube',
        unitsFor: fakeUnits(),
        expected: { masters: 1, minions },
        concurrency: 4,
        executor: { poll: { initialMs: 5, factor: 1.5, maxMs: 50 } },
        retry: { retries: 1, initialMs: 10, factor: 2, maxMs: 50 },
      },
    );

  beforeAll(async () => {
    etcd = await startEtcd();
    store = createEtcdStore({ endpoints: [etcd.endpoints[0]!] });
    raw = new Etcd3(etcd.clientOptions());
  });

  afterAll(async () => {
    await store?.close();
    raw?.close();
    await etcd?.destroy();
  });

  describe('store adapter', () => {
    it('lists with the revision it read at, and puts with compare-and-swap on the mod revision', async () => {
      const keys = clusterKeys(cluster());
      const first = await store.put(keys.ledgerOf('a'), 'one', { expectModRevision: '0' });
      await expect(store.put(keys.ledgerOf('a'), 'again', { expectModRevision: '0' })).rejects.toMatchObject({ code: 'E_ETCD_CONFLICT', retryable: true });
      const second = await store.put(keys.ledgerOf('a'), 'two', { expectModRevision: first });
      await expect(store.put(keys.ledgerOf('a'), 'stale', { expectModRevision: first })).rejects.toMatchObject({ code: 'E_ETCD_CONFLICT' });
      const listing = await store.list(keys.ledger);
      expect(listing.kvs).toEqual([{ key: keys.ledgerOf('a'), value: 'two', modRevision: second, createRevision: first }]);
      expect(BigInt(listing.revision)).toBeGreaterThanOrEqual(BigInt(second));
      await store.delete(keys.ledgerOf('a'), { expectModRevision: second });
      expect(await store.get(keys.ledgerOf('a'))).toBeNull();
    });

    it('refuses a fenced write once the fence key is gone or was created again (E_NOT_LEADER)', async () => {
      const keys = clusterKeys(cluster());
      const rev = await store.put(keys.leader, 'overlord-a');
      const fence = { key: keys.leader, createRevision: rev };
      await store.put(keys.ledgerOf('m'), 'x', { fence });
      await raw.delete().key(keys.leader);
      await raw.put(keys.leader).value('overlord-b');
      await expect(store.put(keys.ledgerOf('m'), 'y', { fence })).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
      expect(await raw.get(keys.ledgerOf('m')).string()).toBe('x');
    });

    it('watches from a revision, and reports a watch lost when that revision was compacted', async () => {
      const keys = clusterKeys(cluster());
      const from = (await store.list(keys.machines)).revision;
      await raw.put(keys.machine('a')).value('1');
      const seen: WatchEvent[] = [];
      const w = await store.watch(keys.machines, String(BigInt(from) + 1n), { onEvents: (e) => seen.push(...e), onLost: () => undefined });
      await raw.delete().key(keys.machine('a'));
      await eventually('put and delete events', () => seen.length === 2);
      expect(seen.map((e) => e.type)).toEqual(['put', 'delete']);
      await w.cancel();

      const latest = (await store.list(keys.machines)).revision;
      await raw.put(keys.machine('b')).value('2');
      await raw.kv.compact({ revision: (await store.list(keys.machines)).revision, physical: true });
      let lost: string | undefined;
      await store.watch(keys.machines, latest, { onEvents: () => undefined, onLost: (reason) => (lost = reason) });
      await eventually('the watch to be reported lost', () => lost !== undefined);
      expect(lost).toMatch(/compact/);
    });

    it('converts an unreachable etcd into E_ETCD, retryable', async () => {
      const dead = createEtcdStore({ endpoints: [`http://127.0.0.1:${await freePort()}`], callTimeoutMs: 1_000 });
      await expect(dead.list('/corekube/')).rejects.toMatchObject({ code: 'E_ETCD', retryable: true });
      await dead.close();
    });
  });

  describe('ledger', () => {
    it('detects a concurrent write with a transaction conflict and re-reads the entry', async () => {
      const keys = clusterKeys(cluster());
      const r = makeRecord(1, 'master');
      const ledger = new Ledger(store, keys);
      await ledger.load();
      const entry = beginDeployment(null, r, { hash: 'h1', stepIds: ['write-units'] }, ['write-units'], new Date().toISOString());
      await ledger.write(entry);
      const theirs = { ...entry, unitsHash: 'h2' };
      await raw.put(keys.ledgerOf(r.id)).value(JSON.stringify(theirs));
      await expect(ledger.write({ ...entry, unitsHash: 'h3' })).rejects.toMatchObject({ code: 'E_ETCD_CONFLICT' });
      expect(ledger.get(r.id)?.unitsHash).toBe('h2');
      await ledger.write({ ...entry, unitsHash: 'h4' });
      expect(parseLedgerEntry((await raw.get(keys.ledgerOf(r.id)).string())!)?.unitsHash).toBe('h4');
    });
  });

  describe('discovery and the reconciler', () => {
    it('deploys machines that joined before and after it started', async () => {
      const c = cluster();
      const hosts = new FakeMachines();
      const master = makeRecord(1, 'master');
      const early = makeRecord(10, 'minion');
      const late = makeRecord(11, 'minion');
      await announce(c, master);
      await announce(c, early);
      const o = await start(c, store, hosts, 2);
      try {
        await eventually('the early machines deployed', async () => (await ledgerState(c, master.id)) === 'deployed' && (await ledgerState(c, early.id)) === 'deployed');
        await announce(c, late);
        await eventually('the late minion deployed', async () => (await ledgerState(c, late.id)) === 'deployed');
        await o.clusterReady;
        expect(o.discovery.lists).toBe(1);
        for (const r of [master, early, late]) expect([...hosts.machine(r.id).units.values()].every((u) => u.starts === 1 && u.activeState === 'active')).toBe(true);
      } finally {
        await o.stop();
      }
    });

    it('lists the machines again after its watch was lost to a compaction, and deploys what joined meanwhile', async () => {
      const c = cluster();
      const hosts = new FakeMachines();
      const proxy = await startTcpProxy(etcd.clientPort);
      const own = createEtcdStore({ endpoints: [proxy.endpoint], callTimeoutMs: 2_000 });
      const master = makeRecord(1, 'master');
      const minion = makeRecord(10, 'minion');
      await announce(c, master);
      const o = await start(c, own, hosts, 1);
      try {
        await eventually('the master deployed', async () => (await ledgerState(c, master.id)) === 'deployed');
        proxy.cut(); // the overlord's watch is cut off…
        await announce(c, minion); // …a machine joins…
        const now = (await raw.get('/').exec()).header.revision;
        await raw.kv.compact({ revision: now, physical: true }); // …and the history it missed is compacted
        proxy.restore();
        await eventually('the minion deployed', async () => (await ledgerState(c, minion.id)) === 'deployed', 40_000);
        expect(o.discovery.lists).toBeGreaterThanOrEqual(2);
      } finally {
        await o.stop();
        await own.close();
        await proxy.close();
      }
    });

    it('skips a malformed record and one with an unknown role, reports them, and deploys the rest', async () => {
      const c = cluster();
      const keys = clusterKeys(c);
      const hosts = new FakeMachines();
      const master = makeRecord(1, 'master');
      const unknownRole = makeRecord(20, 'minion');
      await announce(c, master);
      await raw.put(keys.machine(unknownRole.id)).value(JSON.stringify({ ...unknownRole, role: 'database' }));
      await raw.put(keys.machine('e'.repeat(32))).value('{"schema":1,');
      const o = await start(c, store, hosts, 0);
      try {
        await eventually('the master deployed', async () => (await ledgerState(c, master.id)) === 'deployed');
        await o.idle();
        expect(o.summary().text).toBe('1/1 machines deployed; 2 invalid records skipped');
        expect(await ledgerState(c, unknownRole.id)).toBeNull();
      } finally {
        await o.stop();
      }
    });
  });

  describe('corekube status', () => {
    it('prints exactly one JSON object with every machine in the documented shape', async () => {
      const c = cluster();
      const hosts = new FakeMachines();
      const master = makeRecord(1, 'master');
      const minion = makeRecord(10, 'minion');
      const failing = makeRecord(11, 'minion');
      hosts.machine(failing.id).behaviour.set('kubelet.service', { outcome: 'fail' });
      for (const r of [master, minion, failing]) await announce(c, r);
      await raw.put(clusterKeys(c).machine('e'.repeat(32))).value('not json');
      const o = await start(c, store, hosts, 2);
      await eventually('every machine settled', async () => (await ledgerState(c, minion.id)) === 'deployed' && (await ledgerState(c, failing.id)) === 'failed');
      await o.stop();
      // the minion's Node as the overlord's Kubernetes side records it (overlord/kubernetes/node-states.ts)
      const node: NodeState = { name: minion.hostname, ready: true, reason: '', podCIDR: '10.244.3.0/24', kubeletVersion: 'v1.36.5', since: '2026-01-01T00:00:00.000Z' };
      await raw.put(nodeStateKey(clusterKeys(c), minion.id)).value(JSON.stringify(node));

      const { stdout } = await run(process.execPath, [path.join(root, 'bin/corekube.js'), 'status', '--etcd-endpoints', etcd.endpoints[0]!, '--cluster', c, '--json'], { cwd: root });
      expect(stdout.trim().split('\n')).toHaveLength(1);
      const status = JSON.parse(stdout) as { machines: Record<string, unknown>[] };
      expect(Object.keys(status)).toEqual(['machines']);
      for (const m of status.machines) expect(Object.keys(m)).toEqual(['id', 'role', 'ip', 'state', 'step', 'error', 'subnet', 'node', 'certificatesExpire']);
      expect(status.machines).toEqual([
        { id: master.id, role: 'master', ip: master.ip, state: 'deployed', step: null, error: null, subnet: null, node: null, certificatesExpire: null },
        { id: minion.id, role: 'minion', ip: minion.ip, state: 'deployed', step: null, error: null, subnet: null, node, certificatesExpire: null },
        { id: failing.id, role: 'minion', ip: failing.ip, state: 'failed', step: 'start:kubelet.service', error: expect.stringContaining('E_UNIT_FAILED: kubelet.service failed'), subnet: null, node: null, certificatesExpire: null },
        { id: 'e'.repeat(32), role: null, ip: null, state: 'failed', step: null, error: 'skipped: record value is not JSON (got "not json")', subnet: null, node: null, certificatesExpire: null },
      ]);
    });

    it('reads an etcd with TLS and client-cert auth given --etcd-ca/--etcd-cert/--etcd-key', async () => {
      const secure = await startEtcd({ tls: true });
      try {
        const tls = secure.tls!;
        const c = cluster();
        const client = new Etcd3(secure.clientOptions());
        const master = makeRecord(1, 'master');
        await client.put(clusterKeys(c).machine(master.id)).value(JSON.stringify(master));
        client.close();
        const args = ['status', '--etcd-endpoints', secure.endpoints[0]!, '--etcd-ca', tls.caFile, '--etcd-cert', tls.certFile, '--etcd-key', tls.keyFile, '--cluster', c];
        const { stdout } = await run(process.execPath, [path.join(root, 'bin/corekube.js'), ...args, '--json'], { cwd: root });
        expect(JSON.parse(stdout)).toEqual({ machines: [{ id: master.id, role: 'master', ip: master.ip, state: 'pending', step: null, error: null, subnet: null, node: null, certificatesExpire: null }] });
        const table = await run(process.execPath, [path.join(root, 'bin/corekube.js'), ...args], { cwd: root });
        expect(table.stdout).toContain('1 machines: 0 deployed, 0 deploying, 1 pending, 0 failed');
      } finally {
        await secure.destroy();
      }
    });
  });
});
