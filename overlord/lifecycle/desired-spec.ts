import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { KUBERNETES_MINORS } from '../../clusterspec/fields.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import { isReleaseTag, skewProblem, type StackVersions } from '../../contracts/overlord-channel.ts';
import type { Logger } from '../edges/log.ts';
import type { Fence, Store } from '../edges/store.ts';

/**
 * The spec the machines are rendered from, as the stack asks for it now: the overlord's spec (its config, written
 * once at first boot) with the Kubernetes version the stack's `kubernetes_version` says (contracts/overlord-channel.ts,
 * read by lifecycle/stack-members.ts). A new version is checked against the one the cluster runs (upstream's skew
 * policy: skewProblem) — refused with a log line that says why and what to do, or accepted: recorded at
 * `<prefix>desired/versions` (fenced: the leader's), so a restarted or new leader renders the same, and every
 * machine is rendered again (`generation`): the planner restarts what changed, masters one at a time, then the
 * minions drained in turn (planner rules 10 and 11). Only the Kubernetes version changes after creation; the rest
 * of the spec (networks, pod CIDR) is the overlord's config, which Heat never updates.
 */
export class DesiredSpec {
  private spec: ClusterSpec;
  private refused = '';
  /** bumped each time the spec changes: every machine's units are rendered again */
  generation = 0;

  /** called when the spec changed (the term's reconciler looks again) */
  onChange: () => void = () => undefined;

  constructor(
    private readonly base: ClusterSpec,
    private readonly ports: { readonly store: Store; readonly keys: ClusterKeys; readonly log: Logger },
  ) {
    this.spec = base;
  }

  current(): ClusterSpec {
    return this.spec;
  }

  /** The version a leader accepted before (none: the config's). */
  async load(): Promise<void> {
    const kv = await this.ports.store.get(this.key());
    if (!kv) return;
    try {
      const v = JSON.parse(kv.value) as { kubernetes?: unknown };
      if (isReleaseTag(v.kubernetes)) this.set(v.kubernetes);
    } catch {
      this.ports.log.warn({ event: 'desired.malformed', key: this.key() }, `${this.key()} is not JSON: the config's versions stand`);
    }
  }

  /** What the stack asks for now; accepted (and true) when it changes the spec and the skew policy allows it. */
  async offer(versions: StackVersions, fence?: Fence): Promise<boolean> {
    const from = this.spec.versions.kubernetes;
    const to = versions.kubernetes;
    if (to === from) {
      this.refused = '';
      return false;
    }
    const problem = skewProblem(from, to, KUBERNETES_MINORS.concat());
    if (problem) {
      if (this.refused !== to) this.ports.log.error({ event: 'upgrade.refused', from, to, reason: problem, hint: `set kubernetes_version back to ${from} (openstack stack update --existing --parameter kubernetes_version=${from})` }, `the stack asks for Kubernetes ${to}, refused: ${problem}; the cluster stays at ${from}`);
      this.refused = to;
      return false;
    }
    await this.ports.store.put(this.key(), JSON.stringify({ kubernetes: to }), fence ? { fence } : {});
    this.set(to);
    this.ports.log.info({ event: 'upgrade.accepted', from, to }, `the stack asks for Kubernetes ${to} (from ${from}): rolling it out — masters one at a time, then each minion drained, changed, Ready, uncordoned`);
    this.onChange();
    return true;
  }

  private set(kubernetes: string): void {
    if (kubernetes === this.spec.versions.kubernetes) return;
    this.spec = Object.freeze({ ...this.base, versions: Object.freeze({ ...this.base.versions, kubernetes }) });
    this.generation++;
  }

  private key(): string {
    return `${this.ports.keys.prefix}desired/versions`;
  }
}
