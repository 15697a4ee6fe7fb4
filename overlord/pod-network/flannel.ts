import { createHash } from 'node:crypto';
import { CorekubeError } from '../../core/errors.ts';
import { formatIpv4, parseCidr, type Cidr } from '../../clusterspec/cidr.ts';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import type { Fence, Store } from '../edges/store.ts';
import type { PermissionSpec } from '../trust/discovery-auth.ts';
import type { PodNetwork, PodNetworkPorts } from './pod-network.ts';

/**
 * flannel, the pod network (pod-network.ts): its network in discovery's etcd, owned by the overlord (flanneld on every machine reads it with
 * `--etcd-prefix=<cluster prefix>/network`):
 *
 * - the network config at `network/config`, written once (create-if-absent); a spec whose pod network
 *   differs from the config already there is refused, never silently rewritten;
 * - one subnet **reservation** a machine at `network/subnets/<a.b.c.d>-<len>`: a lease record without TTL in
 *   flannel's own format, so a stock flanneld whose public IP matches takes it (and keeps it reserved);
 * - the index `subnets/<machine id>` → subnet, written in the same transaction as the reservation, so a
 *   subnet is held by exactly one machine and a machine that comes back gets its subnet again.
 *
 * Allocation is deterministic: a machine's candidates start at a hash of its id and go round the pod
 * network in order, so racing allocators rarely want the same subnet, and when they do the transaction
 * lets exactly one win and the other moves on.
 */
export const VXLAN_PORT = 8472;

/** flannel as the cluster's pod network: one book of the reservations for its life (make one a leader term). */
export class FlannelNetwork implements PodNetwork {
  readonly name = 'flannel';
  private readonly book = new SubnetBook();

  constructor(
    private readonly config: FlannelConfig,
    private readonly ports: PodNetworkPorts,
  ) {}

  async ensureConfig(fence?: Fence): Promise<void> {
    await ensureNetworkConfig(this.ports.store, this.ports.keys, this.config, fence);
  }

  async reserve(record: MachineRecord, fence?: Fence): Promise<string> {
    const subnet = await reserveSubnet(this.ports.store, this.ports.keys, this.config, record, fence, this.book);
    this.ports.log.debug({ event: 'subnet.reserved', machine: record.id, hostname: record.hostname, subnet }, `pod subnet ${subnet}`);
    // flanneld on the machine writes its own lease as the machine's etcd user: grant it that one key
    const changes = await this.ports.credentials?.ensure(record.id, subnetLeaseName(subnet));
    if (changes?.length) this.ports.log.debug({ event: 'credentials.granted', machine: record.id, changes }, 'the machine may write its subnet lease');
    return subnet;
  }

  async subnetOf(machineId: string): Promise<string | undefined> {
    const kv = await this.ports.store.get(this.ports.keys.subnetOf(machineId));
    return kv ? subnetCidr(kv.value) : undefined;
  }

  async release(machineId: string, fence?: Fence): Promise<string | undefined> {
    const { store, keys, log } = this.ports;
    const index = await store.get(keys.subnetOf(machineId));
    if (!index) return undefined;
    const fenced = fence ? { fence } : {};
    // flannel's reservation first: a crash between the two deletes leaves the index, and the next attempt ends the job
    await store.delete(`${keys.network}subnets/${index.value}`, fenced);
    await store.delete(keys.subnetOf(machineId), { expectModRevision: index.modRevision, ...fenced });
    this.book.reset();
    log.info({ event: 'subnet.released', machine: machineId, subnet: subnetCidr(index.value) }, `pod subnet ${subnetCidr(index.value)} released`);
    return subnetCidr(index.value);
  }
}

/** a flannel subnet lease name: `10.244.3.0-24` */
const SUBNET_NAME = /^(\d{1,3}\.){3}\d{1,3}-\d{1,2}$/;

/**
 * What a machine's own etcd user may do with flannel's keys: read the network config and every subnet lease
 * (flanneld routes to every other node), and — once `subnet` (a lease name) is reserved for it — write its own lease.
 */
export function flannelGrants(keys: ClusterKeys, subnet?: string): readonly PermissionSpec[] {
  if (subnet !== undefined && !SUBNET_NAME.test(subnet)) throw new CorekubeError('E_INTERNAL', `${JSON.stringify(subnet)} is not a flannel subnet lease name`, { hint: 'subnet names come from overlord/pod-network/flannel.ts, e.g. 10.244.3.0-24' });
  const grants: PermissionSpec[] = [
    { permission: 'Read', key: `${keys.network}config`, prefix: false },
    // flanneld lists and watches path.Join(prefix, "subnets") as a prefix — no trailing slash — and etcd
    // permits a range only inside a granted one: granting `subnets/` refuses flanneld's every read
    { permission: 'Read', key: `${keys.network}subnets`, prefix: true },
  ];
  if (subnet !== undefined) grants.push({ permission: 'Readwrite', key: `${keys.network}subnets/${subnet}`, prefix: false });
  return grants;
}

