import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, chmodSync, closeSync, constants, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAuthConfig, type AuthConfig } from '../../cloud/auth-config.ts';
import { HeatClient } from '../../cloud/heat-client.ts';
import { KeystoneSession } from '../../cloud/keystone.ts';
import { CorekubeError } from '../../core/errors.ts';
import { renderTemplateFile } from '../../core/template.ts';
import { registerHeat } from './identity.ts';

/**
 * corekube's own runner of a real OpenStack Heat on this machine: Keystone (uwsgi) + heat-all (heat-api,
 * heat-api-cfn and heat-engine in one process, in-process `fake://` messaging), sqlite in WAL mode, the
 * legacy engine. Everything — configs, databases, keys, logs, pid files — lives in one state dir; nothing
 * under /etc is read or written except the files the Debian packages ship (api-paste.ini, policy.d).
 * It installs nothing: scripts/setup installs the packages (see README.md here).
 *
 * Addresses: Keystone serves 127.0.0.1 and, when `bindAddress` is given (a test bridge's address),
 * that address too. heat-api/heat-api-cfn take one bind address each: 127.0.0.1, or `bindAddress` when
 * given — then the catalog's Heat endpoints and the wait condition URLs carry it, so machines on the
 * bridge can signal, and the host reaches Heat there as well.
 *
 * Processes run in their own process groups; their pids are recorded in `<stateDir>/run/`. stopLocalHeat
 * signals exactly the processes of those groups whose command line names this state dir, so it is
 * idempotent and never touches another instance.
 */
export interface LocalHeatPorts {
  readonly keystone: number;
  readonly heat: number;
  readonly cfn: number;
}

/** The catalog's ports: Keystone 5000, heat-api 8004, heat-api-cfn 8000. */
export const DEFAULT_PORTS: LocalHeatPorts = Object.freeze({ keystone: 5000, heat: 8004, cfn: 8000 });

export interface LocalHeatOptions {
  /** Created if missing; wiped of any previous databases, keys and configs. */
  readonly stateDir: string;
  /** Also serve on this address (a test bridge's), for machines that signal wait conditions. */
  readonly bindAddress?: string | undefined;
  readonly ports?: LocalHeatPorts;
  readonly region?: string;
  /** Overall limit of start(), default 120 s. */
  readonly timeoutMs?: number;
  /**
   * Where empty, migrated databases (`db_sync` output, which depends only on the installed Keystone and
   * Heat versions) are kept between runs, saving two Python start-ups; false = always run db_sync.
   * Default: `<tmpdir>/corekube-heat-schema-cache/<versions>/`.
   */
  readonly schemaCache?: string | false;
  /** Progress, one line per phase with its duration (no secrets). */
  readonly onPhase?: (phase: string, ms: number) => void;
}

