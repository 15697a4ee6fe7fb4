import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { buildUnitContext, hashFiles, PKI_PATHS, renderUnits } from '../../units/index.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import type { ClusterView } from '../../contracts/step.ts';
import type { RenderedUnits } from '../../contracts/step.ts';
import type { RemoteFile } from '../../contracts/step.ts';

/**
 * The overlord's wiring of units/: what `unitsFor` renders for one machine of a cluster spec. A master's
 * units name every master (ClusterView.masterIps: its etcd member joins one initial cluster); a minion's name the
 * deployed masters (the API it joins — the planner holds minions until one exists), except with the node-local
 * API proxy (minionMasterIps). TLS files sit at
 * PKI_PATHS; the PKI room delivers them. A throw (e.g. no deployed master yet) fails only that machine,
 * and only once the planner's gates let it run.
 *
 * `machineFiles` adds files of the machine's own to its write-units step — its certificates and keys
 * (overlord/trust/machine-pki.ts MachinePkiFiles.filesFor). They are part of the hash, so re-issued certificates
 * redeploy the machine like changed units do.
 */
export interface UnitsWiring {
  readonly machineFiles?: (record: MachineRecord, view: ClusterView) => readonly RemoteFile[];
  /** when the earliest of those certificates expires (ISO 8601; MachinePkiFiles.expiresOf), recorded in the ledger */
  readonly certificatesExpire?: (record: MachineRecord) => string | undefined;
  /**
   * true: a machine that runs a kubelet is deployed once its Node is Ready (the `node-ready` step, which needs
   * the overlord's Kubernetes side); false (default): the units alone — an overlord without the cluster's PKI
   * cannot reach the API.
   */
  readonly nodeReady?: boolean;
}

export function unitsForSpec(specOf: ClusterSpec | (() => ClusterSpec), wiring: UnitsWiring = {}): (record: MachineRecord, view: ClusterView) => RenderedUnits {
  return (record, view) => {
    // the spec as the stack asks for it now (overlord/lifecycle/desired-spec.ts), or a fixed one
    const spec = typeof specOf === 'function' ? specOf() : specOf;
    const masterIps = record.role === 'master' ? view.masterIps : minionMasterIps(spec, view);
    const units = renderUnits(
      buildUnitContext(spec, { id: record.id, role: record.role, ip: record.ip, hostname: record.hostname }, { masterIps }, PKI_PATHS),
    );
    const { node, ...withoutNode } = units;
    const rendered = wiring.nodeReady && node !== undefined ? units : withoutNode;
    if (!wiring.machineFiles) return rendered;
    const files = [...rendered.files, ...wiring.machineFiles(record, view)];
    const expire = wiring.certificatesExpire?.(record);
    return { ...rendered, files, hash: hashFiles(files), ...(expire === undefined ? {} : { certificatesExpire: expire }) };
  };
}

/**
 * The masters a minion's units name. Its node-local API proxy (apiLoadBalancer `node-local`) names every master the
 * masters' own units name (ClusterView.masterIps: also a deployed master that stopped announcing — rebooting, powered
 * off — which stays an etcd member until removed): the proxy leaves a master it cannot dial out by itself, and a
 * master lost or back must not change every minion's units (each change drains the minion). Otherwise the deployed
 * masters, of which `none` names the first.
 */
export function minionMasterIps(spec: Pick<ClusterSpec, 'apiLoadBalancer'>, view: ClusterView): readonly string[] {
  return spec.apiLoadBalancer === 'node-local' ? view.masterIps : view.deployedMasters.map((m) => m.ip);
}
