import { describe, expect, it } from 'vitest';
import { additionProblem, bootstrapEnv, healthyMembers, initialClusterOf, parseMemberList, removalProblem, type EtcdMember } from '../../../contracts/etcd-members.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { parseRemovalRequest, type RemovalRequest } from '../../../contracts/removal.ts';
import type { ClusterView, RenderedUnits } from '../../../contracts/step.ts';
import { EtcdMembers } from '../../../overlord/edges/etcd-members.ts';
import { etcdctl } from '../../../overlord/edges/remote-commands.ts';
import { silentLogger } from '../../../overlord/edges/log.ts';
import { runOverlord } from '../../../overlord/term.ts';
import { FakeClock, FakeMachines, flush, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const member = (n: number, extra: Partial<EtcdMember> = {}): EtcdMember => ({
  id: `a${n}`, name: `etcd-10-240-0-${20 + n}`, peerUrls: [`https://10.240.0.${20 + n}:2380`], clientUrls: [`https://10.240.0.${20 + n}:2379`], isLearner: false, ...extra,
});
const health = (...up: EtcdMember[]) => up.map((m) => ({ endpoint: m.clientUrls[0]!, health: true }));

describe('etcd membership rules', () => {
  it('reads etcdctl\'s member list, its 64-bit ids exactly (in hex), a learner, an unstarted member without name or client URL', () => {
    // what etcd v3.6.17's etcdctl printed for a cluster with a learner added and not started yet
    const out = '{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"raft_term":2},"members":[{"ID":1684978529181980416,"name":"","peerURLs":["https://10.240.0.21:2380"],"clientURLs":null,"isLearner":true},{"ID":3319814642761637952,"name":"etcd-10-240-0-20","peerURLs":["https://10.240.0.20:2380"],"clientURLs":["https://10.240.0.20:2379"]}]}';
    expect(parseMemberList(out)).toEqual([
      { id: '17623f0b7e0d5700', name: '', peerUrls: ['https://10.240.0.21:2380'], clientUrls: [], isLearner: true },
      { id: '2e1259d415f2a040', name: 'etcd-10-240-0-20', peerUrls: ['https://10.240.0.20:2380'], clientUrls: ['https://10.240.0.20:2379'], isLearner: false },
    ]);
    expect(parseMemberList('{"members":[{"ID":13563238525856666716,"name":"x"}]}')?.[0]?.id).toBe('bc3a4d940194545c');
    expect(parseMemberList('{"members":[{"ID":"2e1259d415f2a040"}]}')).toBeUndefined(); // --hex output: no learner flag, refused
    expect(parseMemberList('Error: context deadline exceeded')).toBeUndefined();
  });

  it('gives a joining member exactly the member list, names derived from the addresses (an unstarted member has none)', () => {
    expect(initialClusterOf([member(1), member(0), member(2, { name: '', clientUrls: [] })])).toBe(
      'etcd-10-240-0-20=https://10.240.0.20:2380,etcd-10-240-0-21=https://10.240.0.21:2380,etcd-10-240-0-22=https://10.240.0.22:2380',
    );
    expect(bootstrapEnv('existing', 'etcd-10-240-0-20=https://10.240.0.20:2380')).toContain('\nETCD_INITIAL_CLUSTER_STATE=existing\nETCD_INITIAL_CLUSTER=etcd-10-240-0-20=https://10.240.0.20:2380\n');
    expect(() => bootstrapEnv('new', 'a=b\nETCD_X=1')).toThrow(/environment file/);
  });

  it("asks a master's own etcd with the API server's client certificate, adds learners, and takes no value that is not one", () => {
    const base = ['/opt/corekube/bin/etcdctl', '--endpoints=https://127.0.0.1:2379', '--cacert=/etc/corekube/pki/etcd-ca.crt', '--cert=/etc/corekube/pki/apiserver-etcd-client.crt', '--key=/etc/corekube/pki/apiserver-etcd-client.key'];
    expect(etcdctl({ user: 'corekube' }, { op: 'member-add', name: 'etcd-10-240-0-22', peerUrl: 'https://10.240.0.22:2380' })).toEqual(['sudo', '-n', ...base, '--command-timeout=15s', '-w', 'json', 'member', 'add', 'etcd-10-240-0-22', '--peer-urls=https://10.240.0.22:2380', '--learner']);
    expect(etcdctl({ user: 'root' }, { op: 'endpoint-health' })).toEqual([...base, '--command-timeout=5s', '-w', 'json', 'endpoint', 'health', '--cluster']);
    expect(etcdctl({ user: 'root' }, { op: 'member-promote', id: '17623f0b7e0d5700' }).slice(-3)).toEqual(['member', 'promote', '17623f0b7e0d5700']);
    expect(() => etcdctl({ user: 'root' }, { op: 'member-remove', id: '1; rm -rf /' })).toThrow(/not a hex member id/);
    expect(() => etcdctl({ user: 'root' }, { op: 'member-add', name: 'x', peerUrl: 'https://10.0.0.1:2380 --x' })).toThrow(/not a peer URL/);
  });

  it('refuses a removal that leaves etcd without a quorum of healthy members, or without members', () => {
    const three = [member(0), member(1), member(2)];
    // one of three lost: removing it leaves 2 healthy of 2
    expect(removalProblem(three, healthyMembers(three, health(three[0]!, three[1]!)), three[2]!.peerUrls[0]!)).toBeUndefined();
    // all healthy: removing one leaves 2 of 2
    expect(removalProblem(three, three, three[0]!.peerUrls[0]!)).toBeUndefined();
    // one lost already: removing a healthy one leaves 1 healthy of 2, and etcd needs 2
    expect(removalProblem(three, [three[0]!, three[1]!], three[0]!.peerUrls[0]!)).toBe('1 of the 2 members left would be healthy and etcd needs 2 for a quorum: it would stop answering');
    expect(removalProblem([member(0)], [member(0)], member(0).peerUrls[0]!)).toMatch(/last etcd member/);
  });

  it('adds one learner at a time, and only while etcd has its quorum', () => {
    const two = [member(0), member(1)];
    expect(additionProblem(two, two)).toBeUndefined();
    expect(additionProblem([member(0)], [member(0)])).toBeUndefined(); // a learner does not vote: one master may grow
    expect(additionProblem(two, [member(0)])).toBe('1 of 2 members are healthy and etcd needs 2 for a quorum: it cannot change its members');
    expect(additionProblem([...two, member(2, { isLearner: true })], two)).toMatch(/still joining \(a learner\): one at a time/);
  });
});

/** Masters whose etcd member the fake machines run: a unit, and the member the overlord makes before it starts. */
function unitsFor(record: MachineRecord, view: ClusterView): RenderedUnits {
  const units = ['corekube-download.service', ...(record.role === 'master' ? ['corekube-etcd.service', 'kube-apiserver.service'] : ['kubelet.service'])];
  const files = units.map((u) => ({ path: `/etc/systemd/system/${u}`, content: `[Unit]\nDescription=${u} for ${record.hostname}${u === 'kube-apiserver.service' ? ` --etcd-servers=${view.masterIps.join(',')}` : ''}\n`, mode: '0644' }));
  const name = (ip: string) => `etcd-${ip.replace(/\./g, '-')}`;
  return {
    files,
    start: units.map((u) => ({ unit: u, until: u.includes('download') ? ('exited' as const) : ('active' as const) })),
    ...(record.role === 'master'
      ? { etcdMember: { unit: 'corekube-etcd.service', name: name(record.ip), peerUrl: `https://${record.ip}:2380`, initialCluster: view.masterIps.map((ip) => `${name(ip)}=https://${ip}:2380`).join(','), bootstrapEnv: '/etc/corekube/etcd/bootstrap.env', dataDir: '/var/lib/corekube/etcd' } }
      : {}),
    hash: files.map((f) => f.content).join('|'),
  };
}

describe('masters joining and leaving etcd', () => {
  const masters = [0, 1, 2].map((i) => makeRecord(i, 'master', { hostname: `t-master-${i}`, ip: `10.240.0.${20 + i}` }));
  const minion = makeRecord(10, 'minion', { hostname: 't-minion-0' });
  const retry = { retries: 2, initialMs: 1_000, factor: 2, maxMs: 10_000 };
  const announce = (store: MemoryStore, r: MachineRecord) => store.put(keys.machine(r.id), JSON.stringify(r));
  const removal = (r: MachineRecord): RemovalRequest => ({ schema: 1, id: r.id, hostname: r.hostname, ip: r.ip, role: r.role, reason: 'command', requestedAt: '2026-12-07T00:00:00Z', done: [], error: null });

  it('forms the initial cluster, removes a lost master\'s member, adds its replacement as a learner and promotes it — no running member restarted; refuses what would cost the quorum', async () => {
    const store = new MemoryStore();
    const clock = new FakeClock();
    const hosts = new FakeMachines();
    for (const r of [...masters, minion]) await announce(store, r);
    const o = await runOverlord(
      { store, hosts, clock, log: silentLogger() },
      { cluster: 't', sshUser: 'corekube', unitsFor, expected: { masters: 3, minions: 1 }, concurrency: 4, retry, removals: { backoff: { initialMs: 1_000, factor: 1, maxMs: 1_000 } } },
    );
    await clock.runUntil(() => o.summary().deployed === 4, 200).catch((e) => { throw new Error(`${e.message}: ${o.summary().text}`); });
    const etcd = hosts.etcd;
    expect(etcd.members.map((m) => [m.name, m.isLearner ?? false])).toEqual(masters.map((m) => [`etcd-${m.ip.replace(/\./g, '-')}`, false]));
    const env = (r: MachineRecord) => hosts.machine(r.id).files.get('/etc/corekube/etcd/bootstrap.env')?.content ?? '';
    for (const m of masters) expect(env(m)).toContain(`ETCD_INITIAL_CLUSTER_STATE=new\nETCD_INITIAL_CLUSTER=${masters.map((x) => `etcd-${x.ip.replace(/\./g, '-')}=https://${x.ip}:2380`).join(',')}\n`);
    const etcdStarts = () => masters.slice(0, 2).map((m) => hosts.machine(m.id).starts('corekube-etcd.service'));
    expect(etcdStarts()).toEqual([1, 1]);

    // master 2 is lost (powered off, its lease expired); the operator removes it
    const lost = masters[2]!;
    hosts.machine(lost.id).reachable = false;
    etcd.down.add('etcd-10-240-0-22');
    await store.put(keys.removalOf(lost.id), JSON.stringify(removal(lost)));
    await store.delete(keys.machine(lost.id));
    await clock.runUntil(() => store.data.has(keys.removedOf(lost.id)), 200);
    expect(etcd.members.map((m) => m.name)).toEqual(['etcd-10-240-0-20', 'etcd-10-240-0-21']);
    expect(etcd.log.filter((l) => l.startsWith('member remove'))).toHaveLength(1);

    // its replacement: a new server at the same address, a new machine id — added as a learner, then promoted
    const replacement = makeRecord(3, 'master', { hostname: 't-master-2', ip: lost.ip });
    etcd.down.delete('etcd-10-240-0-22');
    await announce(store, replacement);
    await clock.runUntil(() => store.data.get(keys.ledgerOf(replacement.id))?.value.includes('"state":"deployed"') === true, 400).catch((e) => { throw new Error(`${e.message}: ${o.summary().text}`); });
    expect(etcd.log).toContain('member add etcd-10-240-0-22');
    expect(etcd.members.map((m) => [m.name, m.isLearner ?? false])).toEqual([['etcd-10-240-0-20', false], ['etcd-10-240-0-21', false], ['etcd-10-240-0-22', false]]);
    expect(env(replacement)).toContain('ETCD_INITIAL_CLUSTER_STATE=existing\nETCD_INITIAL_CLUSTER=etcd-10-240-0-20=https://10.240.0.20:2380,etcd-10-240-0-21=https://10.240.0.21:2380,etcd-10-240-0-22=https://10.240.0.22:2380\n');
    expect(etcd.log.filter((l) => l.startsWith('member promote'))).toHaveLength(1);
    expect(etcdStarts()).toEqual([1, 1]); // no running member restarted for it

    // another master stops answering: removing a healthy one now would leave 1 healthy of 2 — refused, and said why
    etcd.down.add('etcd-10-240-0-21');
    await store.put(keys.removalOf(masters[0]!.id), JSON.stringify(removal(masters[0]!)));
    await store.put(keys.machine(minion.id), JSON.stringify({ ...minion, announcedAt: '2026-12-07T00:01:00Z' })); // the machines change: removals are read
    await clock.runUntil(() => parseRemovalRequest(masters[0]!.id, store.data.get(keys.removalOf(masters[0]!.id))?.value ?? '')?.error != null, 200);
    expect(parseRemovalRequest(masters[0]!.id, store.data.get(keys.removalOf(masters[0]!.id))!.value)?.error).toBe(
      'member: removing etcd member etcd-10-240-0-20 now would break etcd: 1 of the 2 members left would be healthy and etcd needs 2 for a quorum: it would stop answering',
    );
    expect(etcd.members).toHaveLength(3);
    // the master is back: the removal goes on by itself
    etcd.down.delete('etcd-10-240-0-21');
    await clock.runUntil(() => store.data.has(keys.removedOf(masters[0]!.id)), 200).catch((e) => { throw new Error(`${e.message}: ${store.data.get(keys.removalOf(masters[0]!.id))?.value} ${JSON.stringify(etcd.log)}`); });
    expect(etcd.members.map((m) => m.name)).toEqual(['etcd-10-240-0-21', 'etcd-10-240-0-22']);
    await flush(10);
    await o.stop();
  });

  it('waits to add a member while etcd has no quorum, then adds it by itself', async () => {
    const hosts = new FakeMachines();
    const [a, b, c] = masters.map((m) => ({ id: m.id, ip: m.ip }));
    hosts.etcd.started(`ETCD_INITIAL_CLUSTER=etcd-10-240-0-20=https://10.240.0.20:2380,etcd-10-240-0-21=https://10.240.0.21:2380`);
    hosts.etcd.down.add('etcd-10-240-0-21');
    const members = new EtcdMembers({ hosts, log: silentLogger(), running: () => [a!] }, { remote: { user: 'corekube' } });
    const spec = { unit: 'corekube-etcd.service', name: 'etcd-10-240-0-22', peerUrl: 'https://10.240.0.22:2380', initialCluster: 'x=https://10.240.0.22:2380', bootstrapEnv: '/etc/corekube/etcd/bootstrap.env', dataDir: '/var/lib/corekube/etcd' };
    await expect(members.ensureMember(c!, spec)).rejects.toMatchObject({ code: 'E_ETCD_QUORUM', retryable: true, message: 'etcd-10-240-0-22 cannot be added to etcd now: 1 of 2 members are healthy and etcd needs 2 for a quorum: it cannot change its members' });
    expect(hosts.etcd.members).toHaveLength(2);
    hosts.etcd.down.clear();
    expect(await members.ensureMember(c!, spec)).toEqual({ changed: true });
    expect(hosts.etcd.members.at(-1)).toMatchObject({ peerURLs: ['https://10.240.0.22:2380'], isLearner: true });
    // its data directory holds a member: nothing more, ever
    hosts.machine(c!.id).dirs.add('/var/lib/corekube/etcd/member');
    expect(await members.ensureMember(c!, spec)).toEqual({ changed: false });
    void b;
  });

  it('refuses to join as a member that ran before on a rebuilt machine, and says to remove the one it replaced', async () => {
    const hosts = new FakeMachines();
    hosts.etcd.started('ETCD_INITIAL_CLUSTER=etcd-10-240-0-20=https://10.240.0.20:2380,etcd-10-240-0-22=https://10.240.0.22:2380');
    const members = new EtcdMembers({ hosts, log: silentLogger(), running: () => [{ id: masters[0]!.id, ip: masters[0]!.ip }] }, { remote: { user: 'corekube' } });
    const rebuilt = { id: 'f'.repeat(32), ip: '10.240.0.22' };
    const spec = { unit: 'corekube-etcd.service', name: 'etcd-10-240-0-22', peerUrl: 'https://10.240.0.22:2380', initialCluster: '', bootstrapEnv: '/etc/corekube/etcd/bootstrap.env', dataDir: '/var/lib/corekube/etcd' };
    await expect(members.ensureMember(rebuilt, spec)).rejects.toMatchObject({ code: 'E_ETCD', retryable: true, hint: expect.stringContaining('corekube node remove 10.240.0.22') });
    expect(hosts.machine(rebuilt.id).files.has('/etc/corekube/etcd/bootstrap.env')).toBe(false);
  });
});
