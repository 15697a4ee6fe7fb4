import { JOIN_NONCE_FILE } from '../../cloud-config/machine-paths.ts';
import { CorekubeError } from '../../core/errors.ts';
import type { RemoteFile } from '../../contracts/step.ts';
import { LAYOUT, PORTS } from '../../units/layout.ts';
import { PKI_PATHS } from '../../units/pki-paths.ts';

/**
 * Every command the overlord runs on a machine, as a fixed argv array. This is the whole vocabulary of the
 * executor; HostRunner quotes argv in exactly one place. Values (paths, unit names, modes) are validated
 * here and passed as separate argv elements — never spliced into a shell string. The one shell script
 * below is a constant; its inputs are positional arguments (`sh -c SCRIPT NAME ARG…`).
 *
 * Privileged commands are prefixed with `sudo -n` (never prompts: a missing sudo rule fails at once)
 * unless the SSH user is root. Read-only `systemctl show` needs no privilege.
 */
export interface RemoteContext {
  /** the SSH user; `root` runs commands without sudo */
  readonly user: string;
}

export type Argv = readonly string[];

const UNIT_NAME = /^[A-Za-z0-9:_.@\\-]{1,240}\.(service|socket|target|path|timer|mount)$/;
const MODE = /^0?[0-7]{3,4}$/;

/** Throws E_INTERNAL: a malformed unit name here is a bug in the units room, not an operator error. */
export function checkUnitName(unit: string): string {
  if (!UNIT_NAME.test(unit)) {
    throw new CorekubeError('E_INTERNAL', `${JSON.stringify(unit)} is not a systemd unit name`, {
      hint: 'unit names come from units/: give them a .service/.target/… suffix and no spaces',
    });
  }
  return unit;
}

export function checkRemoteFile(file: RemoteFile): RemoteFile {
  const bad = (why: string) =>
    new CorekubeError('E_INTERNAL', `remote file ${JSON.stringify(file.path)} ${why}`, { hint: 'rendered files come from units/: fix the path or mode there' });
  if (!file.path.startsWith('/') || file.path.includes('\0') || file.path.includes('\n') || file.path.split('/').includes('..')) {
    throw bad('is not an absolute path without ".." components');
  }
  if (file.path.endsWith('/')) throw bad('names a directory');
  if (!MODE.test(file.mode)) throw bad(`has mode ${JSON.stringify(file.mode)}, expected an octal mode such as "0644"`);
  return file;
}

function privileged(ctx: RemoteContext, argv: Argv): Argv {
  return ctx.user === 'root' ? argv : ['sudo', '-n', ...argv];
}

/**
 * Writes one file atomically: the content arrives on stdin, goes to a temporary file beside the target
 * (same filesystem, so `mv` is a rename) with the final mode, then replaces the target. A reader sees the
 * old file or the new one, never half of one. Parent directories are created (`install -D`).
 */
const WRITE_FILE_SCRIPT = 'set -eu; tmp="$1.corekube-tmp"; install -D -m "$2" /dev/stdin "$tmp"; mv -f "$tmp" "$1"';

export function writeFile(ctx: RemoteContext, file: RemoteFile): { argv: Argv; stdin: string } {
  checkRemoteFile(file);
  return { argv: privileged(ctx, ['sh', '-c', WRITE_FILE_SCRIPT, 'corekube-write-file', file.path, file.mode]), stdin: file.content };
}

/** One command per file, in the order given (a later file may depend on an earlier one's directory). */
export function writeFiles(ctx: RemoteContext, files: readonly RemoteFile[]): { argv: Argv; stdin: string }[] {
  return files.map((f) => writeFile(ctx, f));
}

export function daemonReload(ctx: RemoteContext): Argv {
  return privileged(ctx, ['systemctl', 'daemon-reload']);
}

/** Clears a previous `failed` state, so a state read after the next start reflects that start only. */
export function resetFailed(ctx: RemoteContext, unit: string): Argv {
  return privileged(ctx, ['systemctl', 'reset-failed', checkUnitName(unit)]);
}

/**
 * Starts the unit and returns once systemd has finished the start job: a oneshot has run, a service has
 * been started (or, Type=notify, is ready); non-zero when the job failed (or the unit does not exist).
 * The executor waits on this command instead of polling; if it stops waiting (timeout, stop), the job
 * runs on in systemd, and the command itself ends with the job.
 */
export function startUnit(ctx: RemoteContext, unit: string): Argv {
  return privileged(ctx, ['systemctl', 'start', checkUnitName(unit)]);
}

/**
 * Enables a unit (its [Install] WantedBy=multi-user.target), so systemd starts it at the next boot by itself —
 * a rebooted machine comes back without waiting for the overlord. Idempotent; --quiet: no symlink chatter.
 */
export function enableUnit(ctx: RemoteContext, unit: string): Argv {
  return privileged(ctx, ['systemctl', 'enable', '--quiet', checkUnitName(unit)]);
}

/** Restarts a unit (stopping it first when it runs); non-zero when the start job failed. */
export function restartUnit(ctx: RemoteContext, unit: string): Argv {
  return privileged(ctx, ['systemctl', 'restart', checkUnitName(unit)]);
}

/** Stops the units and keeps them from starting at the next boot (a machine removed from the cluster). */
export function stopUnits(ctx: RemoteContext, units: readonly string[]): Argv {
  return privileged(ctx, ['systemctl', 'disable', '--now', '--quiet', ...units.map(checkUnitName)]);
}

/**
 * The masters' etcd asked on a master, through its own client port, with the API server's etcd client certificate
 * (the only etcd client credential a master holds): `etcdctl member list|add --learner|promote|remove`, `endpoint health`. JSON
 * output — not `--hex`, whose member list leaves out `isLearner`: its ids are read as text (contracts/etcd-members.ts).
 */
