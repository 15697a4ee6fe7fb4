import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import type { LedgerEntry } from '../../../contracts/ledger-entry.ts';
import { parseDemoArgs } from '../../../cli/demo-options.ts';
import { formatEvent, formatTimings, touchedMachines } from '../../../cli/demo-output.ts';

describe('corekube demo options', () => {
  it('defaults to 1 master, 2 minions, no scale-up, human output, net 60, torn down at the end', () => {
    expect(parseDemoArgs([])).toEqual({ masters: 1, minions: 2, overlords: 1, failover: false, failMaster: false, replaceMaster: false, apiLoadBalancer: undefined, scale: false, scaleDown: false, upgrade: false, json: false, keep: false, down: false, overlord: undefined, net: 60, keeperLog: undefined });
    expect(parseDemoArgs(['--masters', '3', '--fail-master', '--minions', '1', '--overlords', '2', '--failover', '--scale', '--json', '--overlord', 'process', '--net', '70', '--keep', '--keeper-log', '/tmp/keeper.log']))
      .toEqual({ masters: 3, minions: 1, overlords: 2, failover: true, failMaster: true, replaceMaster: false, apiLoadBalancer: undefined, scale: true, scaleDown: false, upgrade: false, json: true, keep: true, down: false, overlord: 'process', net: 70, keeperLog: '/tmp/keeper.log' });
  });

  it('scales down only where a minion is left afterwards', () => {
    expect(parseDemoArgs(['--scale-down', '--json'])).toMatchObject({ scaleDown: true, minions: 2 });
    expect(parseDemoArgs(['--scale-down', '--scale', '--minions', '1'])).toMatchObject({ scaleDown: true, scale: true });
    expect(() => parseDemoArgs(['--scale-down', '--minions', '1'])).toThrow(/--scale-down needs a minion left afterwards: give --minions 2 or more \(got 1\)/);
  });

  it('loses a master only where the API survives it: 3 or 5 masters behind the load balancer', () => {
    expect(() => parseDemoArgs(['--fail-master'])).toThrow(/--fail-master needs masters that survive one's loss behind a load balancer: give --masters 3 or 5 \(got 1\)/);
  });

  it("passes --api-load-balancer to the cluster's spec, and loses a master only behind octavia or the node-local proxies", () => {
    expect(parseDemoArgs(['--masters', '3', '--api-load-balancer', 'node-local', '--fail-master'])).toMatchObject({ masters: 3, apiLoadBalancer: 'node-local', failMaster: true });
    expect(parseDemoArgs(['--masters', '3', '--api-load-balancer', 'octavia'])).toMatchObject({ apiLoadBalancer: 'octavia' });
    expect(() => parseDemoArgs(['--api-load-balancer', 'f5'])).toThrow(/--api-load-balancer must be one of octavia, node-local, none \(got "f5"\)/);
    expect(() => parseDemoArgs(['--masters', '3', '--api-load-balancer', 'none', '--fail-master'])).toThrow(/--fail-master needs a load balancer or the node-local proxy/);
  });

  it('tears a kept cloud down with --down, which takes only --net (and --json)', () => {
    expect(parseDemoArgs(['--down', '--net', '70'])).toMatchObject({ down: true, net: 70 });
    expect(() => parseDemoArgs(['--down', '--masters', '3'])).toThrow(/--down takes only --net \(got --masters\)/);
  });

  it('reports every bad option at once, as a usage error', () => {
    const err = (() => {
      try {
        parseDemoArgs(['--masters', '2', '--minions', '21', '--overlords', '4', '--overlord', 'vm', '--net', '0']);
      } catch (e) {
        return e as CorekubeError;
      }
      throw new Error('expected a usage error');
    })();
    expect(err.code).toBe('E_USAGE');
    for (const part of ['--masters must be 1, 3 or 5', '--minions must be a whole number from 1 to 20 (the checks run a workload on the minions)', '--overlords must be a whole number from 1 to 3', '--overlord must be docker or process', '--net must be']) expect(err.message).toContain(part);
    expect(() => parseDemoArgs(['--failover'])).toThrow(/--failover needs a standby to take over: give --overlords 2 or 3/);
    expect(() => parseDemoArgs(['--bogus'])).toThrow(CorekubeError);
  });
});

describe('corekube demo output', () => {
  it('shows the stack\'s story from Heat and leaves out networks and security groups', () => {
    const heat = (resourceName: string) => formatEvent({ kind: 'heat', event: { id: '1', time: '2026-01-01T10:00:03', resourceName, physicalResourceId: '', status: 'CREATE_COMPLETE', statusReason: 'state changed' } }, 'demo');
    expect(heat('cluster_ready')).toEqual(['[heat]      10:00:03  cluster_ready     CREATE_COMPLETE']);
    expect(heat('demo')).toHaveLength(1);
    expect(heat('overlord')).toHaveLength(1);
    expect(heat('private_subnet')).toEqual([]);
    expect(heat('cluster_secgroup')).toEqual([]);
  });

  it('names the deviation when the overlord container starts on the host', () => {
    const lines = formatEvent({ kind: 'overlord.started', mode: 'docker', command: ['docker', 'run', '--detach'] }, 'demo');
    expect(lines.join('\n')).toContain('one deviation');
    expect(lines.at(-1)).toContain('docker run --detach');
  });

  it('tabulates each machine\'s times, marking those of the stack update', () => {
    const text = formatTimings([
      { name: 'demo-master-0', role: 'master', ip: '10.200.60.32', fromUpdate: false, requestedMs: 20_300, bootedMs: 20_400, readyMs: 24_700, deployedMs: 32_300, deployMs: 7_300 },
      { name: 'demo-overlord', role: 'overlord', ip: '10.200.60.11', fromUpdate: false, requestedMs: 5_100, bootedMs: 5_100, readyMs: undefined, deployedMs: undefined, deployMs: undefined },
      { name: 'demo-minion-2', role: 'minion', ip: '10.200.60.35', fromUpdate: true, requestedMs: 8_200, bootedMs: 8_300, readyMs: 11_300, deployedMs: 16_800, deployMs: 5_500 },
    ]);
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^MACHINE\s+ROLE\s+IP\s+HEAT ASKED\s+BOOTED\s+READY\s+DEPLOYED\s+DEPLOY TOOK$/);
    expect(lines[1]).toMatch(/^demo-master-0\s+master\s+10\.200\.60\.32\s+\+20\.3 s\s+\+20\.4 s\s+\+24\.7 s\s+\+32\.3 s\s+7\.3 s$/);
    expect(lines[2]).toMatch(/^demo-overlord\s+overlord\s+10\.200\.60\.11\s+\+5\.1 s\s+\+5\.1 s\s+-\s+-\s+-$/);
    expect(lines[3]).toMatch(/^demo-minion-2 \*/);
    expect(text).toContain('* booted by the stack update');
  });

  it('finds the machines whose ledger entry changed between two reads', () => {
    const entry = (id: string, updatedAt: string) => ({ id, updatedAt }) as unknown as LedgerEntry;
    const before = new Map([['a', entry('a', 't1')], ['b', entry('b', 't1')]]);
    expect(touchedMachines(before, new Map([['a', entry('a', 't1')], ['b', entry('b', 't1')], ['c', entry('c', 't2')]]))).toEqual([]);
    expect(touchedMachines(before, new Map([['a', entry('a', 't1')], ['b', entry('b', 't2')]]))).toEqual(['b']);
    expect(touchedMachines(before, new Map([['a', entry('a', 't1')]]))).toEqual(['b']);
  });
});
