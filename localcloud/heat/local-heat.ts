import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, chmodSync, constants, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAuthConfig, type AuthConfig } from '../../cloud/auth-config.ts';
import { HeatClient } from '../../cloud/heat-client.ts';
import { KeystoneSession } from '../../cloud/keystone.ts';
import { CorekubeError } from '../../core/errors.ts';
import { renderTemplateFile } from '../../core/template.ts';
import { registerHeat } from './identity.ts';
import { assertPortFree, groupMembers, runStep, startDaemon, stopGroup, waitForEngine, waitForHttp } from './processes.ts';

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
  const missing = missingPrerequisites();
  if (missing.length > 0) {
    throw new CorekubeError('E_IO', `the local Heat service cannot run: missing ${missing.join(', ')}`, {
      hint: 'run scripts/setup (it installs keystone heat-api heat-engine with the debconf preseed in localcloud/heat/)',
    });
  }
  const start = new HeatStart(options);
  await start.prepare();
  try {
    // Two branches in parallel (most of the time is Python start-up): Keystone's database, bootstrap, server
    // and Heat's identity; Heat's database and heat-all. The engine check needs both.
    await Promise.all([start.keystone(), start.heat()]);
    // The API answers before the engine has registered its RPC server: a validate goes through both.
    await start.engine();
    return start.service();
  } catch (err) {
    await stopLocalHeat(options.stateDir);
    throw err;
  }
}

/** One start of the service in a state directory, step by step (each step's duration recorded). */
class HeatStart {
  private readonly t0 = Date.now();
  private readonly deadline: number;
  private readonly timings: Record<string, number> = {};
  private readonly ports: LocalHeatPorts;
  private readonly region: string;
  private readonly stateDir: string;
  private readonly advertisedHost: string;
  private readonly keystoneBindHosts: string[];
  private readonly adminPassword = secret();
  private readonly context: ConfigContext;
  private readonly env: Readonly<Record<string, string>>;
  private readonly authUrl: string;
  private readonly cacheDir: string | undefined;
  private heatAll: ChildProcess | undefined;
  private configs: { keystone: string; uwsgi: string; heat: string } | undefined;

  constructor(private readonly options: LocalHeatOptions) {
    this.deadline = this.t0 + (options.timeoutMs ?? 120_000);
    this.ports = options.ports ?? DEFAULT_PORTS;
    this.region = options.region ?? 'RegionOne';
    this.stateDir = options.stateDir;
    this.advertisedHost = options.bindAddress ?? '127.0.0.1';
    this.keystoneBindHosts = ['127.0.0.1', ...(options.bindAddress && options.bindAddress !== '127.0.0.1' ? [options.bindAddress] : [])];
    this.context = {
      stateDir: this.stateDir,
      passwordHashRounds: 4,
      keystoneBindHosts: this.keystoneBindHosts,
      keystonePort: this.ports.keystone,
      heatBindHost: this.advertisedHost,
      advertisedHost: this.advertisedHost,
      heatPort: this.ports.heat,
      cfnPort: this.ports.cfn,
      region: this.region,
      authEncryptionKey: randomBytes(16).toString('hex'), // exactly 32 characters, as Heat requires
      heatPassword: secret(),
      domainAdminPassword: secret(),
    };
    this.authUrl = `http://127.0.0.1:${this.ports.keystone}/v3`;
    this.env = Object.freeze({
      OS_AUTH_URL: this.authUrl,
      OS_IDENTITY_API_VERSION: '3',
      OS_USERNAME: 'admin',
      OS_PASSWORD: this.adminPassword,
      OS_PROJECT_NAME: 'admin',
      OS_USER_DOMAIN_NAME: 'Default',
      OS_PROJECT_DOMAIN_NAME: 'Default',
      OS_REGION_NAME: this.region,
      OS_INTERFACE: 'public',
    });
    this.cacheDir = options.schemaCache === false ? undefined : (options.schemaCache ?? defaultSchemaCache());
  }

