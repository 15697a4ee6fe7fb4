/**
 * Admitted identity is fixed (overlord/discovery/identity.ts, overlord/discovery/admitted-discovery.ts): the overlord deploys a
 * machine only at the address and with the host key it was admitted with, at addresses of the cluster's machines,
 * one machine an address. Fake etcd and machines placed at addresses (a command to an address reaches the
 * machine there, whatever id the overlord names); the real thing is test/adversarial/.
 */
import { describe, expect, it } from 'vitest';
import { addressProblem, admittedValue, machineAddresses } from '../../../overlord/discovery/identity.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { parseLedgerEntry } from '../../../contracts/ledger-entry.ts';
import type { Logger } from '../../../overlord/edges/log.ts';
import { credentialsFile, type MachineCredentials } from '../../../overlord/trust/machine-credentials.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { runOverlord, type Overlord, type OverlordOptions } from '../../../overlord/term.ts';
import { readStatus } from '../../../overlord/status.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { syntheticHostKey, syntheticNonce } from '../../../localcloud/identities.ts';
import { captureLog } from '../../harness/log-capture.ts';
import { FakeClock, FakeMachines, fakeUnits, flush, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const ADDRESSES = machineAddresses(parseClusterSpec({ flags: {} }));

const credentials: MachineCredentials = { fileFor: (id) => credentialsFile(id, 'ab'.repeat(32)), ensure: async () => [], remove: async () => false };

/** A node at 10.240.0.(32+n) with its own key and nonce; `admitted`: its identity recorded at its address. */
async function node(w: ReturnType<typeof world>, n: number, role: 'master' | 'minion', admitted = true) {
  const id = makeRecord(n, role).id;
  const hostKey = syntheticHostKey(id);
  const record = makeRecord(n, role, { sshHostKey: hostKey, nonceDigest: syntheticNonce(id).digest });
  const machine = w.hosts.place(id, { ip: record.ip, hostKey, nonce: syntheticNonce(id).nonce });
  if (admitted) {
    await w.store.put(keys.admittedOf(id), admittedValue({ id, role, ip: record.ip, hostKey, admittedAt: '2026-01-01T00:00:00Z' }));
    await w.store.put(keys.hostkeyOf(id), hostKey);
  }
  return { id, record, machine, hostKey };
}

function world(log?: Logger) {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const hosts = new FakeMachines();
  const capture = log ? undefined : captureLog();
  return {
    store,
    clock,
    hosts,
    capture,
    announce: (r: MachineRecord) => store.put(keys.machine(r.id), JSON.stringify(r)),
    start: (extra: Partial<OverlordOptions> = {}) =>
      runOverlord(
        { store, hosts, clock, log: log ?? capture!.log },
        { cluster: 't', sshUser: 'corekube', unitsFor: fakeUnits(), expected: { masters: 1, minions: 1 }, concurrency: 4, retry: { retries: 1, initialMs: 1_000, factor: 2, maxMs: 2_000 }, addresses: ADDRESSES, admission: { credentials }, ...extra },
      ),
  };
}

const ledgerState = (w: ReturnType<typeof world>, id: string) => {
  const kv = w.store.data.get(keys.ledgerOf(id));
  return kv ? parseLedgerEntry(kv.value)?.state : undefined;
};
async function settle(w: ReturnType<typeof world>, o: Overlord) {
  await flush(20);
  await w.clock.runUntil(() => o.summary().deploying === 0);
  await o.idle();
}

describe('admitted identity is fixed', () => {
  it('deploys admitted machines at their address with their admitted key', async () => {
    const w = world();
    const master = await node(w, 1, 'master');
    const minion = await node(w, 2, 'minion');
    for (const m of [master, minion]) await w.announce(m.record);
    const o = await w.start();
    await settle(w, o);
    expect([ledgerState(w, master.id), ledgerState(w, minion.id)]).toEqual(['deployed', 'deployed']);
    expect(minion.machine.files.size).toBeGreaterThan(0);
    await o.stop();
  });

  it('ignores an admitted node that rewrites its record with another node\'s address and host key: nothing is deployed on that node, a line names the field', async () => {
    const w = world();
    const master = await node(w, 1, 'master');
    const victim = await node(w, 2, 'minion');
    const attacker = await node(w, 3, 'minion');
    for (const m of [master, victim, attacker]) await w.announce(m.record);
    const o = await w.start({ expected: { masters: 1, minions: 2 } });
    await settle(w, o);
    const victimFiles = new Map(victim.machine.files);
    // a new boot, so that the overlord would deploy it again
    await w.announce({ ...attacker.record, ip: victim.record.ip, sshHostKey: victim.hostKey, bootId: 'b'.repeat(32) });
    await w.announce({ ...attacker.record, ip: victim.record.ip, bootId: 'c'.repeat(32) });
    await w.announce({ ...attacker.record, sshHostKey: victim.hostKey, bootId: 'd'.repeat(32) });
    await settle(w, o);
    // nor can it make itself a master (and get a master's units and certificates)
    await w.announce({ ...attacker.record, role: 'master', bootId: 'f'.repeat(32) });
    await settle(w, o);
    expect(w.capture!.events().filter((e) => e.event === 'machine.refused' && e.machine === attacker.id && e.field === 'role')).toHaveLength(1);
    expect([...attacker.machine.files.values()].some((f) => f.content.includes('kube-apiserver'))).toBe(false);

    expect(victim.machine.files).toEqual(victimFiles);
    expect([...victim.machine.files.values()].some((f) => f.content.includes(`minion-3`))).toBe(false);
    const refused = w.capture!.events().filter((e) => e.event === 'machine.refused' && e.machine === attacker.id);
    expect(refused.map((e) => e.field)).toEqual(expect.arrayContaining(['ip', 'sshHostKey', 'role']));
    expect(o.discovery.snapshot().invalid.get(attacker.id)?.field).toBe('role');
    expect(ledgerState(w, victim.id)).toBe('deployed');
    // `corekube status` shows it as admitted, and what its record says instead
    const row = (await readStatus(w.store, keys)).machines.find((r) => r.id === attacker.id);
    expect(row).toMatchObject({ role: 'minion', ip: attacker.record.ip, state: 'failed', error: 'skipped: record role master is not the role the machine was admitted as (minion)' });
    await o.stop();
  });

  it.each([
    ['8.8.8.8'],
    ['127.0.0.1'],
    ['169.254.169.254'],
    ['10.244.3.1'], // the pod network
    ['10.96.0.1'], // the service network
    ['10.240.0.10'], // discovery
    ['10.240.0.11'], // the overlord
    ['10.240.0.12'], // the API load balancer's VIP
    ['10.240.0.25'], // past the masters' five fixed addresses
    ['10.240.255.255'], // broadcast
  ])('never deploys to %s, a record names it as it may', async (ip) => {
    const w = world();
    const master = await node(w, 1, 'master', false);
    await w.announce({ ...master.record, ip });
    const o = await w.start({ admission: undefined, expected: { masters: 1, minions: 0 } });
    await settle(w, o);
    expect(ledgerState(w, master.id)).toBeUndefined();
    expect(w.capture!.event('machine.refused')).toMatchObject({ machine: master.id, field: 'ip' });
    await o.stop();
  });

  it('deploys a master at its fixed address (the address plan\'s .20 to .24, outside DHCP)', () => {
    for (const ip of ['10.240.0.20', '10.240.0.24', '10.240.0.32']) expect(addressProblem(ip, ADDRESSES), ip).toBeUndefined();
    expect(addressProblem('10.240.0.25', ADDRESSES)).toBe('is not a machine address of the cluster (masters 10.240.0.20 to 10.240.0.24, other machines 10.240.0.32 to 10.240.255.254)');
  });

  it('deploys no two records that name one address (neither is admitted there), and none at an address admitted to another machine', async () => {
    const w = world();
    const master = await node(w, 1, 'master', false);
    const a = makeRecord(2, 'minion', { ip: '10.240.0.50' });
    const b = makeRecord(3, 'minion', { ip: '10.240.0.50' });
    const c = makeRecord(4, 'minion', { ip: master.record.ip });
    for (const r of [master.record, a, b, c]) await w.announce(r);
    await w.store.put(keys.admittedOf(master.id), admittedValue({ id: master.id, role: 'master', ip: master.record.ip, hostKey: master.hostKey, admittedAt: '2026-01-01T00:00:00Z' }));
    const o = await w.start({ admission: undefined });
    await settle(w, o);
    const invalid = o.discovery.snapshot().invalid;
    expect([a.id, b.id, c.id].map((id) => invalid.get(id)?.field)).toEqual(['ip', 'ip', 'ip']);
    expect(ledgerState(w, master.id)).toBe('deployed');
    await o.stop();
  });

  it('where nodes are admitted, does not deploy a record of a machine never admitted', async () => {
    const w = world();
    const master = await node(w, 1, 'master', false);
    await w.announce(master.record);
    const o = await w.start();
    await settle(w, o);
    expect(ledgerState(w, master.id)).toBeUndefined();
    expect(o.discovery.snapshot().invalid.get(master.id)).toMatchObject({ field: 'id', reason: 'record id has not been admitted' });
    await o.stop();
  });

  it('deploys a machine admitted before identities were recorded once it proves its pinned key at its address (its identity is then recorded)', async () => {
    const w = world();
    const master = await node(w, 1, 'master', false);
    await w.store.put(keys.hostkeyOf(master.id), master.hostKey);
    const { sshHostKey: _none, ...record } = master.record;
    await w.announce(record as MachineRecord);
    const o = await w.start({ expected: { masters: 1, minions: 0 } });
    await settle(w, o);
    expect(w.store.data.get(keys.admittedOf(master.id))?.value).toContain(master.record.ip);
    expect(ledgerState(w, master.id)).toBe('deployed');
    await o.stop();
  });

  it('deploys a machine whose address really changed at its new address, once it proved its identity there', async () => {
    const w = world();
    const master = await node(w, 1, 'master');
    await w.announce(master.record);
    const o = await w.start({ expected: { masters: 1, minions: 0 } });
    await settle(w, o);
    // its port changed: the same machine answers at a new address, and its record says so
    w.hosts.addresses.delete(master.record.ip);
    w.hosts.addresses.set('10.240.0.90', master.machine);
    await w.announce({ ...master.record, ip: '10.240.0.90', bootId: 'e'.repeat(32) });
    await settle(w, o);
    expect(w.capture!.event('machine.moved')).toMatchObject({ machine: master.id, ip: '10.240.0.90', from: master.record.ip });
    expect(o.discovery.snapshot().records.get(master.id)?.ip).toBe('10.240.0.90');
    expect(ledgerState(w, master.id)).toBe('deployed');
    await o.stop();
  });
  it('admits a rebuilt machine anew once an operator deletes its admitted/ and hostkeys/ keys, without a restart of the overlord', async () => {
    const w = world();
    const master = await node(w, 1, 'master');
    await w.announce(master.record);
    const o = await w.start({ expected: { masters: 1, minions: 0 } });
    await settle(w, o);
    // rebuilt: same machine id and address, a new host key and join nonce
    const newKey = syntheticHostKey('rebuilt');
    w.hosts.place(master.id, { ip: master.record.ip, hostKey: newKey, nonce: syntheticNonce('rebuilt').nonce });
    const ask = (at: string) => w.store.put(keys.joinOf(master.id), JSON.stringify({ ...master.record, sshHostKey: newKey, nonceDigest: syntheticNonce('rebuilt').digest, announcedAt: at }));
    await ask('2026-01-02T00:00:00Z');
    await settle(w, o);
    expect(w.capture!.event('join.refused')).toMatchObject({ machine: master.id, field: 'sshHostKey', code: 'E_SSH_HOSTKEY' });
    await w.store.delete(keys.admittedOf(master.id));
    await w.store.delete(keys.hostkeyOf(master.id));
    await ask('2026-01-02T00:01:00Z');
    await settle(w, o);
    expect(w.capture!.event('machine.admitted')).toMatchObject({ machine: master.id });
    expect(w.store.data.get(keys.admittedOf(master.id))?.value).toContain(newKey.split(' ')[1]);
    await o.stop();
  });
});
