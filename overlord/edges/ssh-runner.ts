/**
 * The SSH edge of the overlord: HostRunner over node-ssh. The one place where argv becomes a command
 * string (POSIX single quotes, `quoteArgv`), where host keys are verified, and where ssh2's errors become
 * CorekubeErrors. Contracts:
 * - a command's exit code is its result: non-zero resolves (node-ssh 13 resolves on any exit; the code is
 *   checked here), exit by signal resolves as 128 + signal number, a connection lost mid-command rejects;
 * - file contents travel on stdin, never in the command line;
 * - `timeoutMs` is enforced on both ends: we stop waiting (E_SSH, retryable) and `timeout` ends the command
 *   on the machine shortly after;
 * - host keys: the key the HostKeyPolicy pinned for the machine (etcd) wins: a target that names another key is
 *   refused before any connection (a record cannot move a machine to another key); else the target's
 *   key; else the first one seen, which is then pinned (trust on first use). A mismatch is E_SSH_HOSTKEY, terminal;
 * - one connection per machine and address, reused and opened again after it drops (a request naming a machine
 *   at another address never closes the connection the deployment uses); `close()` closes them all;
 * - errors name the machine and its address, never a key; the private key is never logged or echoed.
 */
import { constants as osConstants } from 'node:os';
import { NodeSSH } from 'node-ssh';
import { CorekubeError } from '../../core/errors.ts';
import { fingerprintOf, formatHostKey, hostKeyFingerprint, parseHostKey, sameHostKey, type ParsedHostKey } from './host-key.ts';
import type { ExecOptions, ExecResult, HostRunner, HostTarget } from './host-runner.ts';

/** Where trust-on-first-use keys are kept (the overlord implements it over `<prefix>/hostkeys/<id>`). */
export interface HostKeyPolicy {
  /** the key accepted earlier for this machine (`ssh-ed25519 AAAA…`), or undefined when none was */
  expected(target: HostTarget): Promise<string | undefined>;
  /** records the key seen on first contact; rejects (E_SSH_HOSTKEY) if another key was recorded meanwhile */
  remember(target: HostTarget, key: string): Promise<void>;
}

export interface SshRunnerOptions {
  readonly user: string;
  /** OpenSSH or PEM private key text; never logged, never part of an error */
  readonly privateKey: string;
  readonly port?: number;
  /** TCP connect + SSH handshake + authentication */
  readonly connectTimeoutMs: number;
  readonly hostKeys: HostKeyPolicy;
  /** a silent peer is declared gone after 3 unanswered keepalives at this interval (default 5 s) */
  readonly keepaliveIntervalMs?: number;
  /** concurrent commands on one connection (sshd's MaxSessions is 10 by default) */
  readonly maxChannelsPerHost?: number;
}

// ---------------------------------------------------------------------------------------------------------
// Quoting: the only place argv becomes a shell string.