export interface FlannelConfig {
  readonly Network: string;
  readonly SubnetLen: number;
  readonly Backend: { readonly Type: 'vxlan'; readonly VNI: number; readonly Port: number };
}

/** The pod network's address space as flannel divides it. */
export interface SubnetSpace {
  readonly cidr: Cidr;
  readonly subnetLength: number;
  /** how many subnets of `subnetLength` the pod network holds */
  readonly size: number;
}

export function flannelConfig(spec: ClusterSpec): FlannelConfig {
  return {
    Network: spec.network.podCidr,
    SubnetLen: spec.network.podSubnetLength,
    Backend: { Type: 'vxlan', VNI: spec.network.vxlanId, Port: VXLAN_PORT },
  };
}

export function subnetSpace(config: FlannelConfig): SubnetSpace {
  const cidr = parseCidr(config.Network);
  if ('error' in cidr) throw new CorekubeError('E_INTERNAL', `flannel network ${config.Network} ${cidr.error}`);
  return { cidr, subnetLength: config.SubnetLen, size: 2 ** (config.SubnetLen - cidr.prefix) };
}

/** The n-th subnet in flannel's key form, `10.244.3.0-24`. */
export function subnetName(net: SubnetSpace, n: number): string {
  return `${formatIpv4(net.cidr.network + n * 2 ** (32 - net.subnetLength))}-${net.subnetLength}`;
}

/** `10.244.3.0-24` → `10.244.3.0/24` */
export function subnetCidr(name: string): string {
  return name.replace('-', '/');
}

/** `10.244.3.0/24` → `10.244.3.0-24` (flannel's lease key form) */
export function subnetLeaseName(cidr: string): string {
  return cidr.replace('/', '-');
}

/** A machine's candidate subnets, in the order it tries them: from a hash of its id, all the way round. */
export function* candidates(net: SubnetSpace, machineId: string): Generator<string> {
  const start = createHash('sha256').update(machineId).digest().readUInt32BE(0) % net.size;
  for (let i = 0; i < net.size; i++) yield subnetName(net, (start + i) % net.size);
}

/** flannel's lease value for a machine; flanneld adds its backend data when it takes the reservation. */
export function reservationValue(publicIp: string): string {
  return JSON.stringify({ PublicIP: publicIp, PublicIPv6: null, BackendType: 'vxlan' });
}

