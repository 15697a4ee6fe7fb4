import { Etcd3, EtcdAuthenticationFailedError, EtcdPermissionDeniedError, EtcdInvalidAuthTokenError, GRPCResourceExhastedError, Range, type IOptions, type Watcher } from 'etcd3';
import { systemClock } from '../../core/clock.ts';
import { CorekubeError } from '../../core/errors.ts';
import { BACKOFF, retry } from '../../core/retry.ts';
import { ETCD_RECEIVE_LIMIT_BYTES, LIST_PAGE_KEYS } from '../../contracts/discovery-limits.ts';
import { collect, type Fence, type KeyValue, type Listing, type PutEntry, type PutOptions, type Store, type WatchEvent, type WatchHandle, type WatchListener } from './store.ts';

/**
 * The etcd3 adapter of Store: the only module that imports etcd3. Every error the library throws is
 * converted here, once (see toEtcdError); nothing above sees an etcd3 or gRPC error class.
 *
 * Bounded against what others write into discovery: listings are read in pages of LIST_PAGE_KEYS
 * keys at one revision (no answer is larger than ETCD_RECEIVE_LIMIT_BYTES, whatever is stored); nothing a watch
 * listener throws reaches etcd3 (which would rethrow it as an uncaught exception and end the process) — it ends
 * the watch instead, and the consumer lists again; a watch answer larger than the client accepts ends the watch
 * the same way (etcd3 alone would reconnect and ask for the same answer again, forever).
 */
export interface EtcdStoreOptions {
  /** `https://10.240.0.10:2379`, `http://127.0.0.1:2379` */
  readonly endpoints: readonly string[];
  /** PEM contents (the CLI reads --etcd-ca/--etcd-cert/--etcd-key files); all three for client-cert auth */
  readonly tls?: { readonly ca: Buffer; readonly cert?: Buffer; readonly key?: Buffer };
  /** deadline of one unary call; a watch stream has none */
  readonly callTimeoutMs?: number;
  /** etcd user and password (the discovery etcd's `root`, overlord/trust/discovery-auth.ts); never logged */
  readonly auth?: { readonly username: string; readonly password: string };
}

export function createEtcdStore(options: EtcdStoreOptions): Store {
  const endpoints = options.endpoints.map((e) => e.trim()).filter((e) => e !== '');
  if (endpoints.length === 0) {
    throw new CorekubeError('E_USAGE', 'no etcd endpoint given', { hint: 'pass --etcd-endpoints https://HOST:2379[,…]' });
  }
  return new EtcdStore(new Etcd3(etcdClientOptions(options, endpoints)), endpoints);
}

/** The etcd3 client options of EtcdStoreOptions: every client of the overlord (store, election) uses these. */
export function etcdClientOptions(options: EtcdStoreOptions, endpoints: readonly string[]): IOptions {
  const callTimeoutMs = options.callTimeoutMs ?? 10_000;
  return {
    hosts: [...endpoints],
    grpcOptions: RECEIVE_LIMIT,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    ...(options.tls
      ? {
          credentials: {
            rootCertificate: options.tls.ca,
            ...(options.tls.key ? { privateKey: options.tls.key } : {}),
            ...(options.tls.cert ? { certChain: options.tls.cert } : {}),
          },
        }
      : {}),
    ...(options.auth ? { auth: { username: options.auth.username, password: options.auth.password } } : {}),
  };
}

/** The gRPC channel option every etcd client of the overlord sets: listing pages are sized from it. */
export const RECEIVE_LIMIT = Object.freeze({ 'grpc.max_receive_message_length': ETCD_RECEIVE_LIMIT_BYTES });

