import { describe, expect, it } from 'vitest';
import { daemonReload, journalExcerpt, parseUnitState, startUnit, unitState, writeFile, enableUnit } from '../../../overlord/edges/remote-commands.ts';
import { Semaphore } from '../../../core/semaphore.ts';
import { formatStatusTable, machineStatuses } from '../../../overlord/status.ts';
import { beginDeployment, stepDone } from '../../../contracts/ledger-entry.ts';
import { fakeUnits, makeRecord } from './fakes.ts';
import { stepsOf } from '../../../overlord/deploy/planner.ts';
import type { NodeState } from '../../../overlord/kubernetes/node-states.ts';

const user = { user: 'corekube' };
const root = { user: 'root' };

describe('remote commands', () => {
  it('prefixes privileged commands with sudo -n unless the user is root', () => {
    expect(daemonReload(user)).toEqual(['sudo', '-n', 'systemctl', 'daemon-reload']);
    expect(daemonReload(root)).toEqual(['systemctl', 'daemon-reload']);
    expect(startUnit(user, 'kubelet.service')).toEqual(['sudo', '-n', 'systemctl', 'start', 'kubelet.service']);
    expect(enableUnit(user, 'kubelet.service')).toEqual(['sudo', '-n', 'systemctl', 'enable', '--quiet', 'kubelet.service']);
    expect(journalExcerpt(user, 'kubelet.service')).toEqual(['sudo', '-n', 'journalctl', '-u', 'kubelet.service', '-n', '30', '--no-pager', '-o', 'cat']);
  });

  it('reads unit state without privilege', () => {
    expect(unitState(user, 'etcd.service')).toEqual(['systemctl', 'show', '-p', 'ActiveState,SubState,Result,InvocationID', 'etcd.service']);
  });

  it('writes a file through a constant script, path and mode as arguments, content on stdin', () => {
    const { argv, stdin } = writeFile(root, { path: '/etc/x y/$(reboot).conf', content: 'secret', mode: '0600' });
    expect(argv.slice(0, 2)).toEqual(['sh', '-c']);
    expect(argv[2]).not.toContain('x y');
    expect(argv.slice(3)).toEqual(['corekube-write-file', '/etc/x y/$(reboot).conf', '0600']);
    expect(argv.join(' ')).not.toContain('secret');
    expect(stdin).toBe('secret');
  });

  it.each([
    ['a relative path', { path: 'etc/x', content: '', mode: '0644' }],
    ['a path with ..', { path: '/etc/../root/x', content: '', mode: '0644' }],
    ['a bad mode', { path: '/etc/x', content: '', mode: 'rwx' }],
  ])('refuses %s', (_what, file) => {
    expect(() => writeFile(root, file)).toThrow(/remote file/);
  });

  it('refuses a unit name that is not one', () => {
    expect(() => startUnit(root, 'kubelet; reboot')).toThrow(/not a systemd unit name/);
  });

  it('parses systemctl show output; missing properties read empty', () => {
    expect(parseUnitState('ActiveState=failed\nSubState=failed\nResult=exit-code\n')).toEqual({ activeState: 'failed', subState: 'failed', result: 'exit-code', invocationId: '' });
  });
});

describe('Semaphore', () => {
  it('admits at most `limit` holders and serves waiters in order', async () => {
    const s = new Semaphore(2);
    const order: number[] = [];
    const r1 = await s.acquire();
    const r2 = await s.acquire();
    const w3 = s.acquire().then((r) => (order.push(3), r));
    const w4 = s.acquire().then((r) => (order.push(4), r));
    expect(s.waiting).toBe(2);
    r1();
    r1(); // a second release is ignored
    (await w3)();
    r2();
    (await w4)();
    expect(order).toEqual([3, 4]);
    expect(s.active).toBe(0);
  });

  it('drops a waiter whose signal aborts', async () => {
    const s = new Semaphore(1);
    const r = await s.acquire();
    const abort = new AbortController();
    const w = s.acquire(abort.signal);
    abort.abort(new Error('stop'));
    await expect(w).rejects.toThrow('stop');
    expect(s.waiting).toBe(0);
    r();
    expect(s.active).toBe(0);
  });

  it('rejects a limit that is not a positive integer', () => {
    expect(() => new Semaphore(0)).toThrow('Expected `limit` to be a positive integer, got 0.');
  });
});

