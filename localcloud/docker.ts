/**
 * A private Docker engine (Debian's docker.io) for tests and the demo, and the overlord image built on it
 * from the real overlord/Dockerfile. The engine is scripts/docker/dockerd.sh: its own socket, exec root and
 * pidfile under a state dir, no iptables, no bridge; images persist between runs in a shared data root (one
 * engine at a time; a second concurrent one gets a private root). There is no registry here, so the
 * Dockerfile's base (node:20-bookworm-slim) is made locally by scripts/docker/node-base-image.sh once and
 * reused while its label matches. Clients talk to the engine with `DOCKER_HOST=unix://…`.
 * `stop()` (or, failing that, process exit) stops exactly that engine, its containerd, shims and containers.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { onExit } from './cleanup.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOCKERD_SH = path.join(ROOT, 'scripts/docker/dockerd.sh');
const BASE_IMAGE_SH = path.join(ROOT, 'scripts/docker/node-base-image.sh');
/** the overlord's Dockerfile, relative to the repository root (the build context) */
export const OVERLORD_DOCKERFILE = 'overlord/Dockerfile';

/** The docker client: Debian's own (same release as its daemon) when installed, else the one on PATH. */
export function dockerClient(): string {
  return existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
}

/** Why a private engine cannot run here, or undefined. */
export function dockerMissing(): string | undefined {
  if (spawnSync('dockerd', ['--version'], { stdio: 'ignore' }).status !== 0) return 'dockerd is not installed (Debian package docker.io)';
  if (spawnSync(dockerClient(), ['--version'], { stdio: 'ignore' }).status !== 0) return 'the docker client is not installed (Debian package docker.io)';
  if (process.getuid?.() !== 0) return 'a private Docker engine needs root';
  return undefined;
}

export interface DockerResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface DockerEngine {
  readonly stateDir: string;
  /** unix:///…/docker.sock */
  readonly host: string;
  /** overlay2, or vfs where overlay2 cannot run */
  readonly storageDriver: string;
  readonly dataRoot: string;
  /** the environment of a docker client of this engine (DOCKER_HOST; the legacy builder, see build) */
  readonly env: NodeJS.ProcessEnv;
  /** runs the docker client against this engine; never throws on a non-zero exit */
  docker(args: readonly string[], options?: { readonly timeoutMs?: number; readonly cwd?: string }): Promise<DockerResult>;
  /** same, but a non-zero exit throws with the command and its stderr; resolves with stdout */
  dockerOk(args: readonly string[], options?: { readonly timeoutMs?: number; readonly cwd?: string }): Promise<string>;
  /** stops the engine and everything it runs, removes the state dir; idempotent */
  stop(): Promise<void>;
}

function runFile(file: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number }): Promise<DockerResult> {
  return new Promise((resolve) => {
    execFile(file, [...args], { env: options.env, cwd: options.cwd, timeout: options.timeoutMs ?? 120_000, maxBuffer: 64 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr: err && code === 1 && !stderr ? err.message : stderr });
    });
  });
}

