import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { asCorekubeError, CorekubeError, type ErrorCode } from '../../core/errors.ts';
import { BACKOFF, decide, delayMs, type Backoff } from '../../core/retry.ts';
import type { Clock } from '../../core/clock.ts';
import { Discovery, JOIN_REQUESTS } from './discovery.ts';
import { MAX_INVALID_REMEMBERED } from '../../contracts/discovery-limits.ts';
import { fingerprintOf, sameHostKey } from '../edges/host-key.ts';
import type { HostRunner, HostTarget } from '../edges/host-runner.ts';
import { addressProblem, admittedValue, type AdmittedIdentity, type IdentityBook, type MachineAddresses } from './identity.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { MachineCredentials } from '../trust/machine-credentials.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import { parseIdentity, readIdentity, restartUnit, writeFile, type RemoteContext } from '../edges/remote-commands.ts';
import { Semaphore } from '../../core/semaphore.ts';
import type { Fence, PutEntry, Store } from '../edges/store.ts';
import { BoundedMemo, escapeText } from '../../core/untrusted.ts';

/**
 * Admission: how a node that holds only the shared join token gets its own discovery credential — and proves,
 * first, that it is the machine that asked.
 *
 *   node (join token)  ──put──►  <prefix>join/<id>   (its record + nonceDigest = sha256 of a per-boot nonce only
 *                                                     root on the node can read; no node can read requests back)
 *   overlord (leader)  ──watch── join/  →  for each request:
 *     1. checks, before anything leaves the overlord: the request carries a host key and a nonce digest; its IP is
 *        one the cluster gives machines (overlord/discovery/identity.ts), not the address of another admitted machine; its
 *        host key is neither pinned for another machine nor another than the one pinned for this id;
 *     2. PROOF, over SSH to the request's IP, the host key checked in the handshake: reads /etc/machine-id and the
 *        nonce (one read-only command). The machine reached must be the id that asked, and hold the nonce the
 *        request commits to — so nobody can make the overlord admit a machine that did not ask itself;
 *     3. records the identity (`admitted/<id>`: IP and host key; and `hostkeys/<id>`) in one fenced transaction;
 *     4. makes (or corrects) the etcd user `machine-<id>` (overlord/trust/machine-credentials.ts), writes its credentials
 *        file (0600) over the same connection and restarts corekube-announce.service, which then writes
 *        `machines/<id>` as `machine-<id>`; deletes the request.
 *   A request refused in 1 or 2 costs one log line naming the field, and changes nothing on any machine and no
 *   etcd user. The reconciler then deploys the machine at its admitted identity only (overlord/discovery/admitted-discovery.ts).
 *
 * An admitted machine whose record names another address — it really moved, or it was admitted before identities
 * were recorded — is MOVED the same way: proof at the new address with its known host key (its record is written
 * by its own etcd user, so no nonce is needed), then its identity is recorded there. Nothing is written to it.
 *
 * Bounded: at most `maxPending` requests are tracked at once (more wait, one log line), attempts start at most
 * `rate.perSecond` a second, new requests before ones already failing, and a refused request is not looked at
 * again until it changes. Level-based like the reconciler: every change of the requests or the machines is a
 * reason to look at all of them; a retryable failure (SSH not up yet, etcd away) is retried with backoff while
 * the request exists. Only the leader admits: the writes are fenced, and runOverlord (one per term) owns this.
 */
export const ANNOUNCE_UNIT = 'corekube-announce.service';

export interface AdmissionDeps {
  readonly store: Store;
  readonly hosts: HostRunner;
  readonly credentials: MachineCredentials;
  readonly keys: ClusterKeys;
  readonly log: Logger;
  readonly clock: Clock;
  /** the admitted identities (and pinned keys); admission records what it admits in it */
  readonly book: IdentityBook;
  /** admitted machines announcing another address (overlord/discovery/admitted-discovery.ts); absent = none are moved */
  readonly machines?: { moved(): ReadonlyMap<string, MachineRecord> };
}

export interface AdmissionOptions {
  readonly remote: RemoteContext;
  readonly fence?: () => Fence | undefined;
  /** the addresses machines can have; absent = any IPv4 address */
  readonly addresses?: MachineAddresses;
  /** machines admitted at once (default 16) */
  readonly concurrency?: number;
  /** between attempts of a request that failed for a reason worth waiting for (default BACKOFF.admission) */
  readonly backoff?: Backoff;
  /** deadline of one SSH command (default 60 s) */
  readonly commandTimeoutMs?: number;
  /** requests tracked at once, those waiting for a retry included (default 256) */
  readonly maxPending?: number;
  /** attempts started a second, and the burst (default 20, 40) */
  readonly rate?: { readonly perSecond: number; readonly burst: number };
  /** a machine removed from the cluster (overlord/lifecycle/removals.ts): its join requests are refused */
  readonly removed?: (id: string) => boolean;
}