function publicIpOf(value: string): string | undefined {
  try {
    const v = JSON.parse(value) as { PublicIP?: unknown };
    return typeof v.PublicIP === 'string' ? v.PublicIP : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Writes flannel's network config if absent; if present, checks it says the same. Returns the config in
 * force. A changed pod network on an existing cluster is E_NETWORK_CONFIG_CHANGED (terminal).
 */
export async function ensureNetworkConfig(store: Store, keys: ClusterKeys, want: FlannelConfig, fence?: Fence): Promise<FlannelConfig> {
  const key = `${keys.network}config`;
  for (let attempt = 0; attempt < 5; attempt++) {
    const have = await store.get(key);
    if (have) {
      const current = parseConfig(have.value, key);
      const differs = current.Network !== want.Network || current.SubnetLen !== want.SubnetLen || current.Backend?.Type !== 'vxlan' || current.Backend.VNI !== want.Backend.VNI;
      if (differs) {
        throw new CorekubeError(
          'E_NETWORK_CONFIG_CHANGED',
          `the cluster's pod network is ${current.Network} (/${current.SubnetLen} a machine, ${current.Backend?.Type ?? '?'} VNI ${current.Backend?.VNI ?? '?'}) but the spec says ${want.Network} (/${want.SubnetLen}, vxlan VNI ${want.Backend.VNI})`,
          { hint: `set podCidr=${current.Network}, podSubnetLength=${current.SubnetLen}, vxlanId=${current.Backend?.VNI ?? 1} in the spec: the pod network of a running cluster cannot change` },
        );
      }
      return current;
    }
    try {
      await store.put(key, JSON.stringify(want), { expectModRevision: '0', ...(fence ? { fence } : {}) });
      return want;
    } catch (err) {
      if (!(err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT')) throw err;
      // written by someone else in between: read it and compare
    }
  }
  throw new CorekubeError('E_ETCD_CONFLICT', `${key} keeps changing`, { hint: 'another writer is changing flannel config; stop it', retryable: true });
}

function parseConfig(text: string, key: string): FlannelConfig {
  try {
    const v = JSON.parse(text) as FlannelConfig;
    if (typeof v.Network === 'string' && typeof v.SubnetLen === 'number') return v;
  } catch {
    // reported below
  }
  throw new CorekubeError('E_NETWORK_CONFIG_CHANGED', `${key} holds no valid flannel config`, {
    hint: `fix or delete ${key} by hand (etcdctl): the overlord will not overwrite a config it cannot read`,
  });
}

/**
 * What one allocator knows of the reservations, so that reserving a subnet for each of n machines does not
 * read all the reservations each time (n² bytes, and as much garbage): listed at the first reservation,
 * then kept current by this allocator's own, each subnet claimed here before its transaction (so racing
 * reservations of this allocator do not pick the same one). A reservation made by another writer shows up
 * as a transaction conflict, after which the book is listed again; so does running out of subnets.
 * One book per leader term (the leader is the only allocator; a stale book costs one conflict).
 */
export class SubnetBook {
  /** subnet names taken or claimed; null = list them (and `holders`) at the next reservation */
  taken: Set<string> | null = null;
  /** ids of the machines that hold a subnet (the index): a machine not in it needs no read of its index */
  holders: Set<string> | null = null;
  /** the listing under way, shared by the reservations that need it at the same time */
  private loading: Promise<void> | null = null;

  /** Lists the reservations and holders unless known; concurrent callers share one listing. */
  load(list: () => Promise<readonly [Set<string>, Set<string>]>): Promise<void> {
    if (this.taken && this.holders) return Promise.resolve();
    this.loading ??= list().then(
      ([taken, holders]) => {
        this.taken = taken;
        this.holders = holders;
        this.loading = null;
      },
      (err: unknown) => {
        this.loading = null;
        throw err;
      },
    );
    return this.loading;
  }

  reset(): void {
    this.taken = null;
    this.holders = null;
  }
}

export interface SubnetHolder {
  readonly id: string;
  readonly ip: string;
}

/**
 * Gives the machine its subnet, reserving one if it has none; idempotent (no write when the reservation
 * is already there with the machine's IP). Returns the subnet as a CIDR. Throws E_SUBNET_EXHAUSTED when
 * every subnet of the pod network is held.
 */
export async function reserveSubnet(store: Store, keys: ClusterKeys, config: FlannelConfig, machine: SubnetHolder, fence?: Fence, book?: SubnetBook): Promise<string> {
  const net = subnetSpace(config);
  const indexKey = keys.subnetOf(machine.id);
  const leaseKey = (name: string) => `${keys.network}subnets/${name}`;
  const fenced = fence ? { fence } : {};
  const listed = async (prefix: string) => new Set((await store.list(prefix)).kvs.map((kv) => kv.key.slice(prefix.length)));
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      let listedNow = false;
      if (book && (!book.taken || !book.holders)) {
        await book.load(() => Promise.all([listed(`${keys.network}subnets/`), listed(keys.subnets)]));
        listedNow = true;
      }
      // a machine the book knows holds no subnet needs no read: its index is created below, compared with
      // "absent" (if someone else wrote one meanwhile, the transaction fails and the book is read again)
      const index = book?.holders && !book.holders.has(machine.id) ? null : await store.get(indexKey);
      if (index) {
        // the machine holds this subnet: make sure flannel's reservation says so, with its current IP
        const lease = await store.get(leaseKey(index.value));
        if (lease && publicIpOf(lease.value) === machine.ip) return subnetCidr(index.value);
        await store.putAll(
          [
            { key: leaseKey(index.value), value: reservationValue(machine.ip), expectModRevision: lease?.modRevision ?? '0' },
            { key: indexKey, value: index.value, expectModRevision: index.modRevision },
          ],
          fenced,
        );
        return subnetCidr(index.value);
      }
      const taken = book?.taken ?? (await listed(`${keys.network}subnets/`));
      let free: string | undefined;
      for (const name of candidates(net, machine.id)) {
        if (!taken.has(name)) {
          free = name;
          break;
        }
      }
      if (free === undefined && book && !listedNow) {
        // the book may hold subnets released since it was listed: look again before giving up
        book.reset();
        continue;
      }
      if (free === undefined) {
        throw new CorekubeError('E_SUBNET_EXHAUSTED', `the pod network ${config.Network} has no free /${config.SubnetLen} subnet: all ${net.size} are reserved`, {
          hint: `remove machines gone for good (\`corekube node remove\`, or a lower minion_count: their subnets are released), or create the cluster with a larger podCidr`,
        });
      }
      taken.add(free);
      try {
        await store.putAll(
          [
            { key: indexKey, value: free, expectModRevision: '0' },
            { key: leaseKey(free), value: reservationValue(machine.ip), expectModRevision: '0' },
          ],
          fenced,
        );
      } catch (err) {
        if (book && book.taken === taken) {
          if (err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT') book.reset();
          else taken.delete(free);
        }
        throw err;
      }
      book?.holders?.add(machine.id);
      return subnetCidr(free);
    } catch (err) {
      if (!(err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT')) throw err;
      // another allocator took the subnet or wrote this machine's index first: read again
    }
  }
  throw new CorekubeError('E_ETCD_CONFLICT', `could not reserve a subnet for ${machine.id} after 20 attempts`, {
    hint: 'many allocators are racing; the overlord tries again later',
    retryable: true,
  });
}

/** Every machine's subnet (CIDR) by machine id, from the index: one list request. */
export async function subnetsByMachine(store: Store, keys: ClusterKeys): Promise<Map<string, string>> {
  const listing = await store.list(keys.subnets);
  return new Map(listing.kvs.map((kv) => [kv.key.slice(keys.subnets.length), subnetCidr(kv.value)]));
}