export type EtcdctlCommand =
  | { readonly op: 'member-list' }
  | { readonly op: 'endpoint-health' }
  | { readonly op: 'member-add'; readonly name: string; readonly peerUrl: string }
  | { readonly op: 'member-remove'; readonly id: string }
  | { readonly op: 'member-promote'; readonly id: string };

const MEMBER_NAME = /^[a-z0-9-]{1,63}$/;
const PEER_URL = /^https:\/\/[0-9.]{7,15}:\d{1,5}$/;
const MEMBER_ID = /^[0-9a-f]{1,16}$/;

export function etcdctl(ctx: RemoteContext, command: EtcdctlCommand): Argv {
  const bad = (what: string) => new CorekubeError('E_INTERNAL', `etcdctl ${command.op}: ${what}`, { hint: 'member names, peer URLs and ids come from units/ and etcd itself' });
  const base = [
    `${LAYOUT.binDir}/etcdctl`,
    `--endpoints=https://127.0.0.1:${PORTS.etcdClient}`,
    `--cacert=${PKI_PATHS.etcdCa}`,
    `--cert=${PKI_PATHS.apiServerEtcdClient.cert}`,
    `--key=${PKI_PATHS.apiServerEtcdClient.key}`,
    // a health check of a lost member should not hold a removal for long
    `--command-timeout=${command.op === 'endpoint-health' ? 5 : 15}s`,
    '-w',
    'json',
  ];
  switch (command.op) {
    case 'member-list':
      return privileged(ctx, [...base, 'member', 'list']);
    case 'endpoint-health':
      return privileged(ctx, [...base, 'endpoint', 'health', '--cluster']);
    case 'member-add':
      if (!MEMBER_NAME.test(command.name)) throw bad(`${JSON.stringify(command.name)} is not a member name`);
      if (!PEER_URL.test(command.peerUrl)) throw bad(`${JSON.stringify(command.peerUrl)} is not a peer URL`);
      return privileged(ctx, [...base, 'member', 'add', command.name, `--peer-urls=${command.peerUrl}`, '--learner']);
    case 'member-remove':
    case 'member-promote':
      if (!MEMBER_ID.test(command.id)) throw bad(`${JSON.stringify(command.id)} is not a hex member id`);
      return privileged(ctx, [...base, 'member', command.op === 'member-remove' ? 'remove' : 'promote', command.id]);
  }
}

/** Exits 0 when `path` is a directory (read with privilege: state directories are root's, mode 0700). */
export function isDirectory(ctx: RemoteContext, path: string): Argv {
  if (!path.startsWith('/') || path.split('/').includes('..') || /[\0\n]/.test(path)) throw new CorekubeError('E_INTERNAL', `${JSON.stringify(path)} is not an absolute path`, { hint: 'paths come from units/' });
  return privileged(ctx, ['test', '-d', path]);
}

/** A question any machine answers at once, whatever its exit code: is the host there (overlord/availability/liveness.ts)? */
export function probe(): Argv {
  return ['true'];
}

export const MACHINE_ID_FILE = '/etc/machine-id';

/**
 * What a machine proves its identity with (overlord/discovery/admission.ts): its /etc/machine-id, then the announce
 * script's per-boot nonce (root-only), at most 128 bytes of each, no file names between them.
 */
export function readIdentity(ctx: RemoteContext): Argv {
  return privileged(ctx, ['head', '-q', '-c', '128', MACHINE_ID_FILE, JOIN_NONCE_FILE]);
}

/** Parses readIdentity's output: the machine id and the nonce, or undefined when it is not two such lines. */
export function parseIdentity(stdout: string): { readonly machineId: string; readonly nonce: string } | undefined {
  const m = /^([0-9a-f]{32})\n([0-9a-f]{64})\n?$/.exec(stdout);
  return m ? { machineId: m[1]!, nonce: m[2]! } : undefined;
}

export const UNIT_STATE_PROPERTIES = ['ActiveState', 'SubState', 'Result', 'InvocationID'] as const;

/** `systemctl show` prints `Key=value` lines; parsed by parseUnitState. */
export function unitState(_ctx: RemoteContext, unit: string): Argv {
  return ['systemctl', 'show', '-p', UNIT_STATE_PROPERTIES.join(','), checkUnitName(unit)];
}

/** The unit's last 30 journal lines, message text only. Needs privilege to read the system journal. */
export function journalExcerpt(ctx: RemoteContext, unit: string, lines = 30): Argv {
  return privileged(ctx, ['journalctl', '-u', checkUnitName(unit), '-n', String(lines), '--no-pager', '-o', 'cat']);
}

export interface UnitState {
  /** active | reloading | inactive | failed | activating | deactivating */
  readonly activeState: string;
  /** running | exited | dead | failed | auto-restart | start | … */
  readonly subState: string;
  /** success | exit-code | signal | timeout | core-dump | start-limit-hit | … */
  readonly result: string;
  /** changes with every start of the unit; empty when it has not run since boot */
  readonly invocationId: string;
}

/** Parses `systemctl show -p …` output. Missing properties read as '' (an unknown unit is inactive/dead). */
export function parseUnitState(stdout: string): UnitState {
  const props = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) props.set(line.slice(0, eq).trim(), line.slice(eq + 1).trim());
  }
  return Object.freeze({
    activeState: props.get('ActiveState') ?? '',
    subState: props.get('SubState') ?? '',
    result: props.get('Result') ?? '',
    invocationId: props.get('InvocationID') ?? '',
  });
}
