import type { MachineRecord } from './machine-record.ts';

/**
 * What units/ renders for one machine, and the steps that deploy it: a step is the small typed value the
 * planner emits and the executor runs. The executor knows nothing of roles or Kubernetes; the planner knows
 * nothing of SSH.
 */
export interface RemoteFile {
  /** absolute path on the machine */
  readonly path: string;
  readonly content: string;
  /** octal string, e.g. "0644"; secrets are "0600" */
  readonly mode: string;
}

/** What a start step waits for: `exited` = a oneshot finished successfully, `active` = a service running. */
export type Until = 'exited' | 'active';

/** Every file one machine gets and the units it starts (units/render.ts renderUnits). */
export interface RenderedUnits {
  readonly files: readonly RemoteFile[];
  /** start in this order, waiting for each: the download must have exited successfully, services be active */
  readonly start: readonly { readonly unit: string; readonly until: Until }[];
  /** the Node the machine's kubelet registers as, when it runs one: its last step waits for it to be Ready */
  readonly node?: string;
  /**
   * the etcd member the machine runs, when it is a master: its first start waits for the `etcd-member` step (the
   * overlord adds it to a running cluster, or writes the initial cluster). Not part of `hash`: `initialCluster`
   * (every master's address) matters only before the member first starts.
   */
  readonly etcdMember?: EtcdMemberSpec;
  /** sha256 (hex) over every file's path, mode and content, in path order: a change redeploys the machine */
  readonly hash: string;
  /** the earliest expiry (ISO 8601) of the machine's own certificates among the files; absent when they hold none */
  readonly certificatesExpire?: string;
}

/** A master's etcd member: its name and peer URL, the initial cluster of masters that form it together, its env file. */
export interface EtcdMemberSpec {
  /** the unit that runs it: the step comes right before its start (a member added long before it runs weakens the quorum) */
  readonly unit: string;
  readonly name: string;
  readonly peerUrl: string;
  readonly initialCluster: string;
  /** where its bootstrap values go (contracts/etcd-members.ts ETCD_BOOTSTRAP_ENV) */
  readonly bootstrapEnv: string;
  /** its data directory: once it holds a member, the bootstrap values no longer matter */
  readonly dataDir: string;
}

/** What a machine's units are rendered against beyond the machine itself. */
export interface ClusterView {
  /** every announced master with a valid record, by id */
  readonly masters: readonly MachineRecord[];
  /**
   * The address of every master of the cluster, sorted: the announced ones, and the deployed ones that stopped
   * announcing (powered off, partitioned — still an etcd member until removed). A master's etcd initial cluster
   * and its API server's etcd list: a master that goes away changes no other master.
   */
  readonly masterIps: readonly string[];
  /** the announced masters that have been deployed (ledger `deployedAt`), by id: what minions talk to */
  readonly deployedMasters: readonly MachineRecord[];
}

export type Step =
  | { readonly kind: 'write-units'; readonly id: 'write-units'; readonly files: readonly RemoteFile[]; readonly hash: string }
  | { readonly kind: 'daemon-reload'; readonly id: 'daemon-reload' }
  /**
   * Start a unit and wait: `exited` = a oneshot that must finish successfully (the download);
   * `active` = a service that must be running. A unit that reaches `failed` fails the step at once.
   * `inputs`: a hash of the files the unit reads (overlord/deploy/unit-inputs.ts), recorded in the ledger once
   * the unit runs on them; `restart`: it runs on older inputs — restart it, and wait for a new invocation;
   * `replaces`: the invocation a stopped overlord recorded before asking for this restart (a newer one = done).
   */
  | { readonly kind: 'start'; readonly id: `start:${string}`; readonly unit: string; readonly until: Until; readonly inputs: string; readonly restart?: boolean; readonly replaces?: string }
  /**
   * The machine's kubelet registered its Node, which has its pod subnet as podCIDR and is Ready (run through the
   * Kubernetes API, not SSH: overlord/kubernetes/node-ready.ts). The last step of a machine that runs a kubelet.
   */
  | { readonly kind: 'node-ready'; readonly id: 'node-ready'; readonly node: string }
  /**
   * A change of a minion that ran before (new release, flags or certificates): its Node cordoned and drained
   * through the Eviction API before anything restarts (the first step), made schedulable again once Ready (the
   * last) — overlord/kubernetes/node-ready.ts, overlord/kubernetes/drain.ts.
   */
  | { readonly kind: 'drain'; readonly id: 'drain'; readonly node: string }
  /**
   * Before a master's etcd first starts: the initial cluster written to its bootstrap file (masters that form the
   * cluster together), or — once a master runs — the member added to the running cluster as a learner (`member add
   * --learner`, waiting while etcd lacks a quorum or another learner joins) and the member list written with state
   * `existing`. Nothing once its data
   * directory holds a member (overlord/edges/etcd-members.ts).
   */
  | { readonly kind: 'etcd-member'; readonly id: 'etcd-member'; readonly member: EtcdMemberSpec }
  /** After a master's etcd started: a member that joined as a learner promoted to a voting member (nothing for a voter). */
  | { readonly kind: 'etcd-promote'; readonly id: 'etcd-promote'; readonly member: EtcdMemberSpec }
  | { readonly kind: 'uncordon'; readonly id: 'uncordon'; readonly node: string };

export type StepId = Step['id'];
