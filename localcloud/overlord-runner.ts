/**
 * Runs the overlord of the local cloud's overlord server. The machine boots from its user_data like every
 * other (cloud-init writes /etc/corekube, overlord.service runs and prepares /var/lib/corekube and the
 * secrets for the image's user), but Docker cannot run inside a systemd-nspawn machine here, so — the local
 * cloud's one deviation, named in its logs — the container runs on the host:
 *
 * - `docker` (default when Debian's docker.io is installed): on a private Docker engine (docker.ts), from the
 *   image built from overlord/Dockerfile, with exactly the `docker run` of the machine's overlord.service
 *   (read from the machine) except that it is detached and its two volumes are the machine's own
 *   directories: `-v <machine root>/etc/corekube:/etc/corekube:ro -v <machine root>/var/lib/corekube:…`.
 *   Its logs are `docker logs overlord`, as on a real overlord server.
 * - `process`: `corekube overlord` as a child process of this one, on the same two directories (no Docker).
 *
 * Standby overlord servers (overlord_count > 1) run the same way, from their own machine's files. On a real
 * server each is the container `overlord` on its own host's network; here they share the host, so each gets
 * its own container name (`overlord-standby-<n>`) and a free --health-port — the rest of its `docker run`
 * (including `--standby`) is its unit's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { CorekubeError } from '../core/errors.ts';
import { configPath, MACHINE_PATHS, OVERLORD_HEALTH_PORT } from '../cloud-config/machine-paths.ts';
import { onExit } from './cleanup.ts';
import { buildOverlordImage, dockerClient, dockerMissing, ensureNodeBaseImage, startDockerEngine, type BuiltImage, type DockerEngine } from './docker.ts';
import type { Machine } from './machines/machines.ts';
import { canListen, freePort } from './ports.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const OVERLORD_CONTAINER = 'overlord';

export type OverlordMode = 'docker' | 'process';

/** docker when a private engine can run here, else process. */
export function defaultOverlordMode(): OverlordMode {
  return dockerMissing() === undefined ? 'docker' : 'process';
}

export interface OverlordRunner {
  readonly mode: OverlordMode;
  /** the command that runs it (docker: the host's `docker run …`; process: node … corekube overlord …) */
  readonly command: readonly string[];
  /** everything it logged so far: `docker logs overlord` (docker), its stdout and stderr (process) */
  logs(): Promise<string>;
  /** stops it (docker: `docker stop`, then the engine); idempotent */
  stop(): Promise<void>;
  /** kills it at once, as a crash or a lost server would (docker kill / SIGKILL); `logs()` is gone with it */
  kill(): Promise<void>;
}

/** Which overlord of the stack a runner plays: the bootstrap server's (default) or a standby server's. */
export interface OverlordInstance {
  /** container name (docker) and label; default `overlord` */
  readonly name?: string;
  /** another --health-port than the unit's (standbys share the host's network with the bootstrap overlord) */
  readonly healthPort?: number;
}

export interface OverlordRunnerOptions {
  readonly mode: OverlordMode;
  /** each line it logs, as it comes (JSON lines) */
  readonly onLine?: (line: string) => void;
}

/**
 * What must exist before the overlord server boots: docker mode starts the engine and builds the image
 * (tag: the spec's overlord.image) now, while Heat and the machines start.
 */
export class OverlordHost {
  readonly mode: OverlordMode;
  #engine: DockerEngine | undefined;
  image: BuiltImage | undefined;

  private constructor(mode: OverlordMode, engine: DockerEngine | undefined) {
    this.mode = mode;
    this.#engine = engine;
  }

  static async prepare(mode: OverlordMode, imageTag: string): Promise<OverlordHost> {
    if (mode === 'process') return new OverlordHost(mode, undefined);
    const missing = dockerMissing();
    if (missing) throw new CorekubeError('E_IO', `the overlord cannot run in Docker here: ${missing}`, { hint: 'install docker.io (scripts/setup), or run with --overlord process' });
    const engine = await startDockerEngine();
    const host = new OverlordHost(mode, engine);
    try {
      await ensureNodeBaseImage(engine);
      host.image = await buildOverlordImage(engine, { tag: imageTag });
    } catch (err) {
      await host.close();
      throw err;
    }
    return host;
  }

  get engine(): DockerEngine | undefined {
    return this.#engine;
  }

  /**
   * Starts the overlord on the overlord machine's files. The machine's overlord.service must have run
   * (its ExecStartPre made the state directory and the secrets the image's user's).
   */
  async start(machine: Machine, options: Omit<OverlordRunnerOptions, 'mode'> = {}, instance: OverlordInstance = {}): Promise<OverlordRunner> {
    return this.mode === 'docker' ? this.#startContainer(machine, options, instance) : startProcess(machine, options, instance);
  }

  /** Stops the engine (docker mode; every container with it). Idempotent. */
  async close(): Promise<void> {
    const engine = this.#engine;
    this.#engine = undefined;
    await engine?.stop();
  }

