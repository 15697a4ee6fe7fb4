/**
 * Admission (overlord/admission.ts): a node holding only the join token asks to join at join/<id>; the
 * overlord checks its host key, makes its own discovery user, delivers the credentials over SSH and restarts
 * its announce. Fake etcd and machines; the real etcd side is in test/integration/machine-credentials.test.ts
 * and the whole path on real machines in test/integration/discovery-trust-boot.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Admission, ANNOUNCE_UNIT } from '../../../overlord/admission.ts';
import { clusterKeys } from '../../../overlord/keys.ts';
import { silentLogger } from '../../../overlord/log.ts';
import { credentialsFile, machinePassword, type MachineCredentials } from '../../../overlord/machine-credentials.ts';
import type { MachineRecord } from '../../../overlord/machine-record.ts';
import { DISCOVERY_CLIENT_PATHS } from '../../../units/pki-paths.ts';
import { FakeClock, FakeMachines, flush, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const SECRET = 'cd'.repeat(32);
const KEY_A = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const KEY_B = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB';

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
}

let admission: Admission | undefined;
afterEach(async () => {
  await admission?.stop();
  admission = undefined;
});

function world() {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const hosts = new FakeMachines();
  const credentials = new FakeCredentials();
  admission = new Admission({ store, hosts, credentials, keys, log: silentLogger(), clock }, { remote: { user: 'corekube' }, backoffMs: { initial: 1_000, max: 4_000 } });
  const ask = (r: MachineRecord) => store.put(keys.joinOf(r.id), JSON.stringify(r));
  return { store, clock, hosts, credentials, admission, ask };
}

describe('admission of join requests', () => {
  it('gives a joining machine its own discovery user over SSH, restarts its announce, pins its host key and clears the request', async () => {
    const w = world();
    const minion = makeRecord(1, 'minion', { sshHostKey: KEY_A });
    await w.admission.start();
    await w.ask(minion);
    await flush(20);
    await w.admission.idle();

    expect(w.credentials.users.get(minion.id)).toBe('');
    const m = w.hosts.machine(minion.id);
    expect(m.files.get(DISCOVERY_CLIENT_PATHS.credentials)).toEqual({ content: `FLANNELD_ETCD_USERNAME=machine-${minion.id}\nFLANNELD_ETCD_PASSWORD=${machinePassword(SECRET, minion.id)}\n`, mode: '0600' });
    expect(m.starts(ANNOUNCE_UNIT)).toBe(1);
    expect((await w.store.get(keys.hostkeyOf(minion.id)))?.value).toBe(KEY_A);
    expect(await w.store.get(keys.joinOf(minion.id))).toBeNull();
    expect(w.admission.admitted).toBe(1);
  });

  it('admits requests that were there before it started, each once', async () => {
    const w = world();
    const a = makeRecord(1, 'master', { sshHostKey: KEY_A });
    const b = makeRecord(2, 'minion', { sshHostKey: KEY_B });
    await w.ask(a);
    await w.ask(b);
    await w.admission.start();
    await flush(20);
    await w.admission.idle();
    expect([...w.credentials.users.keys()].sort()).toEqual([a.id, b.id]);
    expect(w.hosts.machine(a.id).starts(ANNOUNCE_UNIT)).toBe(1);
    expect(w.hosts.machine(b.id).starts(ANNOUNCE_UNIT)).toBe(1);
  });

  it('refuses a request for a known machine id that carries another host key: no user, no file, the pin unchanged', async () => {
    const w = world();
    const victim = makeRecord(1, 'minion', { sshHostKey: KEY_A });
    await w.store.put(keys.hostkeyOf(victim.id), KEY_A);
    const impostor = makeRecord(1, 'minion', { sshHostKey: KEY_B, ip: '10.240.0.99' });
    await w.admission.start();
    await w.ask(impostor);
    await flush(20);
    await w.admission.idle();
    expect(w.credentials.users.has(victim.id)).toBe(false);
    expect(w.hosts.machine(victim.id).files.size).toBe(0);
    expect((await w.store.get(keys.hostkeyOf(victim.id)))?.value).toBe(KEY_A);
    expect(w.admission.admitted).toBe(0);
  });

  it('also takes the key of a machine record already announced as the pin', async () => {
    const w = world();
    const known = makeRecord(1, 'minion', { sshHostKey: KEY_A });
    await w.store.put(keys.machine(known.id), JSON.stringify(known));
    await w.admission.start();
    await w.ask(makeRecord(1, 'minion', { sshHostKey: KEY_B }));
    await flush(20);
    await w.admission.idle();
    expect(w.credentials.users.size).toBe(0);
  });

  it('re-admits a known machine that proves the pinned key (it lost its credentials), keeping its subnet grant', async () => {
    const w = world();
    const back = makeRecord(1, 'minion', { sshHostKey: KEY_A });
    await w.store.put(keys.hostkeyOf(back.id), KEY_A);
    await w.store.put(keys.subnetOf(back.id), '10.244.7.0-24');
    await w.admission.start();
    await w.ask(back);
    await flush(20);
    await w.admission.idle();
    expect(w.credentials.users.get(back.id)).toBe('10.244.7.0-24');
    expect(w.hosts.machine(back.id).starts(ANNOUNCE_UNIT)).toBe(1);
  });

  it('retries a machine it cannot reach yet with backoff, and admits it once it answers', async () => {
    const w = world();
    const slow = makeRecord(1, 'minion', { sshHostKey: KEY_A });
    w.hosts.machine(slow.id).reachable = false;
    await w.admission.start();
    await w.ask(slow);
    await flush(20);
    expect(w.admission.admitted).toBe(0);
    expect(await w.store.get(keys.joinOf(slow.id))).not.toBeNull();
    await w.clock.next(); // first backoff: still unreachable
    await flush(20);
    expect(w.admission.admitted).toBe(0);
    w.hosts.machine(slow.id).reachable = true;
    await w.clock.next();
    await flush(20);
    await w.admission.idle();
    expect(w.admission.admitted).toBe(1);
    expect(await w.store.get(keys.joinOf(slow.id))).toBeNull();
  });

  it('skips a malformed request and admits the others', async () => {
    const w = world();
    const good = makeRecord(2, 'minion', { sshHostKey: KEY_B });
    await w.store.put(keys.joinOf('0'.repeat(31) + '1'), '{"schema":1,"role":"emperor"}');
    await w.ask(good);
    await w.admission.start();
    await flush(20);
    await w.admission.idle();
    expect([...w.credentials.users.keys()]).toEqual([good.id]);
  });
});
