import { CorekubeError } from '../../core/errors.ts';
import { Backoffs, type Backoff } from '../../core/retry.ts';
import type { Clock } from '../../core/clock.ts';
import type { HostRunner, HostTarget } from '../edges/host-runner.ts';
import type { Until } from '../../contracts/step.ts';
import * as remote from '../edges/remote-commands.ts';
import type { Step } from '../../contracts/step.ts';
import type { NodeReadiness } from '../kubernetes/node-ready.ts';
import type { EtcdMembers } from '../edges/etcd-members.ts';

/**
 * The executor: runs ONE attempt of one step on one machine through HostRunner and the argv builders of
 * remote-commands.ts. It knows nothing of roles, the ledger or retries — it throws a CorekubeError marked
 * retryable or terminal, and the reconciler (the loop) decides what happens next.
 *
 * A `start` step is idempotent by construction: it reads the unit's state first and does nothing when the
 * unit is already where the step wants it (this is how a step left in flight by a stopped overlord is
 * "checked before it is redone", and why a reboot's re-check does not restart running units). Otherwise
 * it clears a stale `failed` and starts the unit with `systemctl start`, which returns when systemd has
 * finished the start job — the moment the machine's work is done, not the next tick of a poll (the
 * overlord must cost the machines no time). A service must then still be up `poll.initialMs` after
 * its start (a service that dies at once is caught, not recorded as started). Then it reads the unit's
 * state — at a growing interval while it is still on its way — until the target state, `failed` (at once:
 * E_UNIT_FAILED with the unit's last journal lines), or the step's timeout (E_STEP_TIMEOUT).
 */
export interface ExecutorOptions {
  readonly remote: remote.RemoteContext;
  /** how long a start step may wait for its unit, per target state */
  readonly startTimeoutMs: Readonly<Record<Until, number>>;
  /**
   * a service counts as started once still up `initialMs` after its start; unit state reads while a unit
   * is on its way: `initialMs` apart, then ×`factor`, at most `maxMs` apart
   */
  readonly poll: Backoff;
  /** one remote command (not the wait) */
  readonly commandTimeoutMs: number;
}

export const DEFAULT_EXECUTOR_OPTIONS: Omit<ExecutorOptions, 'remote'> = Object.freeze({
  // the download fetches every release binary of the role: give it time on a slow mirror
  startTimeoutMs: Object.freeze({ exited: 15 * 60_000, active: 3 * 60_000 }),
  poll: Object.freeze({ initialMs: 200, factor: 1.5, maxMs: 2_000 }),
  commandTimeoutMs: 60_000,
});

export interface StepResult {
  /** false when a start step found its unit already in the target state and did nothing */
  readonly changed: boolean;
}

export interface ExecutorPorts {
  readonly hosts: HostRunner;
  readonly clock: Clock;
  /** the Kubernetes side of `node-ready` steps (overlord/kubernetes/node-ready.ts); absent = none are planned */
  readonly nodes?: NodeReadiness;
  /** a master's etcd member made before its first start (overlord/edges/etcd-members.ts); absent = no masters deployed */
  readonly etcd?: Pick<EtcdMembers, 'ensureMember' | 'promote'>;
  /** a restart is about to be asked for: the unit's invocation before it, recorded (the ledger's step `from`) */
  readonly beforeRestart?: (invocation: string) => Promise<void>;
}