class EtcdStore implements Store {
  private readonly watchers = new Set<Watcher>();
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    private readonly endpoints: readonly string[],
  ) {}

  async get(key: string): Promise<KeyValue | null> {
    const res = await this.call(`get ${key}`, () => this.client.get(key).exec());
    const kv = res.kvs[0];
    return kv ? toKeyValue(kv) : null;
  }

  list(prefix: string): Promise<Listing> {
    return collect(this, prefix);
  }

  async scan(prefix: string, onPage: (kvs: readonly KeyValue[]) => void): Promise<string> {
    const end = Range.prefix(prefix).end;
    let start = Buffer.from(prefix);
    let revision: string | undefined;
    for (let page = 1; ; page++) {
      const at = revision;
      const res = await this.call(`list ${prefix} (page ${page})`, () => {
        const range = this.client.getAll().inRange(new Range(start, end)).limit(LIST_PAGE_KEYS);
        return (at === undefined ? range : range.revision(at)).exec();
      });
      revision ??= String(res.header.revision);
      if (res.kvs.length > 0) onPage(res.kvs.map(toKeyValue));
      if (!res.more || res.kvs.length === 0) return revision;
      start = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
    }
  }

  async watch(prefix: string, fromRevision: string, listener: WatchListener): Promise<WatchHandle> {
    // `.watcher()` attaches without waiting for etcd to confirm: a watch on an etcd that is down connects
    // when etcd is back (etcd3 reconnects and resumes from the last revision it delivered).
    const watcher = this.client.watch().prefix(prefix).startRevision(fromRevision).watcher();
    this.watchers.add(watcher);
    let lost = false;
    const lose = (reason: string) => {
      if (lost) return;
      lost = true;
      this.watchers.delete(watcher);
      void watcher.cancel().catch(() => undefined);
      try {
        listener.onLost(reason);
      } catch {
        // the listener's own failure: nothing is left to tell, and it must not reach etcd3
      }
    };
    watcher.on('data', (res) => {
      if (lost) return;
      try {
        const events: WatchEvent[] = res.events.map((ev) =>
          ev.type === 'Put'
            ? { type: 'put', kv: toKeyValue(ev.kv) }
            : { type: 'delete', key: ev.kv.key.toString(), modRevision: String(ev.kv.mod_revision) },
        );
        if (events.length > 0) listener.onEvents(events);
      } catch (err) {
        lose(`handling a watch answer failed (${err instanceof Error ? err.message.slice(0, 200) : 'unknown error'})`);
      }
    });
    // etcd cancelled the watch (compaction past fromRevision, or another reason): it will not resume.
    watcher.on('error', (err) => {
      // etcd cancels a watch behind a compaction with compact_revision set and no reason text; etcd3 keeps
      // only the text, so an empty reason is read as what it is in practice: a compaction
      const reason = err.message.replace(/^Watcher canceled:\s*/, '');
      lose(reason === '' ? 'etcd cancelled the watch: the revision it started from was compacted' : `etcd cancelled the watch: ${reason}`);
    });
    // The watch stream was lost (etcd restarted, the connection cut, an answer larger than the receive limit). etcd3
    // would re-attach every watcher from the revision it last delivered — the same oversized answer again, or,
    // after a compaction, several watchers cancelled at once, which etcd3 matches to the wrong ones and then
    // throws "Failed to find watcher" from inside its stream, leaving every watch of the client dead. Instead the
    // watch is given up here: the follower lists (paged, retried while etcd is away) and watches afresh.
    watcher.on('disconnected', (err: unknown) => {
      if (err instanceof GRPCResourceExhastedError || (err instanceof Error && /RESOURCE_EXHAUSTED|larger than max/i.test(err.message))) {
        lose(`an answer of etcd's was larger than the overlord accepts (${ETCD_RECEIVE_LIMIT_BYTES} bytes)`);
        return;
      }
      lose(`the watch stream to etcd was lost (${err instanceof Error ? err.message.split('\n')[0]!.slice(0, 200) : 'unknown error'})`);
    });
    return {
      cancel: async () => {
        lost = true;
        this.watchers.delete(watcher);
        await watcher.cancel().catch(() => undefined);
      },
    };
  }

  async put(key: string, value: string, options: PutOptions = {}): Promise<string> {
    if (options.expectModRevision === undefined && options.fence === undefined) {
      const res = await this.call(`put ${key}`, () => this.client.put(key).value(value).exec());
      return String(res.header.revision);
    }
    return this.txn(key, [[key, options.expectModRevision]], options.fence, [this.client.put(key).value(value)]);
  }

  async putAll(entries: readonly PutEntry[], options: { readonly fence?: Fence } = {}): Promise<string> {
    if (entries.length === 0) throw new CorekubeError('E_INTERNAL', 'putAll needs at least one entry');
    const what = entries.map((e) => e.key).join(', ');
    return this.txn(
      what,
      entries.map((e) => [e.key, e.expectModRevision] as const),
      options.fence,
      entries.map((e) => this.client.put(e.key).value(e.value)),
    );
  }

  async delete(key: string, options: PutOptions = {}): Promise<void> {
    if (options.expectModRevision === undefined && options.fence === undefined) {
      await this.call(`delete ${key}`, () => this.client.delete().key(key).exec());
      return;
    }
    await this.txn(key, [[key, options.expectModRevision]], options.fence, [this.client.delete().key(key)]);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.watchers].map((w) => w.cancel().catch(() => undefined)));
    this.watchers.clear();
    this.client.close();
  }

  /**
   * One transaction: compare each key's mod revision (where one is expected) and the fence, then the
   * operations; the failure branch reads the fence to tell "not leader" from "changed since read".
   */
  private async txn(
    what: string,
    expects: readonly (readonly [string, string | undefined])[],
    fence: Fence | undefined,
    ops: Parameters<ReturnType<Etcd3['if']>['then']>,
  ): Promise<string> {
    const compares: [string, 'Mod' | 'Create', string][] = [];
    for (const [key, rev] of expects) if (rev !== undefined) compares.push([key, 'Mod', rev]);
    if (fence) compares.push([fence.key, 'Create', fence.createRevision]);
    if (compares.length === 0) {
      // `version > -1` holds for every key, existing or not: a transaction that always applies
      const res = await this.call(`transaction on ${what}`, () => this.client.if(expects[0]![0], 'Version', '>', -1).then(...ops).commit());
      return String(res.header.revision);
    }
    const [first, ...rest] = compares;
    let builder = this.client.if(first![0], first![1], '==', first![2]);
    for (const c of rest) builder = builder.and(c[0], c[1], '==', c[2]);
    builder = builder.then(...ops);
    if (fence) builder = builder.else(this.client.get(fence.key));
    const res = await this.call(`transaction on ${what}`, () => builder.commit());
    if (res.succeeded) return String(res.header.revision);
    if (fence && !fenceHeld(fence, res.responses[0]?.response_range?.kvs?.[0]?.create_revision)) {
      throw new CorekubeError('E_NOT_LEADER', `write to ${what} refused: this overlord no longer holds the leader key ${fence.key}`, {
        hint: 'another overlord leads now; this one stops writing and follows',
      });
    }
    throw new CorekubeError('E_ETCD_CONFLICT', `${what} changed since it was read (expected ${expects.filter(([, r]) => r !== undefined).map(([k, r]) => `${k}@${r}`).join(', ')})`, {
      hint: 're-read the key and plan again',
      retryable: true,
    });
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new CorekubeError('E_ETCD', `${what}: the etcd client is closed`, { hint: 'a stopped overlord makes no more requests' });
    try {
      return await retryStaleAuth(fn);
    } catch (err) {
      throw toEtcdError(what, err, this.endpoints);
    }
  }
}

