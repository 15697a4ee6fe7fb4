import { CorekubeError } from '../core/errors.ts';
import type { ExecOptions, ExecResult, HostRunner, HostTarget } from '../overlord/edges/host-runner.ts';

/**
 * THE ONE STAND-IN of the benchmark: machines replaced by a model of what the executor relies on in
 * systemd, where every step costs the same machine time `stepLatencyMs` and the network costs nothing —
 * the benchmark measures orchestration, not SSH:
 *
 * - write-units: the machine's unit files take `stepLatencyMs` to write in all (charged on the first of its
 *   `files`, the others cost nothing: one command each, in order);
 * - daemon-reload: `stepLatencyMs`;
 * - start: the unit reaches its state (`active`, or `active/exited` for the download oneshot) exactly
 *   `stepLatencyMs` after its start, and a blocking `systemctl start` returns then (systemd's start job);
 *   reading its state, reset-failed and the journal are instant.
 *
 * So a machine of S steps needs S × stepLatencyMs of its own time, and whatever the overlord adds on top
 * (waits for a state it could have seen earlier, etcd writes between steps) is orchestration overhead.
 */
export interface SimulatedHostsOptions {
  readonly stepLatencyMs: number;
  /** how many unit files each machine's write-units step writes (by machine id) */
  readonly filesOf: (id: string) => number;
}

interface Unit {
  readyAt: number;
  /** a blocking start returned: the unit is up (timers may fire a hair before Date.now() reaches readyAt) */
  ready: boolean;
  invocation: number;
  oneshot: boolean;
}

export class SimulatedHosts implements HostRunner {
  readonly commands = { total: 0, stateReads: 0 };
  private readonly machines = new Map<string, Map<string, Unit>>();
  /** files written so far, by machine */
  private readonly written = new Map<string, number>();

  constructor(private readonly options: SimulatedHostsOptions) {}

  async exec(target: HostTarget, argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    this.commands.total++;
    const a = argv[0] === 'sudo' ? argv.slice(2) : argv;
    const L = this.options.stepLatencyMs;
    const units = this.unitsOf(target.id);
    if (a[0] === 'sh' && a[3] === 'corekube-write-file') {
      // the step's machine time is charged on its first file (the files come in order, one command each)
      const n = this.written.get(target.id) ?? 0;
      this.written.set(target.id, n + 1);
      if (n % Math.max(1, this.options.filesOf(target.id)) === 0) await wait(L, options.signal);
      else await tick();
      return ok();
    }
    if (a[0] === 'systemctl' && a[1] === 'daemon-reload') {
      await wait(L, options.signal);
      return ok();
    }
    if (a[0] === 'systemctl' && a[1] === 'start') {
      // the start job: queued (--no-block) or waited for, until the unit is ready
      const name = a.at(-1)!;
      let u = units.get(name);
      if (!u) {
        u = { readyAt: Date.now() + L, ready: false, invocation: 1, oneshot: name.includes('download') };
        units.set(name, u);
      }
      if (a[2] === '--no-block') await tick();
      else {
        await wait(Math.max(0, u.readyAt - Date.now()), options.signal);
        u.ready = true;
      }
      return ok();
    }
    if (a[0] === 'systemctl' && a[1] === 'show') {
      this.commands.stateReads++;
      const u = units.get(a.at(-1)!);
      await tick();
      if (!u) return ok('ActiveState=inactive\nSubState=dead\nResult=success\nInvocationID=\n');
      const ready = u.ready || Date.now() >= u.readyAt;
      const state = !ready ? 'ActiveState=activating\nSubState=start' : u.oneshot ? 'ActiveState=active\nSubState=exited' : 'ActiveState=active\nSubState=running';
      return ok(`${state}\nResult=success\nInvocationID=inv${u.invocation}\n`);
    }
    if (a[0] === 'systemctl' && (a[1] === 'reset-failed' || a[1] === 'enable')) {
      await tick();
      return ok();
    }
    if (a[0] === 'journalctl') return ok('');
    throw new CorekubeError('E_INTERNAL', `the simulated machine does not know \`${a.slice(0, 2).join(' ')}\``, { hint: 'teach bench/simulated-hosts.ts the new remote command' });
  }

  async close(): Promise<void> {}

  private unitsOf(id: string): Map<string, Unit> {
    let m = this.machines.get(id);
    if (!m) this.machines.set(id, (m = new Map()));
    return m;
  }
}

function ok(stdout = ''): ExecResult {
  return { code: 0, stdout, stderr: '' };
}

/** one turn of the event loop: a command is never synchronous, even when it costs no time */
function tick(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

function wait(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => (clearTimeout(t), reject(signal!.reason));
    const t = setTimeout(() => (signal?.removeEventListener('abort', onAbort), resolve()), ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
