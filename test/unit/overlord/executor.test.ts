import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { DEFAULT_EXECUTOR_OPTIONS, hasFailed, reached, runStep, type ExecutorOptions } from '../../../overlord/deploy/executor.ts';
import type { HostTarget } from '../../../overlord/edges/host-runner.ts';
import type { Step } from '../../../contracts/step.ts';
import { FakeClock, FakeMachines } from './fakes.ts';

const target: HostTarget = { id: 'a'.repeat(32), ip: '10.240.0.40' };
const options: ExecutorOptions = { ...DEFAULT_EXECUTOR_OPTIONS, remote: { user: 'corekube' }, startTimeoutMs: { exited: 60_000, active: 30_000 } };
const write: Step = {
  kind: 'write-units',
  id: 'write-units',
  hash: 'h',
  files: [
    { path: '/etc/systemd/system/corekube-download.service', content: '[Service]\nType=oneshot\n', mode: '0644' },
    { path: '/etc/systemd/system/kubelet.service', content: '[Service]\n', mode: '0644' },
    { path: '/etc/corekube/secret.key', content: 'KEY', mode: '0600' },
  ],
};
const reload: Step = { kind: 'daemon-reload', id: 'daemon-reload' };
const download: Step = { kind: 'start', id: 'start:corekube-download.service', unit: 'corekube-download.service', until: 'exited', inputs: 'i0' };
const kubelet: Step = { kind: 'start', id: 'start:kubelet.service', unit: 'kubelet.service', until: 'active', inputs: 'i0' };

async function setup() {
  const clock = new FakeClock();
  const hosts = new FakeMachines();
  const ports = { hosts, clock };
  const m = hosts.machine(target.id);
  await runStep(ports, target, write, options);
  await runStep(ports, target, reload, options);
  /** runs a step to its end, firing the clock's timers (the executor's waits) as needed */
  const run = async (step: Step) => {
    let result: { changed: boolean } | undefined;
    let error: unknown;
    const p = runStep(ports, target, step, options).then(
      (r) => (result = r),
      (e: unknown) => (error = e),
    );
    await clock.runUntil(() => result !== undefined || error !== undefined);
    await p;
    return { result, error: error as CorekubeError | undefined };
  };
  return { clock, hosts, m, run };
}

describe('executor: write-units and daemon-reload', () => {
  it('writes every file with its mode and reloads systemd', async () => {
    const { m } = await setup();
    expect(m.files.get('/etc/corekube/secret.key')).toEqual({ content: 'KEY', mode: '0600' });
    expect(m.files.size).toBe(3);
    expect(m.reloads).toBe(1);
  });

  it('runs privileged commands with sudo -n, the content on stdin, never in argv', async () => {
    const clock = new FakeClock();
    const seen: { argv: readonly string[]; stdin: string | undefined }[] = [];
    const hosts = { exec: async (_t: HostTarget, argv: readonly string[], o?: { stdin?: string }) => (seen.push({ argv, stdin: o?.stdin }), { code: 0, stdout: '', stderr: '' }), close: async () => {} };
    await runStep({ hosts, clock }, target, write, options);
    expect(seen).toHaveLength(3);
    expect(seen.every((c) => c.argv[0] === 'sudo' && c.argv[1] === '-n')).toBe(true);
    expect(seen.some((c) => c.argv.join(' ').includes('KEY'))).toBe(false);
    expect(seen[2]!.stdin).toBe('KEY');
  });

  it('reports a command that exits non-zero as E_COMMAND_FAILED, retryable', async () => {
    const clock = new FakeClock();
    const hosts = { exec: async () => ({ code: 1, stdout: '', stderr: 'Failed to reload daemon: Access denied' }), close: async () => {} };
    const err = await runStep({ hosts, clock }, target, reload, options).catch((e: unknown) => e as CorekubeError);
    expect(err).toMatchObject({ code: 'E_COMMAND_FAILED', retryable: true });
    expect((err as CorekubeError).message).toContain('Access denied');
  });
});

