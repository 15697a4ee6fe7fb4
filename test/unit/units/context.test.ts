import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../core/errors.ts';
import { buildUnitContext, PKI_PATHS } from '../../../units/index.ts';
import { spec } from './fixtures.ts';

const machine = { id: 'c'.repeat(32), role: 'master' as const, ip: '10.240.0.32', hostname: 'm-0' };

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof InvalidInputError) return err.problems.map((p) => `${p.field}: ${p.message}`);
    throw err;
  }
  throw new Error('expected InvalidInputError');
}

describe('buildUnitContext', () => {
  it('sorts the master IPs numerically and drops duplicates', () => {
    const ctx = buildUnitContext(spec(), { ...machine, ip: '10.240.0.100' }, { masterIps: ['10.240.0.100', '10.240.0.33', '10.240.0.33'] }, PKI_PATHS);
    expect(ctx.masterIps).toEqual(['10.240.0.33', '10.240.0.100']);
    expect(ctx.etcd.servers).toBe('https://10.240.0.33:2379,https://10.240.0.100:2379');
  });

  it('lists every problem of a bad machine at once', () => {
    const problems = problemsOf(() => buildUnitContext(spec(), { id: 'xyz', role: 'master', ip: '10.240.0.999', hostname: '-bad-' }, { masterIps: ['nope'] }, PKI_PATHS));
    expect(problems).toEqual([
      'machine.id: is not a 32-hex machine id',
      'machine.ip: is not an IPv4 address',
      'machine.hostname: is not a valid host name',
      'cluster.masterIps: contains entries that are not IPv4 addresses',
      'cluster.masterIps: is empty: every machine needs a master (etcd, API server)',
    ]);
  });

  it("refuses a master that is not among the masters (its etcd would not be in the initial cluster)", () => {
    expect(problemsOf(() => buildUnitContext(spec(), machine, { masterIps: ['10.240.0.33'] }, PKI_PATHS))).toEqual([
      "cluster.masterIps: does not contain this master's own IP 10.240.0.32",
    ]);
  });

  it('refuses a minion when no master is deployed yet', () => {
    expect(problemsOf(() => buildUnitContext(spec(), { ...machine, role: 'minion' }, { masterIps: [] }, PKI_PATHS))).toHaveLength(1);
  });

  it('is frozen', () => {
    const ctx = buildUnitContext(spec(), machine, { masterIps: [machine.ip] }, PKI_PATHS);
    expect(Object.isFrozen(ctx)).toBe(true);
    expect(Object.isFrozen(ctx.etcd)).toBe(true);
  });
});
