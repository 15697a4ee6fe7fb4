/**
 * Admission (overlord/discovery/admission.ts): a node holding only the join token asks to join at join/<id>; the
 * overlord checks the request, has the machine at its address prove it is that id (machine id and join nonce over
 * SSH, host key checked in the handshake), records its identity, makes its own discovery user, delivers the
 * credentials and restarts its announce. Fake etcd and machines (placed at addresses: a command to an address
 * reaches the machine there, whatever id it names); the real etcd side is in
 * test/integration/discovery-trust.test.ts, the whole path on real machines in test/adversarial/.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Admission, ANNOUNCE_UNIT } from '../../../overlord/discovery/admission.ts';
import { IdentityBook, machineAddresses, parseAdmittedIdentity } from '../../../overlord/discovery/identity.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { silentLogger, type Logger } from '../../../overlord/edges/log.ts';
import { credentialsFile, machinePassword, type MachineCredentials } from '../../../overlord/trust/machine-credentials.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { DISCOVERY_CLIENT_PATHS } from '../../../units/pki-paths.ts';
import { syntheticHostKey, syntheticNonce } from '../../../localcloud/identities.ts';
import { captureLog } from '../../harness/log-capture.ts';
import { FakeClock, FakeMachines, flush, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const SECRET = 'cd'.repeat(32);
/** the spec's private network 10.240.0.0/16: machines from 10.240.0.32 */
const ADDRESSES = machineAddresses(parseClusterSpec({ flags: {} }));

class FakeCredentials implements MachineCredentials {
  /** machine id → the subnet its role was last brought to ('' = none) */
  readonly users = new Map<string, string>();
  fileFor(id: string) {
    return credentialsFile(id, machinePassword(SECRET, id));
  }
  async ensure(id: string, subnet?: string) {
    this.users.set(id, subnet ?? '');
    return [`created user machine-${id}`];
  }
  async remove(id: string) {
    return this.users.delete(id);
  }
}

let admission: Admission | undefined;
afterEach(async () => {
  await admission?.stop();
  admission = undefined;
});

function world(options: { log?: Logger; moved?: Map<string, MachineRecord>; maxPending?: number; rate?: { perSecond: number; burst: number } } = {}) {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const hosts = new FakeMachines();
  const credentials = new FakeCredentials();
  const book = new IdentityBook();
  const moved = options.moved ?? new Map<string, MachineRecord>();
  admission = new Admission(
    { store, hosts, credentials, keys, log: options.log ?? silentLogger(), clock, book, machines: { moved: () => moved } },
    { remote: { user: 'corekube' }, addresses: ADDRESSES, backoff: { initialMs: 1_000, maxMs: 4_000 }, ...(options.maxPending ? { maxPending: options.maxPending } : {}), ...(options.rate ? { rate: options.rate } : {}) },
  );
  const ask = (r: MachineRecord) => store.put(keys.joinOf(r.id), JSON.stringify(r));
  const settle = async () => {
    await flush(20);
    await admission!.idle();
    await flush(5);
  };
  /** what every machine has seen: files written and announce restarts */
  const touched = () => [...hosts.machines.values()].filter((m) => m.files.size > 0 || m.starts(ANNOUNCE_UNIT) > 0).map((m) => m.id);
  return { store, clock, hosts, credentials, book, admission, ask, settle, touched, moved };
}

/** A node n at 10.240.0.(32+n) with its own host key and join nonce, and its join request. */
function node(w: ReturnType<typeof world>, n: number, role: 'master' | 'minion' = 'minion') {
  const id = makeRecord(n, role).id;
  const hostKey = syntheticHostKey(id);
  const { nonce, digest } = syntheticNonce(id);
  const request = makeRecord(n, role, { sshHostKey: hostKey, nonceDigest: digest });
  const machine = w.hosts.place(id, { ip: request.ip, hostKey, nonce });
  return { id, request, machine, hostKey };
}