/** The admin credentials of the local service, as the OS_* variables corekube's client reads. */
export interface LocalHeat {
  readonly stateDir: string;
  readonly authUrl: string;
  /** The orchestration endpoint's base (without the project id). */
  readonly heatBaseUrl: string;
  readonly region: string;
  readonly ports: LocalHeatPorts;
  /** OS_* variables of the admin user (project admin, domain Default). Contains the password. */
  readonly env: Readonly<Record<string, string>>;
  readonly authConfig: AuthConfig;
  /** Milliseconds per start phase, and `total`. */
  readonly timings: Readonly<Record<string, number>>;
  stop(): Promise<void>;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const SYSTEM_PYTHON = '/usr/bin/python3';
const REQUIRED_BINARIES = ['/usr/bin/uwsgi', '/usr/bin/keystone-manage', '/usr/bin/keystone-wsgi-public', '/usr/bin/heat-all', '/usr/bin/heat-manage', SYSTEM_PYTHON];
const UWSGI_PYTHON_PLUGIN = '/usr/lib/uwsgi/plugins/python3_plugin.so';

/** What is missing on this machine to run the local Heat service; empty when it can run. */
export function missingPrerequisites(): string[] {
  const missing: string[] = [];
  for (const f of [...REQUIRED_BINARIES, UWSGI_PYTHON_PLUGIN]) {
    try {
      accessSync(f, f.endsWith('.so') ? constants.R_OK : constants.X_OK);
    } catch {
      missing.push(f);
    }
  }
  return missing;
}

interface ConfigContext {
  stateDir: string;
  passwordHashRounds: number;
  keystoneBindHosts: string[];
  keystonePort: number;
  heatBindHost: string;
  advertisedHost: string;
  heatPort: number;
  cfnPort: number;
  region: string;
  authEncryptionKey: string;
  heatPassword: string;
  domainAdminPassword: string;
}

export async function startLocalHeat(options: LocalHeatOptions): Promise<LocalHeat> {
  const t0 = Date.now();
  const deadline = t0 + (options.timeoutMs ?? 120_000);
  const timings: Record<string, number> = {};
  /** Runs one named step, recording its own duration (steps of the two branches overlap). */
  const step = async <T>(name: string, fn: () => Promise<T> | T): Promise<T> => {
    const started = Date.now();
    const result = await fn();
    timings[name] = Date.now() - started;
    options.onPhase?.(name, timings[name]!);
    return result;
  };

  const missing = missingPrerequisites();
  if (missing.length > 0) {
    throw new CorekubeError('E_IO', `the local Heat service cannot run: missing ${missing.join(', ')}`, {
      hint: 'run scripts/setup (it installs keystone heat-api heat-engine with the debconf preseed in localcloud/heat/)',
    });
  }
  const ports = options.ports ?? DEFAULT_PORTS;
  const region = options.region ?? 'RegionOne';
  const stateDir = options.stateDir;
  const advertisedHost = options.bindAddress ?? '127.0.0.1';
  const keystoneBindHosts = ['127.0.0.1', ...(options.bindAddress && options.bindAddress !== '127.0.0.1' ? [options.bindAddress] : [])];

  await stopLocalHeat(stateDir); // a previous run in the same dir, if any
  for (const [host, port] of [...keystoneBindHosts.map((h) => [h, ports.keystone] as const), [advertisedHost, ports.heat] as const, [advertisedHost, ports.cfn] as const]) {
    await assertPortFree(host, port);
  }

  for (const d of ['etc', 'log', 'run']) mkdirSync(join(stateDir, d), { recursive: true });
  for (const f of readdirSync(stateDir)) {
    if (/^(keystone|heat)\.db/.test(f) || /^keystone-(fernet|credential)-keys$/.test(f)) rmSync(join(stateDir, f), { recursive: true, force: true });
  }
  // Keystone's key repositories: what `keystone-manage fernet_setup` / `credential_setup` write (files 0 =
  // staged and 1 = primary, each a Fernet key: url-safe base64 of 32 random bytes), written here to save
  // two Python start-ups (~1.7 s each).
  for (const d of ['keystone-fernet-keys', 'keystone-credential-keys']) {
    mkdirSync(join(stateDir, d), { mode: 0o700 });
    for (const k of ['0', '1']) writeFileSync(join(stateDir, d, k), `${randomBytes(32).toString('base64url')}=`, { mode: 0o600 });
  }

  const secret = () => randomBytes(18).toString('base64url');
  const adminPassword = secret();
  const context: ConfigContext = {
    stateDir,
    passwordHashRounds: 4,
    keystoneBindHosts,
    keystonePort: ports.keystone,
    heatBindHost: advertisedHost,
    advertisedHost,
    heatPort: ports.heat,
    cfnPort: ports.cfn,
    region,
    authEncryptionKey: randomBytes(16).toString('hex'), // exactly 32 characters, as Heat requires
    heatPassword: secret(),
    domainAdminPassword: secret(),
  };
  const keystoneConf = writeConfig(stateDir, 'keystone.conf', context);
  const uwsgiIni = writeConfig(stateDir, 'keystone-uwsgi.ini', context);
  const heatConf = writeConfig(stateDir, 'heat.conf', context);
  const authUrl = `http://127.0.0.1:${ports.keystone}/v3`;
  const env = Object.freeze({
    OS_AUTH_URL: authUrl,
    OS_IDENTITY_API_VERSION: '3',
    OS_USERNAME: 'admin',
    OS_PASSWORD: adminPassword,
    OS_PROJECT_NAME: 'admin',
    OS_USER_DOMAIN_NAME: 'Default',
    OS_PROJECT_DOMAIN_NAME: 'Default',
    OS_REGION_NAME: region,
    OS_INTERFACE: 'public',
  });
  writeFileSync(join(stateDir, 'admin-openrc'), Object.entries(env).map(([k, v]) => `export ${k}=${v}\n`).join(''), { mode: 0o600 });
  const authConfig = parseAuthConfig(env);
  const remaining = () => Math.max(1_000, deadline - Date.now());
  const cacheDir = options.schemaCache === false ? undefined : (options.schemaCache ?? defaultSchemaCache());

  // Two branches in parallel (most of the time is Python start-up): Keystone's database, bootstrap, server
  // and Heat's identity; Heat's database and heat-all. The engine check needs both.
  const keystone = async () => {
    const km = (args: string[], extraEnv: Record<string, string> = {}) =>
      runStep('/usr/bin/keystone-manage', ['--config-file', keystoneConf, ...args], join(stateDir, 'log', 'keystone-manage.log'), remaining(), extraEnv);
    await step('keystone db_sync', () => migratedDatabase(join(stateDir, 'keystone.db'), cacheDir, async () => {
      await km(['db_sync']);
      await enableWal(join(stateDir, 'keystone.db'), stateDir);
    }));
    const publicUrl = `http://${advertisedHost}:${ports.keystone}/v3/`;
    const localUrl = `http://127.0.0.1:${ports.keystone}/v3/`;
    await Promise.all([
      // The password goes through the environment (keystone-manage reads OS_BOOTSTRAP_PASSWORD), not argv.
      step('keystone bootstrap', () => km([
        'bootstrap', '--bootstrap-username', 'admin', '--bootstrap-project-name', 'admin', '--bootstrap-role-name', 'admin',
        '--bootstrap-service-name', 'keystone', '--bootstrap-region-id', region,
        '--bootstrap-public-url', publicUrl, '--bootstrap-internal-url', localUrl, '--bootstrap-admin-url', localUrl,
      ], { OS_BOOTSTRAP_PASSWORD: adminPassword })),
      step('keystone server', async () => {
        const uwsgi = startDaemon('keystone', '/usr/bin/uwsgi', ['--ini', uwsgiIni], stateDir);
        await waitForHttp(`http://127.0.0.1:${ports.keystone}/v3`, (s) => s === 200, uwsgi, deadline, join(stateDir, 'log', 'keystone.stdout'));
      }),
    ]);
    await step('heat identity', async () => {
      const admin = await KeystoneSession.open(authConfig);
      await registerHeat(admin, {
        region, advertisedHost, heatPort: ports.heat, cfnPort: ports.cfn,
        heatPassword: context.heatPassword, domainAdminPassword: context.domainAdminPassword,
      });
    });
  };
  let heatAll: ChildProcess | undefined;
  const heat = async () => {
    await step('heat db_sync', () => migratedDatabase(join(stateDir, 'heat.db'), cacheDir, async () => {
      await runStep('/usr/bin/heat-manage', ['--config-file', heatConf, 'db_sync'], join(stateDir, 'log', 'heat-manage.log'), remaining());
      await enableWal(join(stateDir, 'heat.db'), stateDir);
    }));
    await step('heat-api', async () => {
      heatAll = startDaemon('heat-all', '/usr/bin/heat-all', ['--config-file', heatConf], stateDir);
      await waitForHttp(`http://${advertisedHost}:${ports.heat}/`, () => true, heatAll, deadline, join(stateDir, 'log', 'heat-all.stdout'));
    });
  };

  try {
    await Promise.all([keystone(), heat()]);
    // The API answers before the engine has registered its RPC server: a validate goes through both.
    await step('heat-engine', async () => {
      const session = await KeystoneSession.open(authConfig);
      await waitForEngine(new HeatClient(session), heatAll!, deadline, join(stateDir, 'log', 'heat-all.log'));
    });
    timings.total = Date.now() - t0;
    return {
      stateDir, authUrl, region, ports, env, authConfig,
      heatBaseUrl: `http://${advertisedHost}:${ports.heat}/v1`,
      timings,
      stop: () => stopLocalHeat(stateDir),
    };
  } catch (err) {
    await stopLocalHeat(stateDir);
    throw err;
  }
}

/**
 * Stops the processes a start in `stateDir` recorded — exactly them: members of the recorded process
 * groups whose command line names the state dir (a recycled pid is left alone). TERM, then KILL after 10 s.
 * Idempotent; keeps the state dir (logs) for the caller to remove.
 */
export async function stopLocalHeat(stateDir: string): Promise<void> {
  const runDir = join(stateDir, 'run');
  if (!existsSync(runDir)) return;
  await Promise.all(readdirSync(runDir).filter((f) => f.endsWith('.pid')).map(async (file) => {
    const pidFile = join(runDir, file);
    const pgid = Number(readFileSync(pidFile, 'utf8').trim());
    if (Number.isInteger(pgid) && pgid > 1) await stopGroup(pgid, stateDir);
    rmSync(pidFile, { force: true });
  }));
}

/**
 * Last resort, synchronous (for a process 'exit' handler): SIGKILL the recorded processes of `stateDir` at
 * once. No orderly shutdown; the databases are throw-away.
 */
export function killLocalHeatNow(stateDir: string): void {
  const runDir = join(stateDir, 'run');
  if (!existsSync(runDir)) return;
  for (const file of readdirSync(runDir).filter((f) => f.endsWith('.pid'))) {
    const pgid = Number(readFileSync(join(runDir, file), 'utf8').trim());
    if (!Number.isInteger(pgid) || pgid <= 1) continue;
    for (const pid of groupMembers(pgid, stateDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* exited meanwhile */
      }
    }
  }
}

async function stopGroup(pgid: number, marker: string): Promise<void> {
  const signalAll = (sig: NodeJS.Signals) => {
    const members = groupMembers(pgid, marker);
    for (const pid of members) {
      try {
        process.kill(pid, sig);
      } catch {
        /* exited meanwhile */
      }
    }
    return members.length;
  };
  if (signalAll('SIGTERM') === 0) return;
  const until = Date.now() + 10_000;
  while (Date.now() < until) {
    await sleep(100);
    if (groupMembers(pgid, marker).length === 0) return;
  }
  signalAll('SIGKILL');
  for (let i = 0; i < 50 && groupMembers(pgid, marker).length > 0; i++) await sleep(100);
}

/** Live (not zombie) processes of process group `pgid` whose command line contains `marker`. */
function groupMembers(pgid: number, marker: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) !== pgid || fields[0] === 'Z') continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(marker)) out.push(Number(entry));
    } catch {
      /* the process exited while we looked */
    }
  }
  return out;
}

