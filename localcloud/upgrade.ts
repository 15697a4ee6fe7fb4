/**
 * A rolling Kubernetes upgrade of a running local-cloud cluster, watched from outside: a workload behind a
 * PodDisruptionBudget (a Deployment of two replicas, minAvailable 1, a Service), then `openstack stack update
 * --existing --parameter kubernetes_version=<to>` through the real Heat; the overlord follows the stack's channel
 * and rolls the release out (masters one at a time, then each minion drained, changed, Ready, uncordoned). Once
 * the first minion is being drained, the overlord's container is killed (docker kill: SIGKILL) and started again
 * as its server's systemd would; the rollout must finish with nothing asked twice. What is measured:
 *
 * - the workload through its Service, every second, from every minion's host network (kube-proxy's rules): in
 *   every second at least one minion must get its answer (workloadAvailableThroughout) — a minion whose own
 *   flanneld and kube-proxy are being restarted is no client to judge the workload by; what each minion saw is
 *   reported (probeFailuresByNode)
 * - the API (/readyz) every second: how long it did not answer (one master: its API server restarts)
 * - every machine at the new version (kubelets, API server), Nodes schedulable again
 * - each unit restart asked once: sudo's journal on each machine lists every `systemctl restart` the overlord
 *   ran since the update; a unit restarted twice (the killed overlord's restart asked again) fails resumedAfterKill
 */
import { clusterKeys } from '../contracts/keys.ts';
import { parseLedgerEntry, type LedgerEntry } from '../contracts/ledger-entry.ts';
import { toYaml } from '../core/yaml.ts';
import type { LocalCloud } from './cloud.ts';
import { httpdContainer, type Kubectl } from './cluster-checks.ts';

export interface Upgrade {
  readonly from: string;
  readonly to: string;
  /** machines that took the new release */
  readonly machines: number;
  /** units restarted for it, over every machine (the ledger's `applied` that changed) */
  readonly restartedUnits: number;
  readonly workloadAvailableThroughout: boolean;
  readonly resumedAfterKill: boolean;
  readonly totalMs: number;
  /** per machine: from its change's first step to its last (the ledger) */
  readonly perMachineMs: readonly { readonly name: string; readonly ms: number }[];
  readonly probes: number;
  /** seconds in which no minion got an answer from the workload */
  readonly failedProbes: number;
  /** per minion, the seconds in which it got no answer (its own network restarting counts here) */
  readonly probeFailuresByNode: Readonly<Record<string, number>>;
  /** ms the API did not answer /readyz, summed over the rollout */
  readonly apiUnavailableMs: number;
  /** `systemctl restart` the overlord ran more than once for a unit of a machine (machine/unit), if any */
  readonly restartedTwice: readonly string[];
}

const APP = Object.freeze({ namespace: 'default', name: 'corekube-upgrade', port: 8080 });

/** PURE: the workload the rollout must keep answering: two replicas, a budget that allows one down, a Service. */
export function upgradeWorkloadManifest(image: string): string {
  const labels = { app: APP.name };
  const objects = [
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: APP.name, namespace: APP.namespace, labels },
      spec: {
        replicas: 2,
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            terminationGracePeriodSeconds: 10,
            topologySpreadConstraints: [{ maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway', labelSelector: { matchLabels: labels } }],
            // an evicted pod keeps answering for a few seconds while every kube-proxy drops it from the Service (the
            // usual preStop of a workload that must not lose a request when its pods move)
            containers: [{ ...httpdContainer(image, APP.port, 1), lifecycle: { preStop: { exec: { command: ['sleep', '5'] } } } }],
          },
        },
      },
    },
    { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: { name: APP.name, namespace: APP.namespace }, spec: { minAvailable: 1, selector: { matchLabels: labels } } },
    { apiVersion: 'v1', kind: 'Service', metadata: { name: APP.name, namespace: APP.namespace, labels }, spec: { selector: labels, ports: [{ name: 'http', port: 80, targetPort: APP.port }] } },
  ];
  return objects.map((o) => toYaml(o)).join('---\n');
}

