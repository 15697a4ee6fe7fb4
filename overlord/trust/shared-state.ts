import { asCorekubeError, CorekubeError } from '../../core/errors.ts';
import { BACKOFF, Backoffs, type Backoff } from '../../core/retry.ts';
import type { Clock } from '../../core/clock.ts';
import { createEtcdStore, type EtcdStoreOptions } from '../edges/etcd-store.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import { nextRevision, type Fence, type Store, type WatchHandle } from '../edges/store.ts';
import { MAX_SEALED_BYTES, openState, overlordDiscoveryPassword, packState, readStateFiles, sealState, stateFingerprint, unpackState, writeStateFiles } from './sealed-state.ts';

/**
 * The overlord's state shared with standby overlords through discovery, sealed (sealed-state.ts): the bootstrap
 * overlord publishes it at boot and the leader again whenever it issues certificates (fenced); a standby fetches
 * it before its own boot and, while it does not lead, follows it.
 */

/**
 * The leader's publications after it issued machines' certificates, so that standbys take over with them instead
 * of re-issuing them (a re-issued pair redeploys its machine). Best effort: a failure is logged and the deploy
 * goes on. Fenced on the leader's election key: an overlord that lost its lead cannot publish over its successor's.
 */
export class StateRepublisher {
  constructor(private readonly input: { readonly etcd: EtcdStoreOptions; readonly keys: ClusterKeys; readonly stateDir: string; readonly secret: string; readonly log: Logger }) {}

  async publish(fence: Fence | undefined): Promise<void> {
    const { etcd, keys, stateDir, secret, log } = this.input;
    const store = createEtcdStore(etcd);
    try {
      await publishSharedState({ store, keys, stateDir, secret, log, ...(fence ? { fence } : {}) });
    } catch (err) {
      log.warn({ event: 'overlord-state.not-published', ...errorFields(err) }, 'the overlord state could not be published for standbys; next time certificates are issued');
    } finally {
      await store.close();
    }
  }
}
export interface PublishInput {
  readonly store: Store;
  readonly keys: ClusterKeys;
  readonly stateDir: string;
  /** never log it */
  readonly secret: string;
  readonly log: Logger;
  /** the leader's fence when a term publishes (after issuing machines' certificates) */
  readonly fence?: Fence;
  /**
   * At boot: first take over the published state (its files win over local ones, local extras stay), so an
   * overlord restarted after another one led publishes a superset of that leader's state, never an older one.
   */
  readonly adopt?: boolean;
}

export type PublishResult = { readonly published: boolean; readonly fingerprint: string; readonly files: number };

/**
 * Publishes the state directory's ssh/ and pki/ files, sealed, when the key is absent or holds other files
 * (or does not open with this secret: the stack's secret is the truth). One get, and one put only on a change.
 * Only an overlord that boots without `--standby` (with `adopt`) or leads (after issuing certificates) publishes.
 */
export async function publishSharedState(input: PublishInput): Promise<PublishResult> {
  const context = input.keys.overlordState;
  const current = await input.store.get(context);
  let published: Buffer | undefined;
  if (current) {
    try {
      published = openState(current.value, input.secret, context);
    } catch (err) {
      const e = asCorekubeError(err);
      if (e.code !== 'E_OVERLORD_STATE') throw e;
      input.log.warn({ event: 'overlord-state.replacing', key: context, ...errorFields(e) }, 'the published overlord state does not open with this secret: publishing it afresh');
    }
  }
  if (published && input.adopt) {
    const written = await writeStateFiles(input.stateDir, unpackState(published));
    if (written.length > 0) input.log.info({ event: 'overlord-state.adopted', key: context, fingerprint: stateFingerprint(published), written: written.length }, `took over ${written.length} files of the published overlord state`);
  }
  const files = await readStateFiles(input.stateDir);
  const packed = packState(files);
  const fingerprint = stateFingerprint(packed);
  if (published?.equals(packed)) return { published: false, fingerprint, files: files.length };
  const sealed = sealState(packed, input.secret, context);
  if (Buffer.byteLength(sealed) > MAX_SEALED_BYTES) {
    throw new CorekubeError('E_OVERLORD_STATE', `the sealed overlord state is ${Buffer.byteLength(sealed)} bytes, more than discovery's etcd takes in one request`, {
      hint: 'standbys keep the state they fetched; raise discovery etcd\'s --max-request-bytes to share a state this large',
    });
  }
  await input.store.put(context, sealed, input.fence ? { fence: input.fence } : undefined);
  input.log.info({ event: 'overlord-state.published', key: context, fingerprint, files: files.length, bytes: Buffer.byteLength(sealed) }, `overlord state ${fingerprint} published for standbys (${files.length} files, encrypted)`);
  return { published: true, fingerprint, files: files.length };
}

