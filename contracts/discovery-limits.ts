/**
 * The sizes that bound what a join-token holder (or an admitted node) can make the overlord hold, read or log
 * in one place: discovery's etcd enforces the first two (cloud-config/discovery.ts renders them as
 * its flags), the overlord the rest, before it parses anything.
 *
 *   any one etcd request ≤ DISCOVERY_MAX_REQUEST_BYTES  (etcd refuses larger puts: no key or value is larger)
 *   discovery's database ≤ DISCOVERY_QUOTA_BYTES        (past it etcd refuses writes: alarm NOSPACE)
 *   one etcd answer      ≤ ETCD_RECEIVE_LIMIT_BYTES     (the client's gRPC receive limit)
 *   one listing page     = LIST_PAGE_KEYS keys          (so a page of the largest possible keys fits one answer)
 *   a machine record or join request ≤ MAX_RECORD_BYTES, nested ≤ MAX_RECORD_DEPTH (checked on the text)
 */

/**
 * discovery etcd's `--max-request-bytes`. The largest value written there legitimately is the overlord's sealed
 * state for standbys (~0.75 KB a machine, overlord/trust/shared-state.ts MAX_SEALED_BYTES): 1 MiB holds ~1,300
 * machines, 2.5 times the largest cluster a spec describes (5 masters, 500 minions, 5 overlords). etcd's
 * default is 1.5 MiB.
 */
export const DISCOVERY_MAX_REQUEST_BYTES = 1024 * 1024;

/**
 * discovery etcd's `--quota-backend-bytes` (etcd's default: 2 GiB). What a cluster keeps there is small (a record
 * and a ledger entry of a few KB a machine, the sealed state); what grows is the history between compactions
 * (hourly, `--auto-compaction-retention=1h`): at 1,000 machines a full deploy writes ~30 MB of ledger, and each
 * publication of the sealed state up to 1 MiB. 1 GiB is four times the busiest hour we can construct and keeps
 * the discovery server's disk from filling up.
 */
export const DISCOVERY_QUOTA_BYTES = 1024 * 1024 * 1024;

/** The overlord's etcd client receive limit (gRPC's default is 4 MiB), set explicitly: listing pages are sized from it. */
export const ETCD_RECEIVE_LIMIT_BYTES = 16 * 1024 * 1024;

/**
 * The largest key+value any etcd the overlord talks to can hold: etcd's default --max-request-bytes (discovery's
 * is smaller), plus room for the response's framing.
 */
const LARGEST_KV_BYTES = 1.5 * 1024 * 1024 + 4096;

/** Keys a listing asks for at once: a page of the largest keys and values fits one answer, with 1 MiB to spare. */
export const LIST_PAGE_KEYS = Math.floor((ETCD_RECEIVE_LIMIT_BYTES - 1024 * 1024) / LARGEST_KV_BYTES);

/** A machine record or join request is a flat JSON object of a few hundred bytes; 4 KiB leaves room for an RSA host key. */
export const MAX_RECORD_BYTES = 4096;
/** A record is one object of scalars: depth 1. 2 lets a nested field be named in the refusal ("role is an object"). */
export const MAX_RECORD_DEPTH = 2;

/** Bad keys remembered per prefix (reported, shown in status); beyond it, only counted. */
export const MAX_INVALID_REMEMBERED = 1024;
