import { setMaxListeners } from 'node:events';
import { asCorekubeError, CorekubeError } from '../core/errors.ts';
import type { Clock } from './clock.ts';
import { Discovery, JOIN_REQUESTS } from './discovery.ts';
import type { HostRunner, HostTarget } from './host-runner.ts';
import type { ClusterKeys } from './keys.ts';
import { errorFields, type Logger } from './log.ts';
import type { MachineCredentials } from './machine-credentials.ts';
import { parseMachineRecord, type MachineRecord } from './machine-record.ts';
import { restartUnit, writeFile, type RemoteContext } from './remote-commands.ts';
import { REQUEUED_CODES } from './reconciler.ts';
import { Semaphore } from './semaphore.ts';
import type { Fence, Store } from './store.ts';

/**
 * Admission: how a node that holds only the shared join token gets its own discovery credential.
 *
 *   node (join token)  ──put──►  <prefix>join/<id>   (its record, under its lease; no node can read it back)
 *   overlord (leader)  ──watch── join/  →  for each request:
 *     1. host key: the request's key must be the one pinned for that machine id (`hostkeys/<id>`, or the key
 *        in its existing record) — a request for a known machine with another key is refused;
 *     2. makes (or corrects) the etcd user `machine-<id>` and its role (overlord/machine-credentials.ts);
 *     3. over SSH to the request's IP, the host key checked in the handshake: writes the credentials file
 *        (0600) and restarts corekube-announce.service, which then writes `machines/<id>` as `machine-<id>`;
 *     4. pins the host key (create-if-absent) and deletes the request.
 *   The reconciler then deploys the machine from its record, as before.
 *
 * What a node holding the join token can do: ask to join as a NEW machine id, at an address whose SSH host
 * key it holds — no more than joining. It cannot write, read or replace another machine's record: the
 * machine ids it would need are in no key it can read, and a known id needs the pinned host key's private
 * half to pass step 3. A rebuilt machine that kept its id but not its key is refused with the fix
 * (delete `hostkeys/<id>`).
 *
 * Level-based like the reconciler: every change of the join requests is a reason to look at all of them. A
 * request that failed for a retryable reason (SSH not up yet, etcd away) is retried with backoff while it
 * exists; a terminal failure (host key) waits for the request to change. Only the leader admits: the writes
 * are fenced, and runOverlord (one per term) owns this object.
 */
export const ANNOUNCE_UNIT = 'corekube-announce.service';

export interface AdmissionDeps {
  readonly store: Store;
  readonly hosts: HostRunner;
  readonly credentials: MachineCredentials;
  readonly keys: ClusterKeys;
  readonly log: Logger;
  readonly clock: Clock;
}

export interface AdmissionOptions {
  readonly remote: RemoteContext;
  readonly fence?: () => Fence | undefined;
  /** machines admitted at once (default 16) */
  readonly concurrency?: number;
  /** backoff of a retryable failure (default 2 s doubling to 60 s) */
  readonly backoffMs?: { readonly initial: number; readonly max: number };
  /** deadline of one SSH command (default 60 s) */
  readonly commandTimeoutMs?: number;
}

export class Admission {
  private readonly requests: Discovery;
  private readonly stopping = new AbortController();
  private readonly semaphore: Semaphore;
  /** the request object last handled per machine (records are frozen and replaced on change) */
  private readonly handled = new Map<string, MachineRecord>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly failures = new Map<string, number>();
  /** admitted so far (tests, status) */
  admitted = 0;

  constructor(
    private readonly deps: AdmissionDeps,
    private readonly options: AdmissionOptions,
  ) {
    this.semaphore = new Semaphore(options.concurrency ?? 16);
    // every queued admission and every backoff listens to this one signal: hundreds at once are expected
    setMaxListeners(0, this.stopping.signal);
    this.requests = new Discovery({ store: deps.store, keys: deps.keys, log: deps.log, clock: deps.clock, source: JOIN_REQUESTS, onChange: () => this.pass() });
  }

  /** Lists the join requests and watches them; throws E_ETCD when etcd cannot be read. */
  async start(): Promise<void> {
    await this.requests.start();
  }

  /** Stops watching and admitting; resolves once the admissions in flight have ended. */
  async stop(): Promise<void> {
    this.stopping.abort(new CorekubeError('E_INTERNAL', 'admission stopped'));
    await this.requests.stop();
    await Promise.allSettled([...this.running.values()]);
  }