/**
 * etcd refuses a request checked against an older auth revision than the current one ("revision of auth store
 * is old") — every user, role or grant made meanwhile bumps it, and the overlord makes one user a machine when
 * it admits it. etcd refused the request before applying it, so sending it again is safe: a few times, a few
 * milliseconds apart (BACKOFF.staleAuth), before the error goes up like any other.
 */
export function retryStaleAuth<T>(fn: () => Promise<T>): Promise<T> {
  return retry(fn, { policy: BACKOFF.staleAuth, clock: systemClock, retryIf: (e) => isStaleAuth(e.cause ?? e) });
}

export function isStaleAuth(err: unknown): boolean {
  return err instanceof Error && /revision of auth store is old/.test(err.message);
}

function fenceHeld(fence: Fence, createRevision: string | undefined): boolean {
  return createRevision !== undefined && String(createRevision) === fence.createRevision;
}

function toKeyValue(kv: { key: Buffer; value: Buffer; mod_revision: string; create_revision: string }): KeyValue {
  return {
    key: kv.key.toString(),
    value: kv.value.toString(),
    modRevision: String(kv.mod_revision),
    createRevision: String(kv.create_revision),
  };
}

/** The one conversion of etcd3/gRPC errors. Credentials problems are terminal; everything else is retryable. */
export function toEtcdError(what: string, err: unknown, endpoints: readonly string[]): CorekubeError {
  if (err instanceof CorekubeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof EtcdPermissionDeniedError || err instanceof EtcdAuthenticationFailedError || err instanceof EtcdInvalidAuthTokenError) {
    return new CorekubeError('E_ETCD', `${what}: etcd refused the request (${message})`, {
      hint: 'check --etcd-cert/--etcd-key: the overlord needs a client certificate with full access to the cluster prefix',
      cause: err,
    });
  }
  return new CorekubeError('E_ETCD', `${what}: etcd at ${endpoints.join(',')} did not answer (${message})`, {
    hint: 'check that etcd is running and reachable, and --etcd-endpoints/--etcd-ca; the overlord retries with backoff',
    retryable: true,
    cause: err,
  });
}
