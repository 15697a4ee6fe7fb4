import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../core/errors.ts';
import { parseSpecArgs, specUsage, type SpecInputs } from '../../../cli/spec-options.ts';

const files = (map: Record<string, string>, env: Record<string, string> = {}): SpecInputs => ({
  env,
  readFile: (p) => {
    if (!(p in map)) throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
    return map[p]!;
  },
});

describe('parseSpecArgs', () => {
  it('takes a flag over env over the file, and returns the command\'s own options', () => {
    const inputs = files({ 'c.yaml': 'masters: 5\nminions: 7\nname: fromfile\n' }, { COREKUBE_MINIONS: '9', COREKUBE_NAME: 'fromenv' });
    const { spec, values } = parseSpecArgs(['-c', 'c.yaml', '--minions', '11', '-o', 'out.yaml'], { output: { type: 'string', short: 'o' } }, 'usage', inputs);
    expect(spec.masters).toBe(5);
    expect(spec.minions).toBe(11);
    expect(spec.name).toBe('fromenv');
    expect(values.output).toBe('out.yaml');
  });

  it('lists every problem of the file and the flags at once', () => {
    const inputs = files({ 'bad.yaml': 'masters: 1\nmasters: 3\n' });
    let caught: unknown;
    try {
      parseSpecArgs(['-c', 'bad.yaml', '--masters', '2', '--os', 'windows'], {}, 'usage', inputs);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidInputError);
    const fields = (caught as InvalidInputError).problems.map((p) => p.field);
    expect(fields).toEqual(expect.arrayContaining(['--config', '--masters', '--os']));
  });

  it('reports an unreadable file as a problem of --config', () => {
    expect(() => parseSpecArgs(['-c', 'missing.yaml'], {}, 'usage', files({}))).toThrow(/--config: cannot be read \(ENOENT\)/);
  });

  it('rejects an unknown option as a usage error', () => {
    expect(() => parseSpecArgs(['--bogus', 'x'], {}, 'usage', files({}))).toThrow(/bogus/);
  });

  it('documents every spec flag with its env name in --help', () => {
    expect(specUsage()).toMatch(/--pod-cidr VALUE .*COREKUBE_POD_CIDR/);
    expect(specUsage()).toMatch(/--key-name VALUE .*no default/);
  });
});