/** `<tmpdir>/corekube-heat-schema-cache/<keystone version>+<heat version>`, from the packages' egg-info names. */
function defaultSchemaCache(): string | undefined {
  const dist = '/usr/lib/python3/dist-packages';
  let names: string[];
  try {
    names = readdirSync(dist);
  } catch {
    return undefined;
  }
  const keystone = names.find((n) => /^keystone-[\d.]+.*\.egg-info$/.test(n));
  const heat = names.find((n) => /^openstack_heat-[\d.]+.*\.egg-info$/.test(n));
  if (!keystone || !heat) return undefined;
  return join(tmpdir(), 'corekube-heat-schema-cache', `${keystone.replace(/\.egg-info$/, '')}+${heat.replace(/\.egg-info$/, '')}`);
}

/**
 * Puts a migrated, WAL-mode database at `target`: a copy of the cached one, or made by `migrate` and then
 * cached (written under a temporary name and renamed, so concurrent runs never read half a file).
 */
async function migratedDatabase(target: string, cacheDir: string | undefined, migrate: () => Promise<void>): Promise<void> {
  const cached = cacheDir ? join(cacheDir, basename(target)) : undefined;
  if (cached && existsSync(cached)) {
    copyFileSync(cached, target);
    return;
  }
  await migrate();
  if (!cached || !cacheDir) return;
  try {
    mkdirSync(cacheDir, { recursive: true });
    const tmp = `${cached}.${process.pid}.tmp`;
    copyFileSync(target, tmp);
    renameSync(tmp, cached);
  } catch {
    /* a cache that cannot be written only costs time */
  }
}