  /** A previous run stopped, the ports free, a fresh state directory: its key repositories, configs and openrc. */
  async prepare(): Promise<void> {
    const { stateDir, ports, advertisedHost } = this;
    await stopLocalHeat(stateDir); // a previous run in the same dir, if any
    for (const [host, port] of [...this.keystoneBindHosts.map((h) => [h, ports.keystone] as const), [advertisedHost, ports.heat] as const, [advertisedHost, ports.cfn] as const]) {
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
    this.configs = {
      keystone: writeConfig(stateDir, 'keystone.conf', this.context),
      uwsgi: writeConfig(stateDir, 'keystone-uwsgi.ini', this.context),
      heat: writeConfig(stateDir, 'heat.conf', this.context),
    };
    writeFileSync(join(stateDir, 'admin-openrc'), Object.entries(this.env).map(([k, v]) => `export ${k}=${v}\n`).join(''), { mode: 0o600 });
  }

  /** Keystone's database, bootstrap and server, then Heat's identity in it. */
  async keystone(): Promise<void> {
    const { stateDir, ports, region, advertisedHost } = this;
    const km = (args: string[], extraEnv: Record<string, string> = {}) =>
      runStep('/usr/bin/keystone-manage', ['--config-file', this.configs!.keystone, ...args], join(stateDir, 'log', 'keystone-manage.log'), this.remaining(), extraEnv);
    await this.step('keystone db_sync', () => migratedDatabase(join(stateDir, 'keystone.db'), this.cacheDir, async () => {
      await km(['db_sync']);
      await enableWal(join(stateDir, 'keystone.db'), stateDir);
    }));
    const publicUrl = `http://${advertisedHost}:${ports.keystone}/v3/`;
    const localUrl = `http://127.0.0.1:${ports.keystone}/v3/`;
    await Promise.all([
      // The password goes through the environment (keystone-manage reads OS_BOOTSTRAP_PASSWORD), not argv.
      this.step('keystone bootstrap', () => km([
        'bootstrap', '--bootstrap-username', 'admin', '--bootstrap-project-name', 'admin', '--bootstrap-role-name', 'admin',
        '--bootstrap-service-name', 'keystone', '--bootstrap-region-id', region,
        '--bootstrap-public-url', publicUrl, '--bootstrap-internal-url', localUrl, '--bootstrap-admin-url', localUrl,
      ], { OS_BOOTSTRAP_PASSWORD: this.adminPassword })),
      this.step('keystone server', async () => {
        const uwsgi = startDaemon('keystone', '/usr/bin/uwsgi', ['--ini', this.configs!.uwsgi], stateDir);
        await waitForHttp(`http://127.0.0.1:${ports.keystone}/v3`, (s) => s === 200, uwsgi, this.deadline, join(stateDir, 'log', 'keystone.stdout'));
      }),
    ]);
    await this.step('heat identity', async () => {
      const admin = await KeystoneSession.open(parseAuthConfig(this.env));
      await registerHeat(admin, {
        region, advertisedHost, heatPort: ports.heat, cfnPort: ports.cfn,
        heatPassword: this.context.heatPassword, domainAdminPassword: this.context.domainAdminPassword,
      });
    });
  }

  /** Heat's database, then heat-all (its API answering). */
  async heat(): Promise<void> {
    const { stateDir } = this;
    await this.step('heat db_sync', () => migratedDatabase(join(stateDir, 'heat.db'), this.cacheDir, async () => {
      await runStep('/usr/bin/heat-manage', ['--config-file', this.configs!.heat, 'db_sync'], join(stateDir, 'log', 'heat-manage.log'), this.remaining());
      await enableWal(join(stateDir, 'heat.db'), stateDir);
    }));
    await this.step('heat-api', async () => {
      this.heatAll = startDaemon('heat-all', '/usr/bin/heat-all', ['--config-file', this.configs!.heat], stateDir);
      await waitForHttp(`http://${this.advertisedHost}:${this.ports.heat}/`, () => true, this.heatAll, this.deadline, join(stateDir, 'log', 'heat-all.stdout'));
    });
  }

  /** The engine answers (a validate goes through the API and the engine). */
  async engine(): Promise<void> {
    await this.step('heat-engine', async () => {
      const session = await KeystoneSession.open(parseAuthConfig(this.env));
      await waitForEngine(new HeatClient(session), this.heatAll!, this.deadline, join(this.stateDir, 'log', 'heat-all.log'));
    });
  }

  service(): LocalHeat {
    this.timings.total = Date.now() - this.t0;
    const { stateDir, authUrl, region, ports, env } = this;
    return {
      stateDir, authUrl, region, ports, env, authConfig: parseAuthConfig(env),
      heatBaseUrl: `http://${this.advertisedHost}:${ports.heat}/v1`,
      timings: this.timings,
      stop: () => stopLocalHeat(stateDir),
    };
  }

  /** Runs one named step, recording its own duration (steps of the two branches overlap). */
  private async step<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
    const started = Date.now();
    const result = await fn();
    this.timings[name] = Date.now() - started;
    this.options.onPhase?.(name, this.timings[name]!);
    return result;
  }

  private remaining(): number {
    return Math.max(1_000, this.deadline - Date.now());
  }
}

function secret(): string {
  return randomBytes(18).toString('base64url');
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

/** WAL journal mode persists in the database file; without it Keystone answers "database is locked". */
function enableWal(db: string, stateDir: string): Promise<void> {
  return runStep(SYSTEM_PYTHON, ['-c', 'import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL")', db], join(stateDir, 'log', 'sqlite.log'), 10_000);
}