  async #startContainer(machine: Machine, options: Omit<OverlordRunnerOptions, 'mode'>, instance: OverlordInstance): Promise<OverlordRunner> {
    const engine = this.#engine;
    if (!engine) throw new Error('the Docker engine is stopped');
    const unit = readFileSync(path.join(machine.root, MACHINE_PATHS.unitDir, 'overlord.service'), 'utf8');
    const name = instance.name ?? OVERLORD_CONTAINER;
    const args = withInstance(hostDockerRun(unit, machine.root), name, instance.healthPort);
    const port = healthPortOf(args);
    if (port !== undefined && !(await canListen('127.0.0.1', port))) {
      throw new CorekubeError('E_IO', `port ${port} (the overlord's --health-port, host network) is in use on this host`, { hint: 'stop what listens there, or run with --overlord process' });
    }
    await engine.dockerOk(['rm', '--force', name]);
    await engine.dockerOk(args, { timeoutMs: 60_000 });
    const follower = spawn(dockerClient(), ['logs', '--follow', name], { env: engine.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const unregister = onExit(`docker logs --follow ${name}`, () => follower.kill('SIGKILL'));
    forEachLine(follower, (line) => options.onLine?.(line));
    let stopped = false;
    return {
      mode: 'docker',
      command: ['docker', ...args],
      logs: async () => {
        const r = await engine.docker(['logs', name]);
        return r.stdout + r.stderr;
      },
      stop: async () => {
        if (stopped) return;
        stopped = true;
        // as the machine's ExecStop does: the overlord resigns and closes its connections
        await engine.docker(['stop', '--time', '10', name], { timeoutMs: 30_000 });
        await engine.docker(['rm', '--force', name]);
        follower.kill('SIGTERM');
        unregister();
      },
      kill: async () => {
        // the unit's --rm removes the container; what it logged was streamed to onLine as it came
        await engine.dockerOk(['kill', '--signal', 'KILL', name], { timeoutMs: 30_000 });
      },
    };
  }
}

/**
 * PURE: the host's `docker run` argv (without the client) for the overlord container, from the machine's
 * overlord.service: its ExecStart's docker run, detached, with each volume's host side inside the machine's
 * root. Throws when the unit has no `docker run`.
 */
export function hostDockerRun(unitText: string, machineRoot: string): string[] {
  const joined = unitText.replace(/\\\n/g, ' ');
  const line = joined.split('\n').find((l) => l.startsWith('ExecStart='));
  if (!line) throw new Error('overlord.service has no ExecStart=');
  const words = line.slice('ExecStart='.length).trim().split(/\s+/);
  if (!/(^|\/)docker$/.test(words[0] ?? '') || words[1] !== 'run') throw new Error(`overlord.service does not run "docker run": ${line}`);
  const out = ['run', '--detach'];
  for (let i = 2; i < words.length; i++) {
    const w = words[i]!;
    if ((w === '-v' || w === '--volume') && words[i + 1] !== undefined) {
      const [source, ...rest] = words[++i]!.split(':');
      if (!source?.startsWith('/')) throw new Error(`overlord.service mounts a volume that is not a host path: ${words[i]}`);
      out.push(w, [path.join(machineRoot, source), ...rest].join(':'));
    } else {
      out.push(w);
    }
  }
  return out;
}

/** PURE: the docker run argv with another container name and, when given, another --health-port. */
export function withInstance(args: readonly string[], name: string, healthPort?: number): string[] {
  const out = [...args];
  const n = out.indexOf('--name');
  if (n < 0 || out[n + 1] === undefined) throw new Error('overlord.service\'s docker run names no container (--name)');
  out[n + 1] = name;
  if (healthPort !== undefined) {
    const h = out.indexOf('--health-port');
    if (h < 0 || out[h + 1] === undefined) throw new Error('overlord.service\'s docker run has no --health-port');
    out[h + 1] = String(healthPort);
  }
  return out;
}

function healthPortOf(args: readonly string[]): number | undefined {
  const i = args.indexOf('--health-port');
  return i >= 0 ? Number(args[i + 1]) : undefined;
}

async function startProcess(machine: Machine, options: Omit<OverlordRunnerOptions, 'mode'>, instance: OverlordInstance): Promise<OverlordRunner> {
  const config = path.join(machine.root, configPath('overlordConfig'));
  if (!existsSync(config)) throw new CorekubeError('E_IO', `the overlord machine has no ${configPath('overlordConfig')}`, { hint: 'its cloud-init did not write it: read cloud-init\'s log on the machine' });
  const port = instance.healthPort ?? ((await canListen('127.0.0.1', OVERLORD_HEALTH_PORT)) ? OVERLORD_HEALTH_PORT : await freePort());
  // a standby server's unit runs the container with --standby
  const unit = readFileSync(path.join(machine.root, MACHINE_PATHS.unitDir, 'overlord.service'), 'utf8');
  const standby = /\s--standby(\s|$)/.test(unit.replace(/\\\n/g, ' '));
  const command = [
    process.execPath, path.join(ROOT, 'bin/corekube.js'), 'overlord', '--config', config,
    '--config-dir', path.join(machine.root, path.dirname(configPath('overlordConfig'))),
    '--state-dir', path.join(machine.root, MACHINE_PATHS.overlordState),
    '--health-port', String(port), '--log-format', 'json', ...(standby ? ['--standby'] : []),
  ];
  const child = spawn(command[0]!, command.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const unregister = onExit(`overlord process ${child.pid}`, () => child.kill('SIGKILL'));
  let out = '';
  forEachLine(child, (line) => {
    out += `${line}\n`;
    options.onLine?.(line);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stopped = false;
  return {
    mode: 'process',
    command,
    logs: async () => out,
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
      unregister();
    },
  };
}

/** Calls `onLine` for each line the child writes on stdout or stderr. */
function forEachLine(child: ChildProcess, onLine: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (stream) createInterface({ input: stream, crlfDelay: Infinity }).on('line', onLine);
  }
}