export async function rollUpgrade(cloud: LocalCloud, kubectl: Kubectl, options: { to: string; timeoutMs?: number; signal?: AbortSignal; say?: (line: string) => void }): Promise<Upgrade> {
  const say = options.say ?? (() => undefined);
  const { to } = options;
  const from = cloud.spec.versions.kubernetes;
  const keys = clusterKeys(cloud.spec.name);
  const store = await cloud.store();
  const ledger = async () => {
    const out = new Map<string, LedgerEntry>();
    for (const kv of (await store.list(keys.ledger)).kvs) {
      const e = parseLedgerEntry(kv.value);
      if (e) out.set(e.id, e);
    }
    return out;
  };

  // the workload behind its budget, answering through its Service
  const applied = await kubectl.run(['apply', '-f', '-'], { stdin: upgradeWorkloadManifest(cloud.workloadImage) });
  if (applied.code !== 0) throw new Error(`kubectl apply of the upgrade workload failed: ${applied.stderr.trim()}`);
  const rolled = await kubectl.run(['-n', APP.namespace, 'rollout', 'status', `deployment/${APP.name}`, '--timeout=180s'], { timeoutMs: 200_000 });
  if (rolled.code !== 0) throw new Error(`the upgrade workload did not become available: ${rolled.stderr.trim()}`);
  const clusterIp = (await kubectl.run(['-n', APP.namespace, 'get', 'service', APP.name, '-o', 'jsonpath={.spec.clusterIP}'])).stdout.trim();
  const before = await ledger();
  const minions = [...before.values()].filter((e) => e.role === 'minion').map((e) => e.hostname).sort();
  if (minions.length === 0) throw new Error('the upgrade needs a minion');
  // the Service is new: every kube-proxy must have its rules before the measure starts (curl: 7, refused, until then)
  const ask = (m: string) => cloud.exec(m, ['curl', '--silent', '--fail', '--max-time', '5', `http://${clusterIp}/`]).catch(() => ({ code: 1 }));
  const warm = Date.now() + 60_000;
  while (!(await Promise.all(minions.map(ask))).every((a) => a.code === 0)) {
    if (Date.now() > warm) throw new Error(`the upgrade workload's Service ${clusterIp} does not answer on every minion within 60 s`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  say(`[upgrade]   Deployment ${APP.name} (2 replicas, PodDisruptionBudget minAvailable 1) answers at ${clusterIp}; asked every second from ${minions.join(' and ')}, the API's /readyz too`);

  // probes, every second, until the rollout is over
  let probing = true;
  let probes = 0;
  let failedProbes = 0;
  const probeFailuresByNode: Record<string, number> = Object.fromEntries(minions.map((m) => [m, 0]));
  /** when into the rollout no minion got an answer, and how each failed */
  const diagnoses: Promise<string>[] = [];
  const diagnose = async (): Promise<string> => {
    const [entries, slices] = await Promise.all([
      ledger(),
      kubectl.run(['-n', APP.namespace, 'get', 'endpointslices', '-l', `kubernetes.io/service-name=${APP.name}`, '-o', 'json'], { timeoutMs: 5000 }),
    ]);
    const inFlight = [...entries.values()].flatMap((e) => Object.entries(e.steps).filter(([, st]) => st.state === 'in-flight').map(([id]) => `${e.hostname} ${id}`));
    const endpoints = (JSON.parse(slices.stdout || '{"items":[]}') as { items: { endpoints?: { addresses: string[]; nodeName?: string; conditions?: { ready?: boolean; terminating?: boolean } }[] }[] }).items
      .flatMap((i) => i.endpoints ?? [])
      .map((e) => `${e.addresses[0]}@${e.nodeName ?? '?'}${e.conditions?.ready ? '' : ' not-ready'}${e.conditions?.terminating ? ' terminating' : ''}`);
    return `in flight: ${inFlight.join(', ') || 'nothing'}; endpoints: ${endpoints.join(', ') || 'none'}`;
  };
  let t0 = Date.now();
  let apiDownSince: number | undefined;
  let apiUnavailableMs = 0;
  const probeLoop = (async () => {
    while (probing) {
      const t = Date.now();
      const [api, ...answers] = await Promise.all([
        kubectl.run(['get', '--raw', '/readyz'], { timeoutMs: 3000 }).catch(() => ({ code: 1 })),
        // 5 s: this host's two cores are busy with the rollout itself (downloads, restarts); an answer that slow is late, not lost
        ...minions.map(ask),
      ]);
      probes++;
      answers.forEach((a, i) => {
        if (a.code !== 0) probeFailuresByNode[minions[i]!]! += 1;
      });
      if (answers.every((a) => a.code !== 0)) {
        failedProbes++;
        // curl's exit code says how: 7 refused, 28 timed out, 22 an HTTP error
        const at = `${((t - t0) / 1000).toFixed(1)} s (curl ${answers.map((a, i) => `${minions[i]} ${a.code}`).join(', ')})`;
        // what explains it, read at once: the steps in flight on every machine, and the Service's endpoints as the
        // API has them (ready or not, and where) — the one run in four that lost a second left no clue
        diagnoses.push(diagnose().then((d) => `${at} — ${d}`, () => at));
      }
      if (api.code !== 0) apiDownSince ??= t;
      else if (apiDownSince !== undefined) {
        apiUnavailableMs += Date.now() - apiDownSince;
        apiDownSince = undefined;
      }
      await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - t))));
    }
  })();

  t0 = Date.now();
  const since = Math.floor(t0 / 1000);
  say(`[upgrade]   stack update (PATCH) kubernetes_version ${from} -> ${to}`);
  await cloud.updateStack({ kubernetes_version: to }, options.signal ? { signal: options.signal } : {});
  const deadline = t0 + (options.timeoutMs ?? 900_000);

  // kill -9 of the overlord once a minion is being drained, then started again as systemd would (RestartSec=10)
  let killedAt: number | undefined;
  while (Date.now() < deadline) {
    options.signal?.throwIfAborted();
    const drained = [...(await ledger()).values()].find((e) => e.plan.includes('drain') && e.unitsHash !== before.get(e.id)?.unitsHash && (e.steps.drain?.state === 'in-flight' || e.steps.drain?.state === 'done'));
    if (drained) {
      await cloud.overlord?.kill();
      killedAt = Date.now();
      say(`[upgrade]   kill -9 of the overlord's container while ${drained.hostname} is being drained (${((killedAt - t0) / 1000).toFixed(1)} s into the rollout); started again in 10 s, as overlord.service's Restart=always would`);
      await new Promise((r) => setTimeout(r, 10_000));
      await cloud.restartOverlord();
      break;
    }
    await new Promise((r) => setTimeout(r, 500));
  }

  // done: every machine deployed with new units, every kubelet and the API server at `to`, no Node cordoned
  let after = await ledger();
  let done = false;
  while (Date.now() < deadline) {
    options.signal?.throwIfAborted();
    after = await ledger();
    const changed = [...after.values()].every((e) => e.state === 'deployed' && e.unitsHash !== before.get(e.id)?.unitsHash);
    if (changed) {
      const nodes = JSON.parse((await kubectl.run(['get', 'nodes', '-o', 'json'])).stdout || '{"items":[]}') as { items: { status?: { nodeInfo?: { kubeletVersion?: string } }; spec?: { unschedulable?: boolean } }[] };
      const server = JSON.parse((await kubectl.run(['version', '-o', 'json'])).stdout || '{}') as { serverVersion?: { gitVersion?: string } };
      if (nodes.items.length > 0 && nodes.items.every((n) => n.status?.nodeInfo?.kubeletVersion === to && n.spec?.unschedulable !== true) && server.serverVersion?.gitVersion === to) {
        done = true;
        break;
      }
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
  const totalMs = Date.now() - t0;
  probing = false;
  await probeLoop;
  if (apiDownSince !== undefined) apiUnavailableMs += Date.now() - apiDownSince;

  let restartedUnits = 0;
  const perMachineMs: { name: string; ms: number }[] = [];
  for (const e of after.values()) {
    const was = before.get(e.id);
    restartedUnits += Object.entries(e.applied).filter(([unit, inputs]) => was?.applied[unit] !== undefined && was.applied[unit] !== inputs).length;
    const times = Object.values(e.steps).flatMap((s) => [s.startedAt, s.finishedAt]).filter((x): x is string => x !== null).map(Date.parse).filter((x) => x >= t0);
    if (times.length > 0) perMachineMs.push({ name: e.hostname, ms: Math.max(...times) - Math.min(...times) });
  }
  const restartedTwice = await restartsAskedTwice(cloud, [...after.values()].map((e) => e.hostname), since);
  const machines = [...after.values()].filter((e) => e.state === 'deployed' && e.unitsHash !== before.get(e.id)?.unitsHash).length;
  const resumedAfterKill = done && killedAt !== undefined && restartedTwice.length === 0;
  const upgrade: Upgrade = { from, to, machines, restartedUnits, workloadAvailableThroughout: probes > 0 && failedProbes === 0, resumedAfterKill, totalMs, perMachineMs: perMachineMs.sort((a, b) => a.name.localeCompare(b.name)), probes, failedProbes, probeFailuresByNode, apiUnavailableMs, restartedTwice };
  say(done
    ? `[upgrade]   ${machines} machines at ${to} in ${(totalMs / 1000).toFixed(1)} s (${perMachineMs.map((m) => `${m.name} ${(m.ms / 1000).toFixed(1)} s`).join(', ')}); ${restartedUnits} units restarted${restartedTwice.length ? `, restarted twice: ${restartedTwice.join(', ')}` : ', none twice'}`
    : `[upgrade]   the rollout did not finish within ${Math.round((deadline - t0) / 1000)} s`);
  const unansweredAt = await Promise.all(diagnoses);
  if (unansweredAt.length > 0) say(`[upgrade]   no minion got the workload's answer at ${unansweredAt.join('; ')} into the rollout`);
  say(`[upgrade]   the workload answered through its Service in ${probes - failedProbes}/${probes} seconds (unanswered per minion: ${Object.entries(probeFailuresByNode).map(([m, n]) => `${m} ${n}`).join(', ')}); the API did not answer for ${(apiUnavailableMs / 1000).toFixed(1)} s in all${[...before.values()].filter((e) => e.role === 'master').length === 1 ? ' (one master: its API server restarts)' : ' (the masters behind the load balancer changed one at a time)'}`);
  return upgrade;
}

/** machine/unit pairs the overlord asked to restart more than once since `since` (epoch s): sudo's journal on each machine. */
async function restartsAskedTwice(cloud: LocalCloud, machines: readonly string[], since: number): Promise<string[]> {
  const twice: string[] = [];
  for (const name of machines) {
    const r = await cloud.exec(name, ['journalctl', '--no-pager', '-o', 'cat', '_COMM=sudo', '--since', `@${since}`]).catch(() => ({ stdout: '' }));
    const counts = new Map<string, number>();
    for (const m of r.stdout.matchAll(/COMMAND=\S*systemctl restart (\S+)/g)) counts.set(m[1]!, (counts.get(m[1]!) ?? 0) + 1);
    for (const [unit, n] of counts) if (n > 1) twice.push(`${name}/${unit}`);
  }
  return twice;
}