describe('admission of join requests', () => {
  it('admits a machine that proves it is the id that asked: its identity recorded, its own discovery user, credentials and a restarted announce, its key pinned, the request cleared', async () => {
    const w = world();
    const minion = node(w, 1);
    await w.admission.start();
    await w.ask(minion.request);
    await w.settle();

    expect(w.credentials.users.get(minion.id)).toBe('');
    expect(minion.machine.files.get(DISCOVERY_CLIENT_PATHS.credentials)).toEqual({ content: `FLANNELD_ETCD_USERNAME=machine-${minion.id}\nFLANNELD_ETCD_PASSWORD=${machinePassword(SECRET, minion.id)}\n`, mode: '0600' });
    expect(minion.machine.starts(ANNOUNCE_UNIT)).toBe(1);
    expect(parseAdmittedIdentity(minion.id, (await w.store.get(keys.admittedOf(minion.id)))!.value)).toMatchObject({ ip: minion.request.ip, hostKey: minion.hostKey });
    expect((await w.store.get(keys.hostkeyOf(minion.id)))?.value).toBe(minion.hostKey);
    expect(w.book.get(minion.id)?.ip).toBe(minion.request.ip);
    expect(await w.store.get(keys.joinOf(minion.id))).toBeNull();
    expect(w.admission.admitted).toBe(1);
  });

  it('admits requests that were there before it started, each once', async () => {
    const w = world();
    const a = node(w, 1, 'master');
    const b = node(w, 2);
    await w.ask(a.request);
    await w.ask(b.request);
    await w.admission.start();
    await w.settle();
    expect([...w.credentials.users.keys()].sort()).toEqual([a.id, b.id].sort());
    expect(a.machine.starts(ANNOUNCE_UNIT)).toBe(1);
    expect(b.machine.starts(ANNOUNCE_UNIT)).toBe(1);
  });

  it('refuses a made-up machine id carrying a victim\'s address and host key: the machine there is another id, so no user, no identity, no pin and nothing written on the victim', async () => {
    const capture = captureLog();
    const w = world({ log: capture.log });
    const victim = node(w, 1);
    const madeUp = 'bad0'.repeat(8);
    await w.admission.start();
    await w.ask({ ...victim.request, id: madeUp });
    await w.ask({ ...victim.request, id: 'bad1'.repeat(8), nonceDigest: syntheticNonce('guess').digest });
    await w.settle();

    expect(w.credentials.users.size).toBe(0);
    expect(w.touched()).toEqual([]);
    expect(await w.store.get(keys.hostkeyOf(madeUp))).toBeNull();
    expect(await w.store.get(keys.admittedOf(madeUp))).toBeNull();
    const refused = capture.events().filter((e) => e.event === 'join.refused');
    expect(refused.map((e) => [e.machine, e.field])).toEqual(expect.arrayContaining([[madeUp, 'id'], ['bad1'.repeat(8), 'id']]));
  });

  it('refuses a request with every public fact of a machine right but a nonce digest the machine does not hold: only the machine itself can ask', async () => {
    const capture = captureLog();
    const w = world({ log: capture.log });
    const m = node(w, 1);
    await w.admission.start();
    await w.ask({ ...m.request, nonceDigest: syntheticNonce('someone else').digest });
    await w.settle();
    expect(w.credentials.users.size).toBe(0);
    expect(w.touched()).toEqual([]);
    expect(capture.event('join.refused')).toMatchObject({ machine: m.id, field: 'nonceDigest' });
  });

  it('refuses, before connecting anywhere, an address outside the cluster\'s machine addresses or admitted to another machine, a host key of another machine, and a request without host key or nonce digest — each naming the field', async () => {
    const capture = captureLog();
    const w = world({ log: capture.log });
    const admitted = node(w, 1);
    await w.admission.start();
    await w.ask(admitted.request);
    await w.settle();
    const ran = () => [...w.hosts.machines.values()].reduce((n, m) => n + m.log.length, 0);
    const before = ran();

    const fresh = (n: number, extra: Partial<MachineRecord>) => makeRecord(n, 'minion', { sshHostKey: syntheticHostKey(`k${n}`), nonceDigest: syntheticNonce(`n${n}`).digest, ...extra });
    const cases: [MachineRecord, string][] = [
      [fresh(2, { ip: '8.8.8.8' }), 'ip'],
      [fresh(3, { ip: '169.254.169.254' }), 'ip'],
      [fresh(4, { ip: '127.0.0.1' }), 'ip'],
      [fresh(5, { ip: '10.240.0.10' }), 'ip'], // discovery's address: below the machines' range
      [fresh(6, { ip: '10.244.1.5' }), 'ip'], // the pod network
      [fresh(7, { ip: admitted.request.ip }), 'ip'],
      [fresh(8, { sshHostKey: admitted.hostKey }), 'sshHostKey'],
    ];
    const { sshHostKey: _k, ...noKey } = fresh(9, {});
    const { nonceDigest: _n, ...noNonce } = fresh(10, {});
    for (const [r] of cases) await w.ask(r);
    await w.store.put(keys.joinOf(noKey.id), JSON.stringify(noKey));
    await w.store.put(keys.joinOf(noNonce.id), JSON.stringify(noNonce));
    await w.settle();

    expect(ran()).toBe(before);
    expect([...w.credentials.users.keys()]).toEqual([admitted.id]);
    const refused = new Map(capture.events().filter((e) => e.event === 'join.refused').map((e) => [e.machine, e.field]));
    for (const [r, field] of cases) expect(refused.get(r.id), r.ip).toBe(field);
    expect(refused.get(noKey.id)).toBe('sshHostKey');
    expect(refused.get(noNonce.id)).toBe('nonceDigest');
  });

  it('refuses a request for a known machine id that carries another host key: no user, no file, the pin unchanged', async () => {
    const w = world();
    const victim = node(w, 1);
    await w.store.put(keys.hostkeyOf(victim.id), victim.hostKey);
    await w.book.start({ store: w.store, keys, log: silentLogger(), clock: w.clock });
    const impostorKey = syntheticHostKey('impostor');
    w.hosts.place('impostor', { ip: '10.240.0.99', hostKey: impostorKey, nonce: syntheticNonce('impostor').nonce });
    await w.admission.start();
    await w.ask({ ...victim.request, sshHostKey: impostorKey, ip: '10.240.0.99', nonceDigest: syntheticNonce('impostor').digest });
    await w.settle();
    expect(w.credentials.users.has(victim.id)).toBe(false);
    expect(w.touched()).toEqual([]);
    expect((await w.store.get(keys.hostkeyOf(victim.id)))?.value).toBe(victim.hostKey);
    expect(w.admission.admitted).toBe(0);
  });

  it('re-admits a known machine that proves the pinned key (it lost its credentials), keeping its subnet grant', async () => {
    const w = world();
    const back = node(w, 1);
    await w.store.put(keys.hostkeyOf(back.id), back.hostKey);
    await w.store.put(keys.subnetOf(back.id), '10.244.7.0-24');
    await w.book.start({ store: w.store, keys, log: silentLogger(), clock: w.clock });
    await w.admission.start();
    await w.ask(back.request);
    await w.settle();
    expect(w.credentials.users.get(back.id)).toBe('10.244.7.0-24');
    expect(back.machine.starts(ANNOUNCE_UNIT)).toBe(1);
  });

  it('retries a machine it cannot reach yet with backoff, and admits it once it answers', async () => {
    const w = world();
    const slow = node(w, 1);
    slow.machine.reachable = false;
    await w.admission.start();
    await w.ask(slow.request);
    await flush(20);
    expect(w.admission.admitted).toBe(0);
    expect(await w.store.get(keys.joinOf(slow.id))).not.toBeNull();
    await w.clock.next(); // first backoff: still unreachable
    await flush(20);
    expect(w.admission.admitted).toBe(0);
    slow.machine.reachable = true;
    await w.clock.next();
    await w.settle();
    expect(w.admission.admitted).toBe(1);
    expect(await w.store.get(keys.joinOf(slow.id))).toBeNull();
  });

  it('skips a malformed request and admits the others', async () => {
    const w = world();
    const good = node(w, 2);
    await w.store.put(keys.joinOf('0'.repeat(31) + '1'), '{"schema":1,"role":"emperor"}');
    await w.ask(good.request);
    await w.admission.start();
    await w.settle();
    expect([...w.credentials.users.keys()]).toEqual([good.id]);
  });

  it('logs one line for a refused request however often it is rewritten with the same problem', async () => {
    const capture = captureLog();
    const w = world({ log: capture.log });
    const m = node(w, 1);
    await w.admission.start();
    for (let i = 0; i < 20; i++) {
      await w.ask({ ...m.request, ip: `8.8.8.${i}` });
      await w.settle();
    }
    expect(capture.events().filter((e) => e.event === 'join.refused')).toHaveLength(1);
  });

  it('tracks at most maxPending requests and starts at most `rate` attempts a second: the rest wait, with one line', async () => {
    const capture = captureLog();
    const w = world({ log: capture.log, maxPending: 4, rate: { perSecond: 2, burst: 2 } });
    const nodes = Array.from({ length: 6 }, (_, i) => node(w, i + 1));
    await w.admission.start();
    for (const n of nodes) await w.ask(n.request);
    await w.settle();
    expect(w.admission.admitted).toBe(2); // the burst
    expect(capture.event('join.deferred')).toBeDefined();
    await w.clock.runUntil(() => w.admission!.admitted === 6);
    await w.settle();
    expect(w.credentials.users.size).toBe(6);
  });

  it('moves an admitted machine whose record names a new address once it proves its identity there; nothing is written to it', async () => {
    const w = world();
    const m = node(w, 1);
    await w.admission.start();
    await w.ask(m.request);
    await w.settle();
    const files = m.machine.files.size;
    const restarts = m.machine.starts(ANNOUNCE_UNIT);
    // its port changed: the same machine now answers at another address
    w.hosts.addresses.delete(m.request.ip);
    w.hosts.addresses.set('10.240.0.77', m.machine);
    w.moved.set(m.id, { ...m.request, ip: '10.240.0.77' });
    w.admission.pass();
    await w.settle();
    expect(w.book.get(m.id)?.ip).toBe('10.240.0.77');
    expect(w.admission.moved).toBe(1);
    expect([m.machine.files.size, m.machine.starts(ANNOUNCE_UNIT)]).toEqual([files, restarts]);
  });

  it('does not move an admitted machine to an address where another machine answers', async () => {
    const capture = captureLog();
    const w = world({ log: capture.log });
    const m = node(w, 1);
    const other = node(w, 2);
    await w.admission.start();
    await w.ask(m.request);
    await w.settle();
    w.moved.set(m.id, { ...m.request, ip: other.request.ip });
    w.admission.pass();
    await w.settle();
    expect(w.book.get(m.id)?.ip).toBe(m.request.ip);
    expect(capture.event('machine.move-refused')).toMatchObject({ machine: m.id, field: 'sshHostKey' });
  });
});