export interface FetchInput {
  /** discovery, as the `overlord` user: endpoints and the discovery CA (the store's auth is added here) */
  readonly etcd: Pick<EtcdStoreOptions, 'endpoints' | 'tls' | 'callTimeoutMs'>;
  readonly keys: ClusterKeys;
  readonly stateDir: string;
  /** never log it */
  readonly secret: string;
}

export interface FetchDeps {
  readonly log: Logger;
  readonly clock: Clock;
  readonly signal?: AbortSignal;
  /** between attempts while discovery, the `overlord` user or the state is not there yet (default BACKOFF.boot) */
  readonly backoff?: Backoff;
  /** for tests: the store of one attempt (default: createEtcdStore) */
  readonly createStore?: (options: EtcdStoreOptions) => Store;
}

/**
 * A standby's boot: authenticates to discovery as `overlord` and waits — with backoff, since the bootstrap
 * overlord creates that user and publishes the state only once discovery's auth is set up — until the state
 * is there, opens it and writes its files into `stateDir`. Nothing is written before the state opened, and
 * nothing is deleted: a state that does not open (a wrong secret) is E_OVERLORD_STATE, terminal.
 */
export async function fetchSharedState(input: FetchInput, deps: FetchDeps): Promise<{ fingerprint: string; files: number; written: readonly string[] }> {
  const failures = new Backoffs(deps.backoff ?? BACKOFF.boot);
  const context = input.keys.overlordState;
  const make = deps.createStore ?? createEtcdStore;
  for (let attempt = 1; ; attempt++) {
    if (deps.signal?.aborted) throw deps.signal.reason;
    let sealed: string | undefined;
    let why: string;
    const store = make({ ...input.etcd, auth: { username: OVERLORD_USER, password: overlordDiscoveryPassword(input.secret) } });
    try {
      sealed = (await store.get(context))?.value;
      why = 'the state is not published yet';
    } catch (err) {
      const e = asCorekubeError(err, 'E_ETCD');
      // a refused login is expected until the bootstrap overlord has set up discovery's auth
      why = e.retryable ? 'discovery does not answer yet' : 'discovery refuses the overlord user (not set up yet, or another overlord secret)';
      deps.log.debug({ event: 'overlord-state.fetch-failed', ...errorFields(e) }, why);
    } finally {
      await store.close().catch(() => undefined);
    }
    if (sealed !== undefined) {
      const packed = openState(sealed, input.secret, context);
      const files = unpackState(packed);
      const written = await writeStateFiles(input.stateDir, files);
      const fingerprint = stateFingerprint(packed);
      deps.log.info({ event: 'overlord-state.fetched', key: context, fingerprint, files: files.length, written: written.length, attempt }, `overlord state ${fingerprint} fetched (${files.length} files, ${written.length} written)`);
      return { fingerprint, files: files.length, written };
    }
    const delay = failures.next();
    deps.log.info({ event: 'overlord-state.waiting', key: context, attempt, nextRetryMs: delay, reason: why }, `waiting for the overlord state: ${why}`);
    await deps.clock.sleep(delay, deps.signal);
  }
}