function writeConfig(stateDir: string, name: string, context: ConfigContext): string {
  const path = join(stateDir, 'etc', name);
  writeFileSync(path, renderTemplateFile(join(HERE, 'etc', `${name}.hbs`), context), { mode: 0o600 });
  chmodSync(path, 0o600);
  return path;
}

/** Starts a long-running service in its own process group, output to `<stateDir>/log/<name>.stdout`. */
function startDaemon(name: string, command: string, args: string[], stateDir: string): ChildProcess {
  const out = openSync(join(stateDir, 'log', `${name}.stdout`), 'a');
  const child = spawn(command, args, { detached: true, stdio: ['ignore', out, out], env: serviceEnv() });
  closeSync(out);
  child.unref();
  if (child.pid === undefined) throw new CorekubeError('E_IO', `could not start ${command}`, { hint: 'is it installed? run scripts/setup' });
  writeFileSync(join(stateDir, 'run', `${name}.pid`), `${child.pid}\n`);
  return child;
}

/** The services' environment: ours without OS_* (an openrc sourced in the shell must not leak into them). */
function serviceEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('OS_') && !k.startsWith('PYTHON')) env[k] = v;
  return { ...env, ...extra };
}

/** Runs a setup command to completion, output appended to `logFile`; failure → E_IO with the log's tail. */
function runStep(command: string, args: string[], logFile: string, timeoutMs: number, extraEnv: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = openSync(logFile, 'a');
    const child = spawn(command, args, { stdio: ['ignore', out, out], env: serviceEnv(extraEnv), timeout: timeoutMs, killSignal: 'SIGKILL' });
    closeSync(out);
    child.on('error', (cause) => reject(new CorekubeError('E_IO', `${command} could not run: ${cause.message}`, { cause, hint: 'run scripts/setup' })));
    child.on('exit', (code, signal) => {
      if (code === 0) return resolve();
      reject(new CorekubeError('E_IO', `${command} ${args.filter((a) => !a.startsWith('/')).join(' ')} failed (${signal ?? `exit ${code}`})\n${tail(logFile)}`, {
        hint: `read ${logFile}`,
      }));
    });
  });
}

