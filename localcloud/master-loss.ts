/**
 * A master lost behind the API load balancer, and whether the cluster noticed: the master the load balancer
 * used last is powered off (a power cut, as a lost server), then for a while `kubectl` asks the API through the
 * load balancer's VIP and the Nodes are read, every few seconds. The API survived the loss when every request
 * answered and every minion's Node stayed Ready throughout. What `corekube demo --fail-master` and the e2e test
 * run; the figures say how long the load balancer took to take the master out of its pool.
 */
import { parseIpv4 } from '../clusterspec/cidr.ts';
import { PKI_PATHS, PORTS } from '../units/index.ts';
import type { LocalCloud } from './cloud.ts';
import { nodeRows, type Kubectl } from './cluster-checks.ts';

export interface MasterLoss {
  /** the VIP every kubeconfig names (node-local: every minion's proxy) */
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

/**
 * A master lost behind the minions' node-local API proxies (apiLoadBalancer node-local): the last deployed master
 * is powered off (the admin's kubeconfig names the first), then for a while every minion asks the API through its
 * own proxy — `curl https://127.0.0.1:6443/readyz` with the cluster CA (the API server's certificate for 127.0.0.1;
 * anonymous requests are allowed on the health endpoints) — and the Nodes are read through the first master,
 * every few seconds. The API survived the loss when every minion's request answered `ok` and every Node stayed
 * Ready throughout. `markedDownMs`: when the first minion's proxy logged the master inactive (its dial failed).
 */
export async function loseMasterBehindNodeProxies(cloud: LocalCloud, kubectl: Kubectl, options: { windowMs?: number; signal?: AbortSignal; say?: (line: string) => void } = {}): Promise<MasterLoss> {
  const say = options.say ?? (() => undefined);
  const masters = (await cloud.status()).machines.filter((m) => m.role === 'master' && m.state === 'deployed' && m.ip).map((m) => m.ip!).sort((a, b) => parseIpv4(a)! - parseIpv4(b)!);
  if (masters.length < 2) throw new Error(`losing a master needs two or more deployed masters (${masters.length} deployed)`);
  const minions = (await nodeRows(kubectl)).map((n) => n.name);
  if (minions.length === 0) throw new Error('no minion Node to ask the API from');
  const address = `127.0.0.1:${PORTS.apiServer} on every minion (its node-local proxy)`;
  const ask = (minion: string) => cloud.exec(minion, ['curl', '--silent', '--show-error', '--max-time', '10', '--cacert', PKI_PATHS.ca, `https://127.0.0.1:${PORTS.apiServer}/readyz`]);
  for (const m of minions) {
    const r = await ask(m);
    if (r.code !== 0 || r.stdout.trim() !== 'ok') throw new Error(`the API does not answer through ${m}'s proxy: ${r.stderr.trim() || r.stdout.trim()}`);
  }
  const victim = masters[masters.length - 1]!;
  const lost = await cloud.stopMachine(victim, 'SIGKILL');
  const cutAt = Date.now();
  say(`[cloud]     master loss: ${lost.name} (${victim}) powered off (a power cut); every minion asks the API through its own proxy`);
  let requests = 0;
  let failedRequests = 0;
  let slowestMs = 0;
  const notReady = new Set<string>();
  const deadline = cutAt + (options.windowMs ?? 60_000);
  while (Date.now() < deadline) {
    options.signal?.throwIfAborted();
    for (const m of minions) {
      const t = Date.now();
      const r = await ask(m);
      const ms = Date.now() - t;
      requests++;
      slowestMs = Math.max(slowestMs, ms);
      if (r.code !== 0 || r.stdout.trim() !== 'ok') {
        failedRequests++;
        say(`[${m}] +${((t - cutAt) / 1000).toFixed(1)} s: FAILED through its proxy (${(r.stderr.trim() || r.stdout.trim()).split('\n')[0]})`);
      } else if (ms > 1000) {
        say(`[${m}] +${((t - cutAt) / 1000).toFixed(1)} s: answered through its proxy in ${(ms / 1000).toFixed(1)} s`);
      }
    }
    const r = await kubectl.run(['get', 'nodes', '-o', 'json', '--request-timeout=10s'], { timeoutMs: 15_000 });
    if (r.code === 0) {
      const nodes = (JSON.parse(r.stdout) as { items: { metadata: { name: string }; status: { conditions?: { type: string; status: string }[] } }[] }).items;
      const down = nodes.filter((n) => !n.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')).map((n) => n.metadata.name);
      for (const n of down) notReady.add(n);
      if (down.length > 0) say(`[kubectl]   +${((Date.now() - cutAt) / 1000).toFixed(1)} s: Nodes not Ready: ${down.join(', ')}`);
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
  // when the proxies noticed: the gateway logs each endpoint it deactivates (JSON lines with a "ts")
  let markedDownMs: number | undefined;
  for (const m of minions) {
    const journal = await cloud.exec(m, ['journalctl', '--no-pager', '-o', 'short-unix', '-u', 'corekube-api-proxy.service']);
    const line = journal.stdout.split('\n').find((l) => l.includes('deactivated endpoint') && l.includes(`${victim}:${PORTS.apiServer}`));
    const at = line ? Number(line.split(' ')[0]) * 1000 : NaN;
    if (Number.isFinite(at) && at >= cutAt - 1000) markedDownMs = Math.min(markedDownMs ?? Infinity, Math.max(0, at - cutAt));
  }
  if (markedDownMs !== undefined) say(`[cloud]     a minion's proxy left ${victim} out ${(markedDownMs / 1000).toFixed(1)} s after the power cut (its dial failed)`);
  const nodes = await nodeRows(kubectl).catch(() => []);
  for (const n of nodes.filter((x) => !x.ready)) notReady.add(n.name);
  const nodesAlwaysReady = nodes.length > 0 && notReady.size === 0;
  const survivedMasterLoss = failedRequests === 0 && nodesAlwaysReady;
  say(`[cloud]     ${requests - failedRequests}/${requests} requests through the minions' proxies answered in the ${((options.windowMs ?? 60_000) / 1000).toFixed(0)} s after the loss (slowest ${(slowestMs / 1000).toFixed(1)} s); Nodes ${nodesAlwaysReady ? 'Ready throughout' : `not Ready at some point: ${[...notReady].join(', ')}`}`);
  return { address, lost: { name: lost.name, ip: victim }, requests, failedRequests, slowestMs, markedDownMs, nodesAlwaysReady, notReadySeen: [...notReady], survivedMasterLoss };
}
