/**
 * A master lost behind the API load balancer, and whether the cluster noticed: the master the load balancer
 * used last is powered off (a power cut, as a lost server), then for a while `kubectl` asks the API through the
 * load balancer's VIP and the Nodes are read, every few seconds. The API survived the loss when every request
 * answered and every minion's Node stayed Ready throughout. What `corekube demo --fail-master` and the e2e test
 * run; the figures say how long the load balancer took to take the master out of its pool.
 */
import type { LocalCloud } from './cloud.ts';
import { nodeRows, type Kubectl } from './cluster-checks.ts';

export interface MasterLoss {
  /** the VIP every kubeconfig names */
  readonly address: string;
  readonly lost: { readonly name: string; readonly ip: string };
  /** requests through the VIP after the loss, and how many failed */
  readonly requests: number;
  readonly failedRequests: number;
  /** the slowest request through the VIP after the loss (ms) */
  readonly slowestMs: number;
  /** ms from the power cut until the load balancer had the master out of its pool */
  readonly markedDownMs: number | undefined;
  /** every minion's Node Ready at every sample */
  readonly nodesAlwaysReady: boolean;
  readonly notReadySeen: readonly string[];
  readonly survivedMasterLoss: boolean;
}

export async function loseMaster(cloud: LocalCloud, kubectl: Kubectl, options: { windowMs?: number; signal?: AbortSignal; say?: (line: string) => void } = {}): Promise<MasterLoss> {
  const say = options.say ?? (() => undefined);
  const lb = cloud.loadBalancer;
  if (!lb) throw new Error('the cloud has no API load balancer: create it with 3 or 5 masters');
  const address = lb.loadBalancers[0]?.vip ?? '';
  // one request through the VIP, so the load balancer has a last member
  const first = await kubectl.run(['get', '--raw', '/readyz'], { timeoutMs: 15_000 });
  if (first.code !== 0) throw new Error(`the API does not answer through ${address}: ${first.stderr.trim()}`);
  const last = await lb.lastUsedMember();
  if (!last) throw new Error('the load balancer reports no session to any master');
  const lost = await cloud.stopMachine(last.address, 'SIGKILL');
  const cutAt = Date.now();
  say(`[cloud]     master loss: ${lost.name} (${last.address}), the master the load balancer used last, powered off (a power cut)`);
  let requests = 0;
  let failedRequests = 0;
  let slowestMs = 0;
  let markedDownMs: number | undefined;
  const notReady = new Set<string>();
  const deadline = cutAt + (options.windowMs ?? 60_000);
  while (Date.now() < deadline) {
    options.signal?.throwIfAborted();
    const t = Date.now();
    const r = await kubectl.run(['get', 'nodes', '-o', 'json', '--request-timeout=10s'], { timeoutMs: 15_000 });
    const ms = Date.now() - t;
    requests++;
    slowestMs = Math.max(slowestMs, ms);
    if (r.code !== 0) {
      failedRequests++;
      say(`[kubectl]   +${((t - cutAt) / 1000).toFixed(1)} s: FAILED through ${address} (${r.stderr.trim().split('\n')[0]})`);
    } else {
      const nodes = (JSON.parse(r.stdout) as { items: { metadata: { name: string }; status: { conditions?: { type: string; status: string }[] } }[] }).items;
      const down = nodes.filter((n) => !n.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')).map((n) => n.metadata.name);
      for (const n of down) notReady.add(n);
      if (down.length > 0) say(`[kubectl]   +${((t - cutAt) / 1000).toFixed(1)} s: Nodes not Ready: ${down.join(', ')}`);
    }
    if (markedDownMs === undefined && (await lb.stats()).some((s) => s.address === last.address && s.status.startsWith('DOWN'))) {
      markedDownMs = Date.now() - cutAt;
      say(`[cloud]     the load balancer took ${last.address} out of its pool ${(markedDownMs / 1000).toFixed(1)} s after the power cut (health monitor: /readyz)`);
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
  // and at the end, as a person would check
  const nodes = await nodeRows(kubectl).catch(() => []);
  for (const n of nodes.filter((x) => !x.ready)) notReady.add(n.name);
  const nodesAlwaysReady = nodes.length > 0 && notReady.size === 0;
  const survivedMasterLoss = failedRequests === 0 && nodesAlwaysReady;
  say(`[kubectl]   ${requests - failedRequests}/${requests} requests through ${address} answered in the ${((options.windowMs ?? 60_000) / 1000).toFixed(0)} s after the loss (slowest ${(slowestMs / 1000).toFixed(1)} s); Nodes ${nodesAlwaysReady ? 'Ready throughout' : `not Ready at some point: ${[...notReady].join(', ')}`}`);
  return { address, lost: { name: lost.name, ip: last.address }, requests, failedRequests, slowestMs, markedDownMs, nodesAlwaysReady, notReadySeen: [...notReady], survivedMasterLoss };
}