describe('executor: start and wait', () => {
  it('restarts a running unit whose inputs changed (never skipped as already active), done once a new invocation runs', async () => {
    const { m, run } = await setup();
    await run(download);
    await run(kubelet);
    const before = { download: m.unit('corekube-download.service').invocation, kubelet: m.unit('kubelet.service').invocation };
    expect((await run({ ...kubelet, restart: true })).result).toEqual({ changed: true });
    expect((await run({ ...download, restart: true })).result).toEqual({ changed: true });
    expect(m.log.filter((l) => l.startsWith('systemctl restart'))).toEqual(['systemctl restart kubelet.service', 'systemctl restart corekube-download.service']);
    expect(m.unit('kubelet.service')).toMatchObject({ activeState: 'active', invocation: before.kubelet + 1 });
    expect(m.unit('corekube-download.service')).toMatchObject({ activeState: 'active', subState: 'exited', invocation: before.download + 1 });
    // without `restart` the same step finds it running and does nothing
    expect((await run(kubelet)).result).toEqual({ changed: false });
  });

  it('counts only a newer invocation as restarted', () => {
    const up = { activeState: 'active', subState: 'running', result: 'success', invocationId: 'inv1' };
    expect(reached(up, 'active', 'inv1', 'inv1')).toBe(false);
    expect(reached({ ...up, invocationId: 'inv2' }, 'active', 'inv1', 'inv1')).toBe(true);
  });

  it('starts the download and waits until it has exited successfully', async () => {
    const { m, run } = await setup();
    const { result } = await run(download);
    expect(result).toEqual({ changed: true });
    expect(m.unit('corekube-download.service')).toMatchObject({ activeState: 'active', subState: 'exited' });
    expect(m.starts('corekube-download.service')).toBe(1);
  });

  it('accepts a oneshot without RemainAfterExit that ran in this start (inactive, success, new invocation)', async () => {
    const { m, run } = await setup();
    m.behaviour.set('corekube-download.service', { oneshotNoRemain: true });
    const { result } = await run(download);
    expect(result).toEqual({ changed: true });
    expect(m.unit('corekube-download.service').activeState).toBe('inactive');
  });

  it('waits on the start job itself, not on a poll: a oneshot is seen done as soon as systemctl start returns', async () => {
    const { clock, m, run } = await setup();
    const t0 = clock.now();
    expect((await run(download)).result).toEqual({ changed: true });
    expect(clock.now() - t0).toBe(0);
    expect(m.log.filter((l) => l.startsWith('systemctl show'))).toHaveLength(2); // before the start, and after it
  });

  it('counts a service as started once it is still up the settle time after its start', async () => {
    const { clock, m, run } = await setup();
    const t0 = clock.now();
    expect((await run(kubelet)).result).toEqual({ changed: true });
    expect(clock.now() - t0).toBe(options.poll.initialMs);
    expect(m.log.filter((l) => l.startsWith('systemctl show'))).toHaveLength(2);
  });

  it('starts a service and waits until it is active', async () => {
    const { m, run } = await setup();
    expect((await run(kubelet)).result).toEqual({ changed: true });
    expect(m.unit('kubelet.service').activeState).toBe('active');
  });

  it('does not start a unit that is already where the step wants it (a step redone after a crash)', async () => {
    const { m, run } = await setup();
    await run(kubelet);
    await run(download);
    expect(await run(kubelet)).toMatchObject({ result: { changed: false } });
    expect(await run(download)).toMatchObject({ result: { changed: false } });
    expect(m.starts('kubelet.service')).toBe(1);
    expect(m.starts('corekube-download.service')).toBe(1);
  });

  it('fails at once when the unit fails, with its journal lines and a hint naming journalctl', async () => {
    const { clock, m, run } = await setup();
    m.behaviour.set('kubelet.service', { outcome: 'fail' });
    const t0 = clock.now();
    const { error } = await run(kubelet);
    expect(error).toMatchObject({ code: 'E_UNIT_FAILED', retryable: true });
    expect(error!.message).toContain('fatal: something went wrong');
    expect(error!.hint).toBe("run 'journalctl -u kubelet.service' on 10.240.0.40");
    expect(clock.now() - t0).toBeLessThan(5_000);
  });

  it('treats a service systemd keeps restarting after crashes as failed', async () => {
    const { m, run } = await setup();
    m.behaviour.set('kubelet.service', { outcome: 'crashloop' });
    expect((await run(kubelet)).error).toMatchObject({ code: 'E_UNIT_FAILED' });
  });

  it('clears a previous failure before starting again, so the old state is not mistaken for the new one', async () => {
    const { m, run } = await setup();
    m.behaviour.set('kubelet.service', { failTimes: 1 });
    expect((await run(kubelet)).error).toMatchObject({ code: 'E_UNIT_FAILED' });
    expect((await run(kubelet)).result).toEqual({ changed: true });
    expect(m.starts('kubelet.service')).toBe(2);
  });

  it('gives up after the step timeout with E_STEP_TIMEOUT, polling at a growing interval', async () => {
    const { clock, m, run } = await setup();
    m.behaviour.set('kubelet.service', { outcome: 'hang' });
    const t0 = clock.now();
    const { error } = await run(kubelet);
    expect(error).toMatchObject({ code: 'E_STEP_TIMEOUT', retryable: true });
    expect(clock.now() - t0).toBe(30_000);
    const shows = m.log.filter((l) => l.startsWith('systemctl show')).length;
    expect(shows).toBeLessThan(30); // 200 ms × 1.5… capped at 2 s: about 20 reads in 30 s, not 150
  });

  it('reports a unit that does not exist as a failed command', async () => {
    const { run } = await setup();
    const { error } = await run({ kind: 'start', id: 'start:nope.service', unit: 'nope.service', until: 'active', inputs: 'i0' });
    expect(error).toMatchObject({ code: 'E_COMMAND_FAILED' });
  });

  it('rejects when the machine cannot be reached (E_SSH, retryable)', async () => {
    const { m, run } = await setup();
    m.reachable = false;
    expect((await run(kubelet)).error).toMatchObject({ code: 'E_SSH', retryable: true });
  });
});

describe('unit state rules', () => {
  const s = (activeState: string, subState: string, result = 'success', invocationId = 'x') => ({ activeState, subState, result, invocationId });
  it('a oneshot that never ran in this boot has not reached exited', () => {
    expect(reached(s('inactive', 'dead', 'success', ''), 'exited', null)).toBe(false);
    expect(reached(s('inactive', 'dead', 'success', 'x'), 'exited', 'x')).toBe(false);
    expect(reached(s('inactive', 'dead', 'success', 'y'), 'exited', 'x')).toBe(true);
  });
  it('activating is neither reached nor failed', () => {
    expect(reached(s('activating', 'start'), 'active', null)).toBe(false);
    expect(hasFailed(s('activating', 'start'))).toBe(false);
  });
});