  /** Resolves once no admission is running (tests). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  private pass(): void {
    if (this.stopping.signal.aborted) return;
    const { records } = this.requests.snapshot();
    for (const id of this.handled.keys()) if (!records.has(id)) this.handled.delete(id);
    for (const id of this.failures.keys()) if (!records.has(id) && !this.running.has(id)) this.failures.delete(id);
    for (const [id, request] of records) {
      if (this.running.has(id) || this.handled.get(id) === request) continue;
      this.handled.set(id, request);
      const run = this.admitWithRetry(request).finally(() => {
        this.running.delete(id);
        // the request may have changed while it was being admitted, or be due for a retry
        this.pass();
      });
      this.running.set(id, run);
    }
  }

  private async admitWithRetry(request: MachineRecord): Promise<void> {
    const { log, clock } = this.deps;
    const backoff = this.options.backoffMs ?? { initial: 2_000, max: 60_000 };
    const signal = this.stopping.signal;
    let release: (() => void) | undefined;
    try {
      release = await this.semaphore.acquire(signal);
      await this.admit(request);
      this.failures.delete(request.id);
      this.admitted++;
    } catch (err) {
      if (signal.aborted) return;
      const e = asCorekubeError(err, 'E_INTERNAL');
      if (e.code === 'E_NOT_LEADER') return; // the term is over: the next leader admits it
      const failures = (this.failures.get(request.id) ?? 0) + 1;
      this.failures.set(request.id, failures);
      // the reconciler's rule: the machine's surroundings (SSH, etcd) are worth waiting for, the rest is not
      const retryable = e.retryable || REQUEUED_CODES.includes(e.code);
      const nextRetryMs = Math.min(backoff.max, backoff.initial * 2 ** (failures - 1));
      log[retryable ? 'warn' : 'error'](
        { event: 'join.failed', machine: request.id, ip: request.ip, hostname: request.hostname, attempt: failures, ...(retryable ? { nextRetryMs } : {}), ...errorFields(e) },
        retryable ? `cannot admit ${request.hostname} yet: retrying` : `cannot admit ${request.hostname}: waiting for its join request to change`,
      );
      if (!retryable) return;
      release?.();
      release = undefined;
      try {
        await clock.sleep(nextRetryMs, signal);
      } catch {
        return;
      }
      // look again: the request may be gone, or changed
      if (this.handled.get(request.id) === request) this.handled.delete(request.id);
    } finally {
      release?.();
    }
  }

  private async admit(request: MachineRecord): Promise<void> {
    const { store, hosts, credentials, keys, log } = this.deps;
    const fence = this.options.fence?.();
    const fenced = fence ? { fence } : {};
    const id = request.id;
    const pinned = await this.pinnedHostKey(id);
    if (pinned !== undefined && request.sshHostKey !== undefined && pinned !== request.sshHostKey) {
      throw new CorekubeError('E_SSH_HOSTKEY', `the join request of machine ${id} (${request.ip}, ${request.hostname}) carries a host key other than the one pinned for that machine`, {
        hint: `another machine may be claiming its id; if ${request.hostname} was rebuilt and kept its machine id, delete ${keys.hostkeyOf(id)} in etcd to admit its new key`,
      });
    }
    const hostKey = request.sshHostKey ?? pinned;
    const target: HostTarget = { id, ip: request.ip, ...(hostKey !== undefined ? { hostKey } : {}) };

    const subnet = (await store.get(keys.subnetOf(id)))?.value;
    const changes = await credentials.ensure(id, subnet);
    await this.run(target, 'writing its discovery credentials', writeFile(this.options.remote, credentials.fileFor(id)));
    await this.run(target, `restarting ${ANNOUNCE_UNIT}`, { argv: restartUnit(this.options.remote, ANNOUNCE_UNIT) });
    if (request.sshHostKey !== undefined && pinned === undefined) await this.pin(target, request.sshHostKey, fenced);
    const current = await store.get(keys.joinOf(id));
    if (current) await store.delete(keys.joinOf(id), { ...fenced, expectModRevision: current.modRevision }).catch((err: unknown) => {
      // the node's restarted announce revoked its join lease meanwhile: nothing left to delete
      if (!(err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT')) throw err;
    });
    log.info({ event: 'machine.admitted', machine: id, role: request.role, ip: request.ip, hostname: request.hostname, etcdChanges: changes.length }, `admitted ${request.hostname} (${request.role}, ${request.ip}): it holds its own discovery credential`);
  }

  /** the host key on record for the machine: TOFU-pinned, or carried by its current record */
  private async pinnedHostKey(id: string): Promise<string | undefined> {
    const { store, keys } = this.deps;
    const pin = await store.get(keys.hostkeyOf(id));
    if (pin) return pin.value.trim();
    const record = await store.get(keys.machine(id));
    if (!record) return undefined;
    const parsed = parseMachineRecord(id, record.value);
    return parsed.ok ? parsed.record.sshHostKey : undefined;
  }

  private async pin(target: HostTarget, key: string, fenced: { fence?: Fence }): Promise<void> {
    const { store, keys } = this.deps;
    try {
      await store.put(keys.hostkeyOf(target.id), key, { ...fenced, expectModRevision: '0' });
    } catch (err) {
      if (!(err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT')) throw err;
      const kv = await store.get(keys.hostkeyOf(target.id));
      if (kv?.value.trim() !== key) {
        throw new CorekubeError('E_SSH_HOSTKEY', `machine ${target.id} (${target.ip}) had another host key pinned meanwhile`, { hint: `delete ${keys.hostkeyOf(target.id)} in etcd if the machine was rebuilt` });
      }
    }
  }

  private async run(target: HostTarget, what: string, command: { argv: readonly string[]; stdin?: string }): Promise<void> {
    const result = await this.deps.hosts.exec(target, command.argv, {
      ...(command.stdin !== undefined ? { stdin: command.stdin } : {}),
      timeoutMs: this.options.commandTimeoutMs ?? 60_000,
      signal: this.stopping.signal,
    });
    if (result.code !== 0) {
      throw new CorekubeError('E_COMMAND_FAILED', `admitting machine ${target.id} (${target.ip}): ${what} exited ${result.code}: ${result.stderr.trim().slice(0, 300)}`, {
        hint: 'the machine needs the corekube user with passwordless sudo and the announce unit from its cloud-config',
        retryable: true,
      });
    }
  }
}