export async function runStep(ports: ExecutorPorts, target: HostTarget, step: Step, options: ExecutorOptions, signal?: AbortSignal): Promise<StepResult> {
  const run = async (argv: readonly string[], stdin?: string, timeoutMs = options.commandTimeoutMs) => {
    const res = await ports.hosts.exec(target, argv, { timeoutMs, ...(stdin === undefined ? {} : { stdin }), ...(signal ? { signal } : {}) });
    return res;
  };
  const mustSucceed = async (what: string, argv: readonly string[], stdin?: string) => {
    const res = await run(argv, stdin);
    if (res.code !== 0) {
      throw new CorekubeError('E_COMMAND_FAILED', `${what} on ${target.ip} exited ${res.code}: ${excerpt(res.stderr || res.stdout)}`, {
        hint: `run '${argv.join(' ')}' on ${target.ip} to see why`,
        retryable: true,
      });
    }
    return res;
  };

  switch (step.kind) {
    case 'write-units': {
      for (const { argv, stdin } of remote.writeFiles(options.remote, step.files)) {
        // argv names the path and mode only; the content goes on stdin and is never logged
        await mustSucceed(`writing ${argv.at(-2)}`, argv, stdin);
      }
      return { changed: true };
    }
    case 'daemon-reload':
      await mustSucceed('systemctl daemon-reload', remote.daemonReload(options.remote));
      return { changed: true };
    case 'start':
      return startAndWait(ports, target, step.unit, step.until, step.restart === true, step.replaces, options, run, mustSucceed, signal);
    case 'node-ready':
      if (!ports.nodes) throw new CorekubeError('E_INTERNAL', `a node-ready step for ${step.node}, but this overlord has no Kubernetes API`, { hint: 'runOverlord needs its kubernetes option to deploy machines that run a kubelet' });
      return ports.nodes.ensureReady(target, step.node, signal);
    case 'drain':
    case 'uncordon':
      if (!ports.nodes) throw new CorekubeError('E_INTERNAL', `a ${step.kind} step for ${step.node}, but this overlord has no Kubernetes API`, { hint: 'runOverlord needs its kubernetes option to change machines that run a kubelet' });
      return step.kind === 'drain' ? ports.nodes.drain(step.node, signal) : ports.nodes.uncordon(step.node);
    case 'etcd-member':
    case 'etcd-promote':
      if (!ports.etcd) throw new CorekubeError('E_INTERNAL', `an ${step.kind} step for ${step.member.name}, but this overlord does not manage etcd members`, { hint: 'runOverlord makes one for every term: this is a bug' });
      return step.kind === 'etcd-member' ? ports.etcd.ensureMember(target, step.member, signal) : ports.etcd.promote(target, step.member, signal);
  }
}

type Run = (argv: readonly string[], stdin?: string, timeoutMs?: number) => Promise<{ code: number; stdout: string; stderr: string }>;