/** A request refused for what it says (terminal until it changes): names the field. */
export class JoinRefusedError extends CorekubeError {
  constructor(
    readonly field: string,
    message: string,
    hint: string,
    code: ErrorCode = 'E_JOIN_REFUSED',
  ) {
    super(code, message, { hint });
    this.name = 'JoinRefusedError';
  }
}

type Kind = 'join' | 'move';

interface Pending {
  readonly id: string;
  kind: Kind;
  request: MachineRecord;
  failures: number;
  notBefore: number;
  running: boolean;
  /** the request object an attempt ended on (admitted, or refused): not looked at again until the request changes */
  settled: MachineRecord | undefined;
}

export class Admission {
  private readonly requests: Discovery;
  private readonly stopping = new AbortController();
  private readonly semaphore: Semaphore;
  private readonly pending = new Map<string, Pending>();
  private readonly running = new Set<Promise<void>>();
  private readonly bucket: TokenBucket;
  private readonly maxPending: number;
  /** per machine: the refusal last logged (one line per machine and field) */
  private readonly refusals = new BoundedMemo<string>(MAX_INVALID_REMEMBERED);
  private deferredLogged = false;
  private wake: { at: number; timer: Promise<void> } | undefined;
  /** admitted so far (tests, status) */
  admitted = 0;
  /** identities moved to a new address so far */
  moved = 0;

  constructor(
    private readonly deps: AdmissionDeps,
    private readonly options: AdmissionOptions,
  ) {
    this.semaphore = new Semaphore(options.concurrency ?? 16);
    this.maxPending = options.maxPending ?? 256;
    this.bucket = new TokenBucket(options.rate ?? { perSecond: 20, burst: 40 }, deps.clock.now());
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
    await Promise.allSettled([...this.running]);
  }

  /** Resolves once no admission is running (tests). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  /** Something changed (a request, a machine, an identity): look at every request again. */
  pass(): void {
    if (this.stopping.signal.aborted) return;
    const joins = this.requests.snapshot().records;
    const moves = this.deps.machines?.moved() ?? new Map<string, MachineRecord>();
    for (const [id, p] of this.pending) if (!p.running && !joins.has(id) && !moves.has(id)) this.pending.delete(id);

    const now = this.deps.clock.now();
    const due: Pending[] = [];
    let deferred = 0;
    // requests being worked on (running or waiting for a retry); settled ones cost only their entry
    let active = [...this.pending.values()].filter((p) => p.settled !== p.request).length;
    const consider = (id: string, request: MachineRecord, kind: Kind) => {
      let p = this.pending.get(id);
      if (p?.running) return;
      if (p && p.request !== request) {
        if (p.settled === p.request) active++;
        Object.assign(p, { request, kind, failures: 0, notBefore: 0, settled: undefined });
      }
      if (!p) {
        if (active >= this.maxPending) {
          deferred++;
          return;
        }
        p = { id, kind, request, failures: 0, notBefore: 0, running: false, settled: undefined };
        this.pending.set(id, p);
        active++;
      }
      if (p.settled === request) return;
      // what the request says is checked here, at no cost in rate or SSH: a flood of bad requests is refused at once
      try {
        this.check(p.kind, p.request);
      } catch (err) {
        this.settle(p, err);
        active--;
        return;
      }
      if (p.notBefore > now) this.wakeAt(p.notBefore);
      else due.push(p);
    };
    for (const [id, request] of joins) consider(id, request, 'join');
    for (const [id, record] of moves) if (!joins.has(id)) consider(id, record, 'move');

    // new requests before those that keep failing: a flood of unreachable ones cannot starve a real machine
    due.sort((a, b) => a.failures - b.failures || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const p of due) {
      if (!this.bucket.take(now)) {
        deferred += 1;
        this.wakeAt(this.bucket.nextAt());
        continue;
      }
      this.start1(p);
    }
    if (deferred > 0 && !this.deferredLogged) {
      this.deferredLogged = true;
      this.deps.log.warn({ event: 'join.deferred', deferred, maxPending: this.maxPending, perSecond: this.bucket.perSecond }, `more join requests than admission takes at once: ${deferred} wait`);
    } else if (deferred === 0) {
      this.deferredLogged = false;
    }
  }