/** discovery's etcd user that standby overlords read the state as (overlord/trust/discovery-auth.ts). */
export const OVERLORD_USER = 'overlord';

export interface FollowInput {
  /** discovery as root (the overlord's own store, after boot) */
  readonly store: Store;
  readonly keys: ClusterKeys;
  readonly stateDir: string;
  /** never log it */
  readonly secret: string;
  readonly log: Logger;
  readonly clock: Clock;
  /**
   * Whether a published state may be written into `stateDir` now: false while this overlord leads (it is the
   * one that publishes; a late write of a deposed leader must not overwrite what it issued since).
   */
  readonly applies: () => boolean;
  /** between failed reads while etcd is away (default BACKOFF.boot) */
  readonly backoff?: Backoff;
}

export interface Follower {
  /** published states written into the state directory so far */
  applied(): number;
  stop(): Promise<void>;
}

/**
 * Keeps a non-leading overlord's state directory current with the published state (level-based: each change
 * of the key means "read it and write what differs"), so that when it takes over it holds the certificates
 * the previous leader issued and does not re-issue them (a re-issued pair redeploys its machine). A state
 * that does not open is logged and skipped, never written; a lost watch re-reads the key and watches again.
 */
export function followSharedState(input: FollowInput): Follower {
  const stopping = new AbortController();
  const failures = new Backoffs(input.backoff ?? BACKOFF.boot);
  const key = input.keys.overlordState;
  let lastApplied: string | undefined;
  let applied = 0;
  let watch: WatchHandle | undefined;
  let wake: (() => void) | undefined;
  let dirty = true;
  let pending: string | undefined;

  const apply = async (value: string, modRevision: string): Promise<void> => {
    if (modRevision === lastApplied || !input.applies()) return;
    try {
      const packed = openState(value, input.secret, key);
      const written = await writeStateFiles(input.stateDir, unpackState(packed));
      lastApplied = modRevision;
      applied++;
      if (written.length > 0) input.log.info({ event: 'overlord-state.followed', key, fingerprint: stateFingerprint(packed), written: written.length }, `overlord state ${stateFingerprint(packed)} taken over from the leader (${written.length} files written)`);
    } catch (err) {
      lastApplied = modRevision; // the same value will not open next time either
      input.log.error({ event: 'overlord-state.follow-failed', key, ...errorFields(err) }, 'the published overlord state cannot be taken over');
    }
  };

  const loop = async (): Promise<void> => {
    while (!stopping.signal.aborted) {
      if (!dirty) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      dirty = false;
      try {
        if (watch === undefined) {
          const listing = await input.store.list(key);
          const kv = listing.kvs.find((k) => k.key === key);
          if (kv) await apply(kv.value, kv.modRevision);
          watch = await input.store.watch(key, nextRevision(listing.revision), {
            onEvents: (events) => {
              for (const e of events) if (e.type === 'put' && e.kv.key === key) pending = JSON.stringify([e.kv.value, e.kv.modRevision]);
              dirty = true;
              wake?.();
            },
            onLost: () => {
              watch = undefined;
              dirty = true;
              wake?.();
            },
          });
        } else if (pending !== undefined) {
          const [value, modRevision] = JSON.parse(pending) as [string, string];
          pending = undefined;
          await apply(value, modRevision);
        }
        failures.reset();
      } catch (err) {
        dirty = true;
        const delay = failures.next();
        input.log.warn({ event: 'overlord-state.follow-retry', nextRetryMs: delay, ...errorFields(err) }, 'following the overlord state failed; retrying');
        await input.clock.sleep(delay, stopping.signal).catch(() => undefined);
      }
    }
  };
  stopping.signal.addEventListener('abort', () => wake?.(), { once: true });
  const done = loop();
  return {
    applied: () => applied,
    stop: async () => {
      stopping.abort();
      await done;
      await watch?.cancel();
    },
  };
}