async function startAndWait(
  ports: ExecutorPorts,
  target: HostTarget,
  unit: string,
  until: Until,
  restart: boolean,
  replaces: string | undefined,
  options: ExecutorOptions,
  run: Run,
  mustSucceed: (what: string, argv: readonly string[]) => Promise<unknown>,
  signal: AbortSignal | undefined,
): Promise<StepResult> {
  const read = async () => remote.parseUnitState(((await mustSucceed(`reading the state of ${unit}`, remote.unitState(options.remote, unit))) as { stdout: string }).stdout);
  // enabled first, also when it is already up (a machine deployed before units were enabled): systemd then
  // starts it at every boot by itself, in its dependency order, whether or not an overlord is running
  await mustSucceed(`systemctl enable ${unit}`, remote.enableUnit(options.remote, unit));
  const before = await read();
  // a restart a stopped overlord asked for already (the unit has a newer invocation than it recorded): wait for
  // it, never restart twice
  const already = restart && replaces !== undefined && replaces !== '' && before.invocationId !== replaces;
  // a restart (the unit runs on older inputs) is never skipped: it is done once a new invocation is up
  const fresh = already ? replaces : restart ? before.invocationId : null;
  if (!restart && reached(before, until, null)) return { changed: false };
  if (before.activeState === 'failed' && !already) await mustSucceed(`systemctl reset-failed ${unit}`, remote.resetFailed(options.remote, unit));

  const verb = restart ? 'restart' : 'start';
  const started = ports.clock.now();
  const deadline = started + options.startTimeoutMs[until];
  if (restart && !already) await ports.beforeRestart?.(before.invocationId);
  if (!already) {
    try {
      const job = await run(restart ? remote.restartUnit(options.remote, unit) : remote.startUnit(options.remote, unit), undefined, options.startTimeoutMs[until]);
      if (job.code !== 0) {
        // a failed job is read below (failed, or restarting: E_UNIT_FAILED with the journal); anything else
        // (no such unit, no privilege) is the command's own failure
        const state = await read();
        if (!hasFailed(state) && !reached(state, until, before.invocationId, fresh)) {
          throw new CorekubeError('E_COMMAND_FAILED', `systemctl ${verb} ${unit} on ${target.ip} exited ${job.code}: ${excerpt(job.stderr || job.stdout)}`, {
            hint: `run 'systemctl ${verb} ${unit}' on ${target.ip} to see why`,
            retryable: true,
          });
        }
      }
    } catch (err) {
      // past the deadline the job may still run: stop waiting for it and report the unit's state below
      if (!(err instanceof CorekubeError && err.code === 'E_SSH' && ports.clock.now() >= deadline - 1_000)) throw err;
    }
  }
  if (until === 'active') {
    const settle = started + options.poll.initialMs - ports.clock.now();
    if (settle > 0) await ports.clock.sleep(settle, signal);
  }

  const polls = new Backoffs(options.poll);
  for (let first = true; ; first = false) {
    if (!first) await ports.clock.sleep(Math.min(polls.next(), Math.max(0, deadline - ports.clock.now())), signal);
    const state = await read();
    if (reached(state, until, before.invocationId, fresh)) return { changed: true };
    if (hasFailed(state)) {
      const journal = await journalOf(run, options, unit);
      throw new CorekubeError('E_UNIT_FAILED', `${unit} failed on ${target.ip} (${describe(state)})${journal}`, {
        hint: `run 'journalctl -u ${unit}' on ${target.ip}`,
        retryable: true,
      });
    }
    if (ports.clock.now() >= deadline) {
      const journal = await journalOf(run, options, unit);
      throw new CorekubeError('E_STEP_TIMEOUT', `${unit} on ${target.ip} did not become ${until} within ${Math.round(options.startTimeoutMs[until] / 1000)} s (${describe(state)})${journal}`, {
        hint: `run 'systemctl status ${unit}' and 'journalctl -u ${unit}' on ${target.ip}`,
        retryable: true,
      });
    }
  }
}

/**
 * Has the unit reached the step's target? `exited`: a oneshot that finished successfully — `active/exited`
 * with RemainAfterExit, or `inactive` with result `success` from a run of this boot (an invocation id, and
 * a new one when we started it: `before` is the id seen before our start, null when only checking).
 * `replaced`: after a restart, the invocation id seen before it — only a newer invocation counts.
 */
export function reached(state: remote.UnitState, until: Until, before: string | null, replaced: string | null = null): boolean {
  if (replaced !== null && replaced !== '' && state.invocationId === replaced) return false;
  if (until === 'active') return state.activeState === 'active' || state.activeState === 'reloading';
  if (state.activeState === 'active' && state.subState === 'exited') return true;
  return state.activeState === 'inactive' && state.result === 'success' && state.invocationId !== '' && state.invocationId !== before;
}

/** `failed`, or a service systemd is restarting after it exited unsuccessfully (a crash loop). */
export function hasFailed(state: remote.UnitState): boolean {
  return state.activeState === 'failed' || (state.subState === 'auto-restart' && state.result !== 'success' && state.result !== '');
}

function describe(s: remote.UnitState): string {
  return `ActiveState=${s.activeState} SubState=${s.subState} Result=${s.result}`;
}

async function journalOf(run: Run, options: ExecutorOptions, unit: string): Promise<string> {
    try {
    const res = await run(remote.journalExcerpt(options.remote, unit));
    const text = res.stdout.trimEnd();
    if (res.code !== 0) return `\n(journal unavailable: exit ${res.code} ${excerpt(res.stderr)})`;
    return text === '' ? '\n(journal is empty)' : `\nlast journal lines of ${unit}:\n${text}`;
  } catch (err) {
    return `\n(journal unavailable: ${err instanceof Error ? err.message : String(err)})`;
  }
}

function excerpt(text: string, max = 500): string {
  const t = text.trim();
  return t.length <= max ? t || '(no output)' : `…${t.slice(-max)}`;
}