const SAFE_WORD = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** Quotes one argument for a POSIX shell: bare when it is made of safe characters, else in single quotes. */
export function quoteArg(arg: string): string {
  if (arg.includes('\0')) {
    throw new CorekubeError('E_INTERNAL', 'a remote command argument contains a NUL byte', { hint: 'argv comes from overlord/edges/remote-commands.ts: fix the value there' });
  }
  if (SAFE_WORD.test(arg)) return arg;
  // inside single quotes nothing is special except the quote itself: close, add an escaped quote, reopen
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** Joins argv into the command line the remote login shell runs: every element one word, nothing expanded. */
export function quoteArgv(argv: readonly string[]): string {
  if (argv.length === 0) throw new CorekubeError('E_INTERNAL', 'empty remote command', { hint: 'remote commands are built in overlord/edges/remote-commands.ts' });
  return argv.map(quoteArg).join(' ');
}

// ---------------------------------------------------------------------------------------------------------
// Host keys (parsed and compared in overlord/edges/host-key.ts)

/** The host key algorithms to offer when a key of this type is expected (so the server presents that one). */
function hostKeyAlgorithms(type: string): string[] {
  return type === 'ssh-rsa' ? ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'] : [type];
}

// ---------------------------------------------------------------------------------------------------------
// Connections

/** The parts of ssh2's channel we use (node-ssh exposes it untyped). */
interface Channel {
  close(): void;
}

interface Connection {
  readonly ip: string;
  readonly ssh: NodeSSH;
  /** set when the transport closed or failed: the next exec opens a new connection */
  lost: string | undefined;
  active: number;
  readonly waiting: (() => void)[];
}

interface Slot {
  readonly id: string;
  readonly ip: string;
  /** the pin it was opened with: a record that pins another key (or none) gets a new connection */
  readonly hostKey: string | undefined;
  /** resolves once connected and the host key accepted */
  readonly ready: Promise<Connection>;
  connection: Connection | undefined;
}

const where = (t: HostTarget, port: number) => `machine ${t.id} (${t.ip}:${port})`;

export function createSshRunner(options: SshRunnerOptions): HostRunner {
  return new SshRunner(options);
}

/** One connection a machine (per id, address and pinned key), shared by at most `maxChannelsPerHost` commands at once. */
class SshRunner implements HostRunner {
  private readonly port: number;
  private readonly keepaliveIntervalMs: number;
  private readonly maxChannels: number;
  private readonly slots = new Map<string, Slot>();

  constructor(private readonly options: SshRunnerOptions) {
    this.port = options.port ?? 22;
    this.keepaliveIntervalMs = options.keepaliveIntervalMs ?? 5000;
    this.maxChannels = options.maxChannelsPerHost ?? 8;
  }

  async exec(target: HostTarget, argv: readonly string[], execOptions: ExecOptions = {}): Promise<ExecResult> {
    // sshd neither forwards "signal" requests nor hangs up a command without a pty when its channel closes,
    // so a command we stop waiting for would run on: with a timeout, coreutils `timeout` on the machine ends
    // it (TERM a second after we gave up, KILL 5 s later; sudo relays the TERM to its command). A command
    // cancelled through `signal` alone is abandoned, not killed — remote commands are short by contract.
    const command = quoteArgv(execOptions.timeoutMs === undefined ? argv : ['timeout', '-k', '5', `${Math.ceil(execOptions.timeoutMs / 1000) + 1}`, ...argv]);
    const what = argv[0] === 'sudo' && argv[1] === '-n' ? argv.slice(0, 4).join(' ') : argv.slice(0, 2).join(' ');
    const signals = [execOptions.signal, execOptions.timeoutMs === undefined ? undefined : AbortSignal.timeout(execOptions.timeoutMs)].filter(
      (s): s is AbortSignal => s !== undefined,
    );
    const signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    const abortError = () => {
      const timedOut = (signal?.reason as Error | undefined)?.name === 'TimeoutError';
      return new CorekubeError(
        'E_SSH',
        timedOut
          ? `\`${what}\` on ${where(target, this.port)} did not finish within ${execOptions.timeoutMs} ms`
          : `\`${what}\` on ${where(target, this.port)} was cancelled`,
        { retryable: true, cause: signal?.reason },
      );
    };
    if (signal?.aborted) throw abortError();
    const connection = await this.connectionFor(target);
    await this.acquire(connection);
    try {
      if (signal?.aborted) throw abortError();
      return await this.run(connection, target, command, what, execOptions.stdin, signal, abortError);
    } finally {
      this.release(connection);
    }
  }

  async close(id?: string): Promise<void> {
    const entries = id === undefined ? [...this.slots.entries()] : [...this.slots.entries()].filter(([, slot]) => slot.id === id);
    for (const [key, slot] of entries) this.drop(key, slot);
    // connections still opening are disposed when they finish (their slot is gone)
    await Promise.all(entries.map(([, slot]) => slot.ready.catch(() => undefined)));
  }

  /** Runs one command on an open connection; a signal that aborts closes its channel. */
  private async run(connection: Connection, target: HostTarget, command: string, what: string, stdin: string | undefined, signal: AbortSignal | undefined, abortError: () => CorekubeError): Promise<ExecResult> {
    let channel: Channel | undefined;
    let onAbort: (() => void) | undefined;
    try {
      const running = connection.ssh.execCommand(command, {
        noTrim: true,
        onChannel: (c) => {
          channel = c as unknown as Channel;
        },
        ...(stdin === undefined ? {} : { stdin }),
      });
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => {
          // closing our end frees the channel; the command sees EOF on stdin and EPIPE on its next write
          try {
            channel?.close();
          } catch {
            /* channel already gone */
          }
          reject(abortError());
        };
        signal?.addEventListener('abort', onAbort, { once: true });
      });
      running.catch(() => undefined); // settles after an abort too; its outcome no longer matters then
      let response;
      try {
        response = await (signal ? Promise.race([running, aborted]) : running);
      } catch (err) {
        if (err instanceof CorekubeError) throw err;
        connection.lost ??= err instanceof Error ? err.message : String(err);
        throw new CorekubeError('E_SSH', `cannot run \`${what}\` on ${where(target, this.port)}: ${describe(err)}`, { retryable: true, cause: err });
      }
      if (typeof response.code === 'number') return { code: response.code, stdout: response.stdout, stderr: response.stderr };
      if (response.signal && !connection.lost) {
        const number = (osConstants.signals as Record<string, number>)[`SIG${response.signal}`] ?? 0;
        return { code: 128 + number, stdout: response.stdout, stderr: response.stderr };
      }
      connection.lost ??= 'no exit status';
      throw new CorekubeError('E_SSH', `connection to ${where(target, this.port)} was lost while running \`${what}\` (${connection.lost})`, {
        retryable: true,
        hint: 'the command may or may not have run: check its effect before running it again',
      });
    } finally {
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    }
  }

  private connectionFor(target: HostTarget): Promise<Connection> {
    const key = slotKey(target);
    const existing = this.slots.get(key);
    if (existing && existing.hostKey === target.hostKey && !existing.connection?.lost) return existing.ready;
    if (existing) this.drop(key, existing);
    const slot: Slot = {
      id: target.id,
      ip: target.ip,
      hostKey: target.hostKey,
      connection: undefined,
      ready: undefined as unknown as Promise<Connection>,
    };
    (slot as { ready: Promise<Connection> }).ready = this.open(target, () => slot).then(
      (connection) => {
        if (this.slots.get(key) !== slot) {
          // closed while connecting
          connection.ssh.dispose();
          throw new CorekubeError('E_SSH', `connection to ${where(target, this.port)} was closed while it was opening`, { retryable: true });
        }
        slot.connection = connection;
        return connection;
      },
      (err) => {
        if (this.slots.get(key) === slot) this.slots.delete(key);
        throw err;
      },
    );
    this.slots.set(key, slot);
    return slot.ready;
  }

  /** Opens a connection with the host key checked in the handshake; a key seen for the first time is recorded. */
  private async open(target: HostTarget, slot: () => Slot): Promise<Connection> {
    const expected = await this.expectedKey(target);
    let presented: Buffer | undefined;
    let mismatch: CorekubeError | undefined;
    const ssh = new NodeSSH();
    try {
      await ssh.connect({
        host: target.ip,
        port: this.port,
        username: this.options.user,
        privateKey: this.options.privateKey,
        readyTimeout: this.options.connectTimeoutMs,
        keepaliveInterval: this.keepaliveIntervalMs,
        keepaliveCountMax: 3,
        ...(expected ? { algorithms: { serverHostKey: hostKeyAlgorithms(expected.type) } } : {}),
        hostVerifier: (key: Buffer) => {
          presented = Buffer.from(key);
          if (expected && !presented.equals(expected.blob)) {
            mismatch = new CorekubeError(
              'E_SSH_HOSTKEY',
              `${where(target, this.port)} presented host key ${hostKeyFingerprint(presented)}, expected ${hostKeyFingerprint(expected.blob)}`,
              {
                hint: target.hostKey
                  ? 'the machine is not the one that announced itself, or its host key changed: check the machine, then re-announce it'
                  : `if the machine was reinstalled, delete <prefix>/hostkeys/${target.id} in etcd to trust its new key`,
              },
            );
            return false;
          }
          return true;
        },
      });
    } catch (err) {
      ssh.dispose();
      if (mismatch) throw mismatch;
      throw connectError(target, this.port, err);
    }
    const connection = this.watched(ssh, target, slot);
    if (!expected && presented) {
      try {
        await callPolicy(target, () => this.options.hostKeys.remember(target, formatHostKey(presented as Buffer)));
      } catch (err) {
        ssh.dispose();
        throw err;
      }
    }
    return connection;
  }

  /** The key the machine must present: the one its target names, else the one pinned for it (none: trust on first use). */
  private async expectedKey(target: HostTarget): Promise<ParsedHostKey | undefined> {
    const pinned = await callPolicy(target, () => this.options.hostKeys.expected(target));
    if (pinned !== undefined && target.hostKey !== undefined && !sameHostKey(pinned, target.hostKey)) {
      throw new CorekubeError('E_SSH_HOSTKEY', `${where(target, this.port)} is given host key ${fingerprintOf(target.hostKey)}, but ${fingerprintOf(pinned)} is pinned for it`, {
        hint: `the overlord connects only with the key it pinned first; if the machine was reinstalled, delete <prefix>/hostkeys/${target.id} in etcd`,
      });
    }
    const expectedLine = target.hostKey ?? pinned;
    const expected = expectedLine === undefined ? undefined : parseHostKey(expectedLine);
    if (expectedLine !== undefined && !expected) {
      throw new CorekubeError('E_SSH_HOSTKEY', `the host key on record for ${where(target, this.port)} is not an SSH public key`, {
        hint: `fix the machine's record (sshHostKey) or delete <prefix>/hostkeys/${target.id} in etcd`,
      });
    }
    return expected;
  }

  /** A connection whose transport errors and close mark it lost (the next exec opens a new one). */
  private watched(ssh: NodeSSH, target: HostTarget, slot: () => Slot): Connection {
    const connection: Connection = { ip: target.ip, ssh, lost: undefined, active: 0, waiting: [] };
    // node-ssh removes its own error listener once connected: without ours, a later transport error
    // would be an unhandled 'error' event and crash the process.
    const raw = ssh.connection as unknown as NodeJS.EventEmitter | null;
    raw?.on('error', (err: Error) => {
      connection.lost = err.message;
    });
    raw?.on('close', () => {
      connection.lost ??= 'connection closed';
      const current = slot();
      if (current.connection === connection) this.drop(slotKey(target), current);
    });
    return connection;
  }

  private async acquire(c: Connection): Promise<void> {
    if (c.active < this.maxChannels) {
      c.active++;
      return;
    }
    await new Promise<void>((resolve) => c.waiting.push(resolve));
  }

  private release(c: Connection): void {
    const next = c.waiting.shift();
    if (next) next();
    else c.active--;
  }

  private drop(key: string, slot: Slot): void {
    if (this.slots.get(key) === slot) this.slots.delete(key);
    slot.connection?.ssh.dispose();
  }
}

const slotKey = (t: HostTarget) => `${t.id} ${t.ip}`;

async function callPolicy<T>(target: HostTarget, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof CorekubeError) throw err;
    throw new CorekubeError('E_SSH', `cannot read or record the host key of machine ${target.id}: ${describe(err)}`, { retryable: true, cause: err });
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

/** ssh2's connect errors as E_SSH (retryable: the machine may still be booting or its key not installed yet). */
function connectError(target: HostTarget, port: number, err: unknown): CorekubeError {
  const message = describe(err);
  const level = (err as { level?: unknown } | undefined)?.level;
  const auth = level === 'client-authentication' || /authentication methods failed/i.test(message);
  return new CorekubeError('E_SSH', `cannot connect to ${where(target, port)}: ${auth ? 'the SSH key was refused' : message}`, {
    retryable: true,
    cause: err,
    hint: auth
      ? 'the overlord\'s public key is not (yet) in the user\'s authorized_keys on that machine; check --ssh-user and the machine\'s cloud-config'
      : 'the machine may still be booting, or unreachable from the overlord: check its address and that sshd runs',
  });
}
