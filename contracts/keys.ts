/**
 * The etcd key layout: the one contract between nodes (which announce themselves), the overlord (which
 * deploys them) and `corekube status`. Everything of a cluster lives under `/corekube/<cluster>/`;
 * flannel's own keys live under its own prefix (`/coreos.com/network/` by default, per cluster here).
 *
 *   <prefix>/join/<id>          join request of a node not admitted yet (JSON, MachineRecord), written with the
 *                               shared join token under the node's lease; the overlord admits it (overlord/discovery/admission.ts)
 *   <prefix>/machines/<id>      machine record, written by the admitted node as its own etcd user under a lease it
 *                               keeps alive (JSON, MachineRecord)
 *   <prefix>/ledger/<id>        deploy state of a machine, written only by the leading overlord (JSON, LedgerEntry)
 *   <prefix>/hostkeys/<id>      SSH host key pinned for the machine: at admission, or accepted on first use
 *   <prefix>/admitted/<id>      the identity a machine was admitted with (JSON: ip, host key; overlord/discovery/identity.ts),
 *                               written only by the leading overlord: it deploys a machine only there, with that key
 *   <prefix>/leader/election/overlord/<lease>
 *                               leader election (etcd3 Election, overlord/availability/leader.ts): one key a running
 *                               overlord, under its lease, value = its id; the oldest (lowest create
 *                               revision) leads; every ledger write is fenced on the leader's key
 *   <prefix>/ssh/overlord.pub   the overlord's SSH public key (nodes read it)
 *   <prefix>/overlord/state     the overlord's state (SSH key, PKI) for standby overlords, ENCRYPTED with a key
 *                               derived from the overlord secret (overlord/trust/shared-state.ts); only root writes it,
 *                               discovery's `overlord` user may read it and nothing else
 *   <prefix>/network/config     flannel's network config (flanneld --etcd-prefix=<prefix>/network)
 *   <prefix>/network/subnets/…  flannel's subnet leases; the overlord writes one reservation (no TTL) a machine
 *   <prefix>/subnets/<id>       which subnet a machine holds: the allocation index, written with its reservation
 *   <prefix>/removals/<id>      a machine to remove from the cluster and how far its removal went (JSON, contracts/removal.ts):
 *                               asked by `corekube node remove` or by the overlord when the stack's count drops; carried
 *                               out and deleted by the leading overlord (overlord/lifecycle/removals.ts)
 *   <prefix>/removed/<id>       a removed machine's tombstone: its id is never admitted or deployed again
 *   <prefix>/pki/rotation       the rotation of a cluster CA (JSON, contracts/ca-rotation.ts): the phase asked for by
 *                               `corekube pki rotate-ca` (as root), and the phase the leading overlord's authority is in
 *                               with how far its rollout went (written by the leader, overlord/trust/ca-rotation.ts)
 */
export const SCHEMA_VERSION = 1;

export interface ClusterKeys {
  readonly prefix: string;
  readonly machines: string;
  /** join requests: `<prefix>join/<id>` */
  readonly join: string;
  readonly ledger: string;
  readonly hostkeys: string;
  /** admitted identities: `<prefix>admitted/<id>` */
  readonly admitted: string;
  readonly leader: string;
  /** the election's candidate keys (etcd3 Election `overlord` under `<prefix>leader/`) */
  readonly leaderCandidates: string;
  readonly overlordSshKey: string;
  /** the sealed overlord state for standbys (overlord/trust/shared-state.ts) */
  readonly overlordState: string;
  readonly network: string;
  readonly subnets: string;
  readonly removals: string;
  readonly removed: string;
  /** the CA rotation asked for and how far it went (contracts/ca-rotation.ts) */
  readonly caRotation: string;
  machine(id: string): string;
  joinOf(id: string): string;
  ledgerOf(id: string): string;
  hostkeyOf(id: string): string;
  admittedOf(id: string): string;
  subnetOf(id: string): string;
  removalOf(id: string): string;
  removedOf(id: string): string;
}

export function clusterKeys(cluster: string): ClusterKeys {
  const prefix = `/corekube/${cluster}/`;
  return Object.freeze({
    prefix,
    machines: `${prefix}machines/`,
    join: `${prefix}join/`,
    ledger: `${prefix}ledger/`,
    hostkeys: `${prefix}hostkeys/`,
    admitted: `${prefix}admitted/`,
    leader: `${prefix}leader`,
    leaderCandidates: `${prefix}leader/election/overlord/`,
    overlordSshKey: `${prefix}ssh/overlord.pub`,
    overlordState: `${prefix}overlord/state`,
    network: `${prefix}network/`,
    subnets: `${prefix}subnets/`,
    removals: `${prefix}removals/`,
    removed: `${prefix}removed/`,
    caRotation: `${prefix}pki/rotation`,
    machine: (id: string) => `${prefix}machines/${id}`,
    joinOf: (id: string) => `${prefix}join/${id}`,
    ledgerOf: (id: string) => `${prefix}ledger/${id}`,
    hostkeyOf: (id: string) => `${prefix}hostkeys/${id}`,
    admittedOf: (id: string) => `${prefix}admitted/${id}`,
    subnetOf: (id: string) => `${prefix}subnets/${id}`,
    removalOf: (id: string) => `${prefix}removals/${id}`,
    removedOf: (id: string) => `${prefix}removed/${id}`,
  });
}
