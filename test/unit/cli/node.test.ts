import { describe, expect, it } from 'vitest';
import { machineNamed, removalRequestFor } from '../../../overlord/lifecycle/removal-request.ts';
import type { StatusReport } from '../../../overlord/status.ts';
import { operatorStoreOptions } from '../../../cli/status.ts';

const row = (id: string, role: 'master' | 'minion', ip: string, name: string) => ({ id, role, ip, state: 'deployed' as const, step: null, error: null, subnet: null, certificatesExpire: null, node: { name, ready: true, reason: null, podCIDR: null, kubeletVersion: 'v1.36.5', since: '2026-12-06T00:00:00Z' } });
const report = { machines: [row('a'.repeat(32), 'master', '10.240.0.20', 'c-master-0'), row('b'.repeat(32), 'minion', '10.240.0.33', 'c-minion-0'), row(`${'b'.repeat(8)}${'c'.repeat(24)}`, 'minion', '10.240.0.34', 'c-minion-1')] } as unknown as StatusReport;

describe('corekube node remove', () => {
  it('finds the machine by id, address or hostname, and says which value names none or several', () => {
    expect(machineNamed(report, '10.240.0.34').id).toBe(`${'b'.repeat(8)}${'c'.repeat(24)}`);
    expect(machineNamed(report, 'c-minion-0').id).toBe('b'.repeat(32));
    expect(machineNamed(report, 'b'.repeat(32)).ip).toBe('10.240.0.33');
    expect(() => machineNamed(report, '10.240.0.99')).toThrow(/MACHINE "10.240.0.99" is no machine of this cluster/);
    expect(() => machineNamed(report, 'b'.repeat(8))).toThrow(/names 2 machines/);
  });

  it('asks for a minion\'s or a master\'s removal, and refuses the only master with what to do instead', () => {
    const now = new Date('2026-12-06T12:00:00Z');
    expect(removalRequestFor(machineNamed(report, 'c-minion-0'), 'c-minion-0', now, report)).toEqual({ schema: 1, id: 'b'.repeat(32), hostname: 'c-minion-0', ip: '10.240.0.33', role: 'minion', reason: 'command', requestedAt: '2026-12-06T12:00:00.000Z', done: [], error: null });
    expect(() => removalRequestFor(machineNamed(report, 'c-master-0'), 'c-master-0', now, report)).toThrow(expect.objectContaining({ code: 'E_REMOVAL_REFUSED', message: expect.stringContaining("the cluster's only master"), hint: expect.stringContaining('bring up another master first') }));
    const three = { machines: [...report.machines, row('d'.repeat(32), 'master', '10.240.0.21', 'c-master-1')] } as unknown as StatusReport;
    expect(removalRequestFor(machineNamed(three, 'c-master-1'), 'c-master-1', now, three)).toMatchObject({ id: 'd'.repeat(32), role: 'master', ip: '10.240.0.21' });
  });
});

describe("an operator's connection to discovery", () => {
  it("reads discovery's CA and root's password from the overlord's state directory, and refuses it beside the --etcd-* files", async () => {
    const { mkdtemp, mkdir, writeFile } = await import('node:fs/promises');
    const os = await import('node:os');
    const path = await import('node:path');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ck-state-'));
    await mkdir(path.join(dir, 'pki/ca'), { recursive: true });
    await mkdir(path.join(dir, 'pki/discovery'), { recursive: true });
    await writeFile(path.join(dir, 'pki/ca/discovery.crt'), 'CA PEM');
    await writeFile(path.join(dir, 'pki/discovery/root.password'), 'pw\n');
    const o = operatorStoreOptions({ 'etcd-endpoints': 'https://10.240.0.10:2379', 'state-dir': dir });
    expect({ ...o, tls: { ca: o.tls?.ca?.toString() } }).toEqual({ endpoints: ['https://10.240.0.10:2379'], tls: { ca: 'CA PEM' }, auth: { username: 'root', password: 'pw' } });
    expect(() => operatorStoreOptions({ 'etcd-endpoints': 'https://10.240.0.10:2379', 'state-dir': dir, 'etcd-ca': '/x' })).toThrow(/--state-dir .* gives discovery's CA and root credentials: leave out --etcd-ca/);
    expect(() => operatorStoreOptions({ 'etcd-endpoints': 'https://10.240.0.10:2379', 'state-dir': '/nonexistent' })).toThrow(expect.objectContaining({ code: 'E_USAGE', message: expect.stringContaining('/nonexistent/pki/ca/discovery.crt cannot be read (ENOENT)') }));
  });
});