/** Starts a private engine; state under a fresh directory in /tmp (short: the socket path is limited). */
export async function startDockerEngine(): Promise<DockerEngine> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'ckdocker-'));
  const stopSync = () => {
    spawnSync(DOCKERD_SH, ['stop', stateDir], { stdio: 'ignore', timeout: 60_000 });
  };
  const unregister = onExit(`docker engine ${stateDir}`, stopSync);
  const started = await runFile(DOCKERD_SH, ['start', stateDir], { timeoutMs: 120_000 });
  if (started.code !== 0) {
    stopSync();
    unregister();
    throw new Error(`the private Docker engine did not start:\n${started.stderr}${started.stdout}`);
  }
  const vars = Object.fromEntries(
    started.stdout.split('\n').filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string>;
  if (started.stderr.trim()) process.stderr.write(started.stderr);
  const host = vars.DOCKER_HOST!;
  // DOCKER_BUILDKIT=0: the legacy builder, which Debian's docker.io runs without a buildx plugin
  const env: NodeJS.ProcessEnv = { ...process.env, DOCKER_HOST: host, DOCKER_BUILDKIT: '0' };
  delete env.DOCKER_CONTEXT;
  delete env.DOCKER_CONFIG;
  const client = dockerClient();
  let stopped = false;
  const docker: DockerEngine['docker'] = (args, options = {}) => runFile(client, args, { env, ...options });
  return {
    stateDir,
    host,
    storageDriver: vars.COREKUBE_DOCKER_STORAGE_DRIVER ?? 'unknown',
    dataRoot: vars.COREKUBE_DOCKER_DATA_ROOT ?? '',
    env,
    docker,
    dockerOk: async (args, options) => {
      const r = await docker(args, options);
      if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.code}:\n${r.stderr}${r.stdout.slice(-4000)}`);
      return r.stdout;
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      const r = await runFile(DOCKERD_SH, ['stop', stateDir], { timeoutMs: 90_000 });
      unregister();
      if (r.code !== 0) throw new Error(`stopping the Docker engine failed:\n${r.stderr}`);
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/**
 * Makes the Dockerfile's base image (node:20-bookworm-slim) locally unless present: a label-matched local
 * stand-in is reused, a registry image is never replaced. Returns the script's one-line account.
 */
/** Stops the engine of a state directory (and its containers) and removes the directory: cleanup after a killed run. */
export async function stopDockerEngineDir(stateDir: string): Promise<void> {
  await runFile(DOCKERD_SH, ['stop', stateDir], { timeoutMs: 90_000 }).catch(() => undefined);
  await rm(stateDir, { recursive: true, force: true });
}

export async function ensureNodeBaseImage(engine: DockerEngine, tag = 'node:20-bookworm-slim'): Promise<string> {
  const r = await runFile(BASE_IMAGE_SH, [tag], { env: { ...engine.env, DOCKER: dockerClient() }, timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`making ${tag} failed:\n${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}

/** corekube/overlord:<package.json version>, the default `overlord.image` of a cluster spec */
export function overlordImageTag(): string {
  const { version } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  return `corekube/overlord:${version}`;
}

export interface BuiltImage {
  readonly tag: string;
  readonly id: string;
  /** wall time of `docker build` */
  readonly buildMs: number;
  /** the image's size (its own layers plus its base's), bytes */
  readonly sizeBytes: number;
  /** the base image's size, bytes */
  readonly baseSizeBytes: number;
}

/**
 * Builds the overlord image exactly as a user does, `docker build -f overlord/Dockerfile .` from the
 * repository root, with `--network host` so the build's `npm ci` reaches the npm registry (this engine
 * has no bridge). The base image must exist (ensureNodeBaseImage).
 */
export async function buildOverlordImage(engine: DockerEngine, options: { readonly tag?: string; readonly context?: string } = {}): Promise<BuiltImage> {
  const tag = options.tag ?? overlordImageTag();
  const context = options.context ?? ROOT;
  const version = tag.includes(':') ? tag.slice(tag.lastIndexOf(':') + 1) : 'latest';
  const started = Date.now();
  const r = await engine.docker(['build', '--network', 'host', '--build-arg', `VERSION=${version}`, '-f', OVERLORD_DOCKERFILE, '-t', tag, '.'], { cwd: context, timeoutMs: 600_000 });
  const buildMs = Date.now() - started;
  if (r.code !== 0) throw new Error(`docker build -f ${OVERLORD_DOCKERFILE} failed (exit ${r.code}):\n${failedStep(r.stdout + r.stderr)}`);
  const inspect = (ref: string) => engine.dockerOk(['image', 'inspect', '--format', '{{.Id}} {{.Size}}', ref]).then((s) => s.trim().split(' '));
  const [id = '', size = '0'] = await inspect(tag);
  const from = readFileSync(path.join(context, OVERLORD_DOCKERFILE), 'utf8').match(/^ARG NODE_IMAGE=(\S+)/m)?.[1] ?? 'node:20-bookworm-slim';
  const [, baseSize = '0'] = await inspect(from);
  return { tag, id, buildMs, sizeBytes: Number(size), baseSizeBytes: Number(baseSize) };
}

/** The failing step of a legacy-builder log: its "Step n/m" line, the first lines of its output, the last ones. */
function failedStep(log: string): string {
  const lines = log.split('\n');
  const start = lines.map((l) => l.startsWith('Step ')).lastIndexOf(true);
  const step = lines.slice(Math.max(start, 0));
  return step.length <= 40 ? step.join('\n') : [...step.slice(0, 25), '…', ...step.slice(-10)].join('\n');
}