  private start1(p: Pending): void {
    p.running = true;
    const run = this.attempt(p).finally(() => {
      p.running = false;
      this.running.delete(run);
      // the request may have changed while it was being admitted, or be due for a retry
      this.pass();
    });
    this.running.add(run);
  }

  /** One pass later, at `at` (the earliest retry or token). */
  private wakeAt(at: number): void {
    if (this.wake && this.wake.at <= at) return;
    const timer = this.deps.clock.sleep(Math.max(0, at - this.deps.clock.now()), this.stopping.signal).then(
      () => {
        if (this.wake?.timer === timer) this.wake = undefined;
        this.pass();
      },
      () => undefined,
    );
    this.wake = { at, timer };
  }

  private async attempt(p: Pending): Promise<void> {
    const { log, clock } = this.deps;
    const policy = { ...(this.options.backoff ?? BACKOFF.admission), retries: Infinity };
    const signal = this.stopping.signal;
    const request = p.request;
    let release: (() => void) | undefined;
    try {
      release = await this.semaphore.acquire(signal);
      if (p.kind === 'join') {
        await this.admit(request);
        this.admitted++;
      } else {
        await this.move(request);
        this.moved++;
      }
      // done with this request: looked at again only if it changes (it is usually gone by then)
      p.settled = request;
      this.refusals.delete(p.id);
    } catch (err) {
      if (signal.aborted) return;
      const e = asCorekubeError(err, 'E_INTERNAL');
      p.failures++;
      // the policy's one decision: a retryable failure, or one of the machine's surroundings (SSH, etcd), is worth waiting for
      const decision = decide(e, p.failures, policy);
      if (decision.kind === 'stop') return; // the term is over: the next leader admits it
      const fields = { machine: request.id, ip: request.ip, hostname: request.hostname, attempt: p.failures, ...errorFields(e) };
      if (decision.kind !== 'give-up') {
        p.notBefore = clock.now() + delayMs(policy, p.failures);
        log.warn({ event: `${p.kind}.failed`, ...fields, nextRetryMs: p.notBefore - clock.now() }, `cannot ${p.kind === 'join' ? 'admit' : 'move'} ${request.hostname} yet: retrying`);
        return;
      }
      this.settle(p, e);
    } finally {
      release?.();
    }
  }

  /** A terminal failure: the request is not looked at again until it changes; one log line per machine and field. */
  private settle(p: Pending, err: unknown): void {
    const e = asCorekubeError(err);
    const request = p.request;
    p.settled = request;
    const field = e instanceof JoinRefusedError ? e.field : 'request';
    if (!this.refusals.firstTime(p.id, `${field}\0${e.code}`)) return;
    this.deps.log.warn(
      { event: p.kind === 'join' ? 'join.refused' : 'machine.move-refused', machine: request.id, ip: request.ip, hostname: request.hostname, field, ...errorFields(e) },
      p.kind === 'join' ? `join request of ${request.hostname} refused: ${field} ${e.message}` : `${request.hostname} not moved to ${request.ip}: ${field} ${e.message}`,
    );
  }

  /** What a request says, checked against the identities (no I/O); throws JoinRefusedError. */
  private check(kind: Kind, request: MachineRecord): void {
    if (kind === 'join') {
      this.checkJoin(request);
      return;
    }
    if (this.deps.book.keyOf(request.id) === undefined) throw new JoinRefusedError('id', 'has no admitted identity or pinned host key', 'the machine asks to join with its join token');
    this.checkAddress(request);
  }