describe('status rows', () => {
  const master = makeRecord(1, 'master');
  const minion = makeRecord(10, 'minion');
  const units = fakeUnits()(master);
  const ids = stepsOf(units).map((s) => s.id);
  const T = '2026-01-01T00:00:00.000Z';
  let deployed = beginDeployment(null, master, { hash: units.hash, stepIds: ids }, ids, T);
  for (const id of ids) deployed = stepDone(deployed, id, T, { startNext: true });
  const deploying = stepDone(beginDeployment(null, minion, { hash: 'h', stepIds: ids }, ids, T), 'write-units', T, { startNext: true });

  it('has exactly the documented fields, masters first, subnet and node null', () => {
    const report = machineStatuses(
      [{ id: minion.id, record: minion }, { id: master.id, record: master }, { id: 'f'.repeat(32), invalid: 'record is not JSON', role: null, ip: null }],
      new Map([[master.id, deployed], [minion.id, deploying]]),
    );
    expect(report.machines.map((m) => Object.keys(m))).toEqual(Array(3).fill(['id', 'role', 'ip', 'state', 'step', 'error', 'subnet', 'node', 'certificatesExpire']));
    expect(report.machines).toEqual([
      { id: master.id, role: 'master', ip: master.ip, state: 'deployed', step: null, error: null, subnet: null, node: null, certificatesExpire: null },
      { id: minion.id, role: 'minion', ip: minion.ip, state: 'deploying', step: 'daemon-reload', error: null, subnet: null, node: null, certificatesExpire: null },
      { id: 'f'.repeat(32), role: null, ip: null, state: 'failed', step: null, error: 'skipped: record is not JSON', subnet: null, node: null, certificatesExpire: null },
    ]);
    expect(formatStatusTable(report)).toContain('3 machines: 1 deployed, 1 deploying, 0 pending, 1 failed');
  });

  it('shows a deployed machine whose record expired as unreachable, from its ledger, and counts it apart', () => {
    const report = machineStatuses([{ id: minion.id, record: minion }], new Map([[master.id, deployed], [minion.id, deploying]]));
    expect(report.machines[0]).toMatchObject({ id: master.id, role: 'master', ip: master.ip, state: 'unreachable', step: null, error: expect.stringContaining('lease expired') });
    expect(formatStatusTable(report)).toContain('2 machines: 0 deployed, 1 deploying, 0 pending, 0 failed, 1 unreachable');
  });

  it('shows a machine being removed as removing, at the phase it is at, with the last failure', () => {
    const removal = { schema: 1 as const, id: minion.id, hostname: minion.hostname, ip: minion.ip, role: 'minion' as const, reason: 'stack' as const, requestedAt: T, done: ['cordon' as const], error: 'drain: draining Node minion-10 did not finish' };
    const report = machineStatuses([{ id: master.id, record: master }], new Map([[master.id, deployed], [minion.id, deploying]]), new Map(), [], new Map(), new Map([[minion.id, removal]]));
    expect(report.machines[1]).toMatchObject({ id: minion.id, state: 'removing', step: 'drain', error: 'drain: draining Node minion-10 did not finish' });
    expect(formatStatusTable(report)).toContain('2 machines: 1 deployed, 0 deploying, 0 pending, 0 failed, 1 removing');
  });

  it('shows the earliest expiry of the certificates the overlord deployed to a machine, from its ledger', () => {
    const report = machineStatuses([{ id: master.id, record: master }, { id: minion.id, record: minion }], new Map([[master.id, { ...deployed, certificatesExpire: '2027-12-06T18:43:17.000Z' }]]));
    expect(report.machines.map((m) => m.certificatesExpire)).toEqual(['2027-12-06T18:43:17.000Z', null]);
    expect(formatStatusTable(report)).toMatch(/ deployed +- +2027-12-06 /);
  });

  it('shows a machine without a ledger as pending, and a deployed machine in a new boot as deploying', () => {
    const rebooted = { ...master, bootId: 'feedfacefeedfacefeedfacefeedface' };
    const report = machineStatuses([{ id: master.id, record: rebooted }, { id: minion.id, record: minion }], new Map([[master.id, deployed]]));
    expect(report.machines.map((m) => m.state)).toEqual(['deploying', 'pending']);
  });

  it('shows a machine that has only asked to join as pending at step join, with the documented fields; once it has a record, the record wins', () => {
    const joining = makeRecord(20, 'minion');
    const report = machineStatuses([{ id: master.id, record: master }], new Map([[master.id, deployed]]), new Map(), [joining, master]);
    expect(report.machines).toEqual([
      { id: master.id, role: 'master', ip: master.ip, state: 'deployed', step: null, error: null, subnet: null, node: null, certificatesExpire: null },
      { id: joining.id, role: 'minion', ip: joining.ip, state: 'pending', step: 'join', error: null, subnet: null, node: null, certificatesExpire: null },
    ]);
  });

  it("shows a machine's Node as the overlord recorded it, and a Node that is not Ready with its reason in the table", () => {
    const node: NodeState = { name: minion.hostname, ready: false, reason: 'KubeletNotReady: container runtime network not ready', podCIDR: '10.244.3.0/24', kubeletVersion: 'v1.36.5', since: T };
    const report = machineStatuses([{ id: master.id, record: master }, { id: minion.id, record: minion }], new Map([[master.id, deployed], [minion.id, deploying]]), new Map([[minion.id, '10.244.3.0/24']]), [], new Map([[minion.id, node]]));
    expect(report.machines.map((m) => [m.id, m.subnet, m.node])).toEqual([
      [master.id, null, null],
      [minion.id, '10.244.3.0/24', node],
    ]);
    const table = formatStatusTable(report);
    expect(table).toMatch(/^ID +ROLE +IP +SUBNET +STATE +NODE +CERTS EXPIRE +STEP +ERROR$/m);
    expect(table).toContain(`${minion.hostname} NotReady`);
    expect(table).toContain('KubeletNotReady: container runtime network not ready');
  });
});
