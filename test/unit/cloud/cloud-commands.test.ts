import { describe, expect, it } from 'vitest';
import { formatEvent, formatStack, missingParameters, parseParameters, stackJson } from '../../../cli/cloud.ts';
import type { Stack } from '../../../cloud/heat-client.ts';
import type { FieldProblem } from '../../../core/errors.ts';

const stack: Stack = {
  name: 'corekube', id: 'sid', status: 'CREATE_COMPLETE', statusReason: 'Stack CREATE completed successfully',
  createdTime: '2030-01-01T00:00:00Z', updatedTime: undefined, parameters: {}, timeoutMins: 60,
  outputs: [
    { key: 'overlord_ip', value: '10.240.0.11', description: '', error: undefined },
    { key: 'master_ips', value: ['10.240.0.32'], description: '', error: undefined },
    { key: 'api_endpoint', value: null, description: '', error: 'list index out of range' },
  ],
};

describe('corekube up/down/stack status output', () => {
  it('prints one event a line: time, resource, status and any reason but the routine one', () => {
    expect(formatEvent({ id: 'e', time: '2030-01-01T12:00:03Z', resourceName: 'overlord', physicalResourceId: '', status: 'CREATE_COMPLETE', statusReason: 'state changed' }))
      .toBe('12:00:03  overlord                CREATE_COMPLETE     \n');
    expect(formatEvent({ id: 'e', time: '2030-01-01T12:00:04Z', resourceName: 'overlord_ready', physicalResourceId: '', status: 'CREATE_FAILED', statusReason: 'WaitConditionTimeout: 0 of 1 received' }))
      .toBe('12:00:04  overlord_ready          CREATE_FAILED         WaitConditionTimeout: 0 of 1 received\n');
  });

  it('prints status and outputs sorted by key, strings bare, the rest as JSON, unresolved ones with Heat\'s reason', () => {
    expect(formatStack(stack)).toBe([
      'stack    corekube (sid)',
      'status   CREATE_COMPLETE — Stack CREATE completed successfully',
      'created  2030-01-01T00:00:00Z',
      'outputs',
      '  api_endpoint  (unavailable: list index out of range)',
      '  master_ips    ["10.240.0.32"]',
      '  overlord_ip   10.240.0.11',
      '',
    ].join('\n'));
  });

  it('gives --json one object with the outputs as a map', () => {
    expect(stackJson(stack)).toEqual({
      name: 'corekube', id: 'sid', status: 'CREATE_COMPLETE', statusReason: 'Stack CREATE completed successfully',
      createdTime: '2030-01-01T00:00:00Z', updatedTime: null,
      outputs: { api_endpoint: null, master_ips: ['10.240.0.32'], overlord_ip: '10.240.0.11' },
    });
  });
});

describe('corekube up parameters', () => {
  it('reads KEY=VALUE pairs, values may hold "="', () => {
    const problems: FieldProblem[] = [];
    expect(parseParameters(['key_name=mykey', 'admin_cidr=10.0.0.0/8', 'x=a=b'], problems)).toEqual({ key_name: 'mykey', admin_cidr: '10.0.0.0/8', x: 'a=b' });
    expect(problems).toEqual([]);
  });

  it('reports a pair without "=" and a key given twice', () => {
    const problems: FieldProblem[] = [];
    parseParameters(['image', '=x', 'a=1', 'a=2'], problems);
    expect(problems.map((p) => `${p.value}: ${p.message}`)).toEqual(['image: is not KEY=VALUE', '=x: is not KEY=VALUE', 'a=2: sets a twice']);
  });

  it('names parameters without default nobody gives, with the spec option that sets them, and unknown ones', () => {
    const input = { template: { parameters: { key_name: {}, image: { default: 'img' }, minion_count: { default: 3 }, external_network: {} } } };
    const problems = missingParameters(input, { external_network: 'public', flavour: 'x' });
    expect(problems.map((p) => `${p.field}: ${p.message}; ${p.fix}`)).toEqual([
      'key_name: has no default and is not given; give --parameter key_name=VALUE (or the spec option --key-name)',
      '--parameter flavour: is not a parameter of the template; use one of: key_name, image, minion_count, external_network',
    ]);
  });
});