  private async admit(request: MachineRecord): Promise<void> {
    const { store, credentials, keys, log, clock } = this.deps;
    const id = request.id;
    const key = this.checkJoin(request);
    const target: HostTarget = { id, ip: request.ip, hostKey: key };
    await this.prove(target, request.nonceDigest);

    await this.record({ id, role: request.role, ip: request.ip, hostKey: key, admittedAt: new Date(clock.now()).toISOString() });
    const subnet = (await store.get(keys.subnetOf(id)))?.value;
    const changes = await credentials.ensure(id, subnet);
    await this.run(target, 'writing its discovery credentials', writeFile(this.options.remote, credentials.fileFor(id)));
    await this.run(target, `restarting ${ANNOUNCE_UNIT}`, { argv: restartUnit(this.options.remote, ANNOUNCE_UNIT) });
    const current = await store.get(keys.joinOf(id));
    const fence = this.options.fence?.();
    if (current) await store.delete(keys.joinOf(id), { ...(fence ? { fence } : {}), expectModRevision: current.modRevision }).catch((err: unknown) => {
      // the node's restarted announce revoked its join lease meanwhile: nothing left to delete
      if (!(err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT')) throw err;
    });
    log.info({ event: 'machine.admitted', machine: id, role: request.role, ip: request.ip, hostname: request.hostname, etcdChanges: changes.length }, `admitted ${request.hostname} (${request.role}, ${request.ip}): it proved its identity and holds its own discovery credential`);
  }

  private async move(record: MachineRecord): Promise<void> {
    const { book, log, clock } = this.deps;
    this.check('move', record);
    const key = book.keyOf(record.id)!;
    const before = book.get(record.id);
    await this.prove({ id: record.id, ip: record.ip, hostKey: key }, undefined);
    await this.record({ id: record.id, role: before?.role ?? record.role, ip: record.ip, hostKey: key, admittedAt: new Date(clock.now()).toISOString() });
    log.info(
      { event: 'machine.moved', machine: record.id, hostname: record.hostname, ip: record.ip, from: before?.ip ?? null },
      before ? `${record.hostname} proved its identity at ${record.ip} (was ${before.ip}): it is deployed there` : `${record.hostname} proved its identity at ${record.ip}: its identity is recorded`,
    );
  }

  /** The checks of a join request before anything leaves the overlord; returns the host key to prove. */
  private checkJoin(request: MachineRecord): string {
    const { book, keys } = this.deps;
    if (this.options.removed?.(request.id)) {
      throw new JoinRefusedError('id', `machine ${request.id} was removed from the cluster`, `a removed machine does not come back under its machine id: rebuild it (a new /etc/machine-id), or delete ${keys.removedOf(request.id)} in etcd to admit it again`);
    }
    const key = request.sshHostKey;
    if (key === undefined) throw new JoinRefusedError('sshHostKey', 'is missing', 'a join request carries the machine\'s SSH host key: corekube-announce waits for sshd\'s key before it asks');
    if (request.nonceDigest === undefined) throw new JoinRefusedError('nonceDigest', 'is missing', 'the machine\'s corekube-announce predates identity proofs: boot it with this version\'s cloud-config');
    this.checkAddress(request);
    const admitted = book.get(request.id);
    if (admitted && admitted.role !== request.role) {
      throw new JoinRefusedError('role', `${request.role} is not the role machine ${request.id} was admitted as (${admitted.role})`, `a machine keeps its role; one rebuilt in another role gets a new machine id, or delete ${keys.admittedOf(request.id)} in etcd`);
    }
    const owner = book.ownerOfKey(key);
    if (owner !== undefined && owner !== request.id) {
      throw new JoinRefusedError('sshHostKey', `${fingerprintOf(key)} is the host key of machine ${owner}`, 'a host key belongs to the one machine admitted with it');
    }
    const pinned = book.keyOf(request.id);
    if (pinned !== undefined && !sameHostKey(pinned, key)) {
      throw new JoinRefusedError('sshHostKey', `${fingerprintOf(key)} is not the host key pinned for machine ${request.id} (${fingerprintOf(pinned)})`, `another machine may be claiming its id; if ${request.hostname} was rebuilt and kept its machine id, delete ${keys.hostkeyOf(request.id)} and ${keys.admittedOf(request.id)} in etcd to admit its new key`, 'E_SSH_HOSTKEY');
    }
    return key;
  }

  private checkAddress(record: MachineRecord): void {
    const outside = addressProblem(record.ip, this.options.addresses);
    if (outside) throw new JoinRefusedError('ip', `${record.ip} ${outside}`, 'the overlord connects only to addresses the cluster gives its machines');
    const owner = this.deps.book.ownerOfIp(record.ip);
    if (owner !== undefined && owner !== record.id) throw new JoinRefusedError('ip', `${record.ip} is the address of machine ${owner}`, 'an address belongs to the one machine admitted there');
  }

  /**
   * The machine at `target` (host key checked in the handshake) must be `target.id` and, for a join request, hold
   * the nonce whose digest it carries. Read-only; the nonce is never logged.
   */
  private async prove(target: HostTarget, nonceDigest: string | undefined): Promise<void> {
    let result;
    try {
      result = await this.deps.hosts.exec(target, readIdentity(this.options.remote), { timeoutMs: this.options.commandTimeoutMs ?? 60_000, signal: this.stopping.signal });
    } catch (err) {
      const e = asCorekubeError(err, 'E_SSH');
      if (e.code === 'E_SSH_HOSTKEY') throw new JoinRefusedError('sshHostKey', `is not the key of the machine at ${target.ip}: ${e.message}`, 'the request names a host key the machine at that address does not hold', 'E_SSH_HOSTKEY');
      throw e;
    }
    if (result.code !== 0) {
      throw new JoinRefusedError('nonceDigest', `cannot be checked: reading the machine id and join nonce at ${target.ip} exited ${result.code} (${escapeText(result.stderr.trim().slice(0, 160))})`, 'the machine at that address did not ask to join (it holds no join nonce), or lacks the corekube user\'s sudo rule');
    }
    const shown = parseIdentity(result.stdout);
    if (!shown) throw new JoinRefusedError('id', `cannot be checked: the machine at ${target.ip} answered no machine id and join nonce`, 'the machine at that address is not a corekube node');
    if (shown.machineId !== target.id) {
      throw new JoinRefusedError('id', `${target.id} is not the machine at ${target.ip} (that is ${shown.machineId})`, 'a machine is admitted only under its own /etc/machine-id, at its own address');
    }
    if (nonceDigest !== undefined && createHash('sha256').update(shown.nonce).digest('hex') !== nonceDigest) {
      throw new JoinRefusedError('nonceDigest', `is not the digest of the join nonce the machine at ${target.ip} holds`, 'the request was not written by that machine; a machine that rebooted asks again with its new nonce');
    }
  }

  /** Records the identity (and pins its key) in one fenced transaction, then in the book. */
  private async record(identity: AdmittedIdentity): Promise<void> {
    const { store, keys, book } = this.deps;
    const [existing, pin] = await Promise.all([store.get(keys.admittedOf(identity.id)), store.get(keys.hostkeyOf(identity.id))]);
    if (pin && !sameHostKey(pin.value, identity.hostKey)) {
      throw new JoinRefusedError('sshHostKey', `machine ${identity.id} had another host key pinned meanwhile (${fingerprintOf(pin.value)})`, `delete ${keys.hostkeyOf(identity.id)} in etcd if the machine was rebuilt`, 'E_SSH_HOSTKEY');
    }
    const entries: PutEntry[] = [{ key: keys.admittedOf(identity.id), value: admittedValue(identity), expectModRevision: existing?.modRevision ?? '0' }];
    if (!pin) entries.push({ key: keys.hostkeyOf(identity.id), value: identity.hostKey, expectModRevision: '0' });
    const fence = this.options.fence?.();
    await store.putAll(entries, fence ? { fence } : {});
    book.admit(identity);
  }

  private async run(target: HostTarget, what: string, command: { argv: readonly string[]; stdin?: string }): Promise<void> {
    const result = await this.deps.hosts.exec(target, command.argv, {
      ...(command.stdin !== undefined ? { stdin: command.stdin } : {}),
      timeoutMs: this.options.commandTimeoutMs ?? 60_000,
      signal: this.stopping.signal,
    });
    if (result.code !== 0) {
      throw new CorekubeError('E_COMMAND_FAILED', `admitting machine ${target.id} (${target.ip}): ${what} exited ${result.code}: ${escapeText(result.stderr.trim().slice(0, 300))}`, {
        hint: 'the machine needs the corekube user with passwordless sudo and the announce unit from its cloud-config',
        retryable: true,
      });
    }
  }
}

/** `perSecond` tokens a second, at most `burst` saved up: how many admission attempts may start. */
class TokenBucket {
  private tokens: number;
  readonly perSecond: number;
  private readonly burst: number;

  constructor(
    rate: { readonly perSecond: number; readonly burst: number },
    private at: number,
  ) {
    if (!(rate.perSecond > 0) || !(rate.burst >= 1)) throw new RangeError(`Expected a positive \`rate\`, got ${JSON.stringify(rate)}.`);
    this.perSecond = rate.perSecond;
    this.burst = rate.burst;
    this.tokens = rate.burst;
  }

  take(now: number): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) / 1000) * this.perSecond);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }

  /** when the next token is there */
  nextAt(): number {
    return this.at + Math.ceil(((1 - this.tokens) / this.perSecond) * 1000);
  }
}