/** WAL journal mode persists in the database file; without it Keystone answers "database is locked". */
function enableWal(db: string, stateDir: string): Promise<void> {
  return runStep(SYSTEM_PYTHON, ['-c', 'import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL")', db], join(stateDir, 'log', 'sqlite.log'), 10_000);
}

async function waitForHttp(url: string, ready: (status: number) => boolean, child: ChildProcess, deadline: number, log: string): Promise<void> {
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new CorekubeError('E_IO', `${child.spawnfile} exited (${child.signalCode ?? child.exitCode}) before serving ${url}\n${tail(log)}`, { hint: `read ${log}` });
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (ready(res.status)) return;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new CorekubeError('E_STEP_TIMEOUT', `${url} did not answer in time`, { hint: `read ${log}` });
    await sleep(100);
  }
}

async function waitForEngine(heat: HeatClient, child: ChildProcess, deadline: number, log: string): Promise<void> {
  const template = { heat_template_version: '2021-04-16', resources: {} };
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new CorekubeError('E_IO', `heat-all exited (${child.signalCode ?? child.exitCode}) before its engine was ready\n${tail(log)}`, { hint: `read ${log}` });
    }
    try {
      await heat.validate({ template });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new CorekubeError('E_STEP_TIMEOUT', `heat-engine did not answer in time: ${(err as Error).message}`, { hint: `read ${log}`, cause: err });
    }
    await sleep(200);
  }
}

/** Fails fast (naming the holder) when host:port is taken: a health poll would be answered by the old server. */
async function assertPortFree(host: string, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const server = createServer();
    server.once('error', (cause: NodeJS.ErrnoException) => {
      const holder = portHolder(port);
      reject(new CorekubeError('E_IO', `${host}:${port} is in use${holder ? ` by pid ${holder.pid} (${holder.cmdline})` : ''} (${cause.code})`, {
        hint: holder?.stateDir
          ? `another local Heat runs from ${holder.stateDir}: stop it with npx tsx localcloud/heat/cli.ts stop --state-dir ${holder.stateDir}`
          : 'stop whatever listens there, or start the local Heat with other ports',
        cause,
      }));
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve()));
  });
}

function portHolder(port: number): { pid: number; cmdline: string; stateDir: string | undefined } | undefined {
  try {
    const inodes = new Set<string>();
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f.length > 9 && f[3] === '0A' && parseInt(f[1]!.split(':')[1]!, 16) === port) inodes.add(f[9]!);
      }
    }
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      let fds: string[];
      try {
        fds = readdirSync(`/proc/${entry}/fd`);
      } catch {
        continue;
      }
      for (const fd of fds) {
        let link = '';
        try {
          link = readlinkSync(`/proc/${entry}/fd/${fd}`);
        } catch {
          continue;
        }
        const m = /^socket:\[(\d+)\]$/.exec(link);
        if (m && inodes.has(m[1]!)) {
          const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim();
          const stateDir = /(\S+)\/etc\/(?:heat\.conf|keystone-uwsgi\.ini)/.exec(cmdline)?.[1];
          return { pid: Number(entry), cmdline, stateDir };
        }
      }
    }
  } catch {
    /* best effort */
  }
  return undefined;
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).map((l) => `  | ${l}`).join('\n');
  } catch {
    return `  | (no ${file})`;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
