import { lstat, readFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { asCorekubeError, CorekubeError } from '../../core/errors.ts';
import { BACKOFF, retry, type Backoff } from '../../core/retry.ts';
import type { Clock } from '../../core/clock.ts';
import type { HostRunner, HostTarget } from '../edges/host-runner.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import { writeFile as writeFileArgv } from '../edges/remote-commands.ts';
import { writeFileAtomic } from '../../core/private-files.ts';
import type { HostKeyPolicy } from '../edges/ssh-runner.ts';
import type { RemoteFile } from '../../contracts/step.ts';

/**
 * Installing discovery's TLS files (cloud-config's contract: `/etc/corekube/pki/discovery/{ca.crt,
 * server.crt,server.key}`, key 0600; discovery-etcd.path starts etcd once server.key exists). The overlord
 * logs in as `corekube` with its own key and writes each file atomically with `sudo -n` (the one argv
 * builder of overlord/edges/remote-commands.ts), the key last, so the path unit fires on a complete set.
 *
 * Discovery's host key is trusted on first use and pinned in a local file of the overlord's state
 * directory: etcd — where the other machines' keys are kept — is what this push brings up. Discovery's host
 * key reaches the overlord through no other channel (Heat does not expose it), so TOFU is the best here.
 */
export const DISCOVERY_HOST_KEY_FILE = 'ssh/discovery.host-key';

/** A HostKeyPolicy over one local file (0600): the key line first seen, then required. */
export function fileHostKeys(stateDir: string): HostKeyPolicy {
  const file = path.join(stateDir, DISCOVERY_HOST_KEY_FILE);
  return {
    async expected(): Promise<string | undefined> {
      try {
        const st = await lstat(file);
        if (!st.isFile()) throw new CorekubeError('E_SSH_HOSTKEY', `${file} is not a regular file`, { hint: 'remove it' });
        const line = (await readFile(file, 'utf8')).trim();
        return line === '' ? undefined : line;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    },
    async remember(_target: HostTarget, key: string): Promise<void> {
      await writeFileAtomic(file, `${key.trim()}\n`, { root: stateDir });
    },
  };
}

/** How a discovery push retries: until it works or the signal aborts (discovery may still be booting). */
export interface PushOptions {
  readonly user: string;
  readonly clock: Clock;
  readonly log: Logger;
  readonly signal?: AbortSignal;
  /** default BACKOFF.boot */
  readonly backoff?: Backoff;
  /** one command's deadline (default 30 s) */
  readonly commandTimeoutMs?: number;
}

/**
 * Writes `files` (in order) to discovery, retrying with backoff while discovery is unreachable, refuses the
 * key (cloud-init has not authorized it yet) or a write fails. A host key other than the pinned one
 * (E_SSH_HOSTKEY) is not retried: someone else answers at discovery's address.
 */
export async function pushDiscoveryFiles(hosts: HostRunner, target: HostTarget, files: readonly RemoteFile[], options: PushOptions): Promise<void> {
  const attempt = await retry((n) => writeEach(hosts, target, files, options).then(() => n), {
    policy: options.backoff ?? BACKOFF.boot,
    clock: options.clock,
    code: 'E_SSH',
    ...(options.signal ? { signal: options.signal } : {}),
    onRetry: (e, n, delay) => options.log.warn({ event: 'discovery.push-retry', ip: target.ip, attempt: n, nextRetryMs: delay, ...errorFields(e) }, 'cannot install discovery\'s TLS files yet; retrying'),
  }).catch((err: unknown) => {
    if (options.signal?.aborted) throw options.signal.reason;
    throw asCorekubeError(err, 'E_SSH');
  });
  options.log.info({ event: 'discovery.tls-installed', ip: target.ip, paths: files.map((f) => f.path), attempt }, `installed discovery's TLS files on ${target.ip}`);
}

async function writeEach(hosts: HostRunner, target: HostTarget, files: readonly RemoteFile[], options: PushOptions): Promise<void> {
  for (const file of files) {
    const { argv, stdin } = writeFileArgv({ user: options.user }, file);
    const res = await hosts.exec(target, argv, { stdin, timeoutMs: options.commandTimeoutMs ?? 30_000, ...(options.signal ? { signal: options.signal } : {}) });
    if (res.code !== 0) {
      throw new CorekubeError('E_COMMAND_FAILED', `writing ${file.path} on discovery (${target.ip}) exited with ${res.code}: ${firstLine(res.stderr)}`, {
        retryable: true,
        hint: `check that user ${options.user} may run 'sudo -n' on discovery (cloud-config writes /etc/sudoers.d/corekube)`,
      });
    }
  }
}

/**
 * The certificate discovery's etcd serves right now (DER), verified against `ca` for `host`, or undefined
 * when nothing valid answers. Lets a restarted overlord skip the SSH push when its certificate is in place.
 */
export function servedCertificate(host: string, port: number, ca: string, timeoutMs = 5_000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port, ca, timeout: timeoutMs, ALPNProtocols: ['h2'] }, () => {
      const der = socket.getPeerCertificate().raw;
      socket.destroy();
      resolve(der ? Buffer.from(der) : undefined);
    });
    socket.on('timeout', () => {
      socket.destroy();
      resolve(undefined);
    });
    socket.on('error', () => resolve(undefined));
  });
}

/** The DER bytes of a PEM certificate. */
export function derOf(pem: string): Buffer {
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new CorekubeError('E_INTERNAL', 'not a PEM certificate');
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}

function firstLine(text: string): string {
  return (text.trim().split('\n')[0] ?? '').slice(0, 200) || '(no output)';
}
