import { rm } from 'node:fs/promises';
import path from 'node:path';
import { CorekubeError } from '../core/errors.ts';
import type { Stack } from '../cloud/heat-client.ts';
import { prettyLogLines } from '../overlord/edges/log.ts';
import { formatStatusTable, type StatusReport } from '../overlord/status.ts';
import type { LocalCloud } from '../localcloud/cloud.ts';
import { formatStack } from './cloud.ts';
import { UPGRADE_FROM, type DemoOptions } from './demo-options.ts';
import { formatEvent, formatTimings, seconds, touchedMachines } from './demo-output.ts';
import { keep, keptDir } from './demo-keep.ts';

type LocalCloudModule = typeof import('../localcloud/local-cloud.ts');
type ChecksModule = typeof import('../localcloud/cluster-checks.ts');
type Kubectl = InstanceType<ChecksModule['Kubectl']>;
type CheckResults = Awaited<ReturnType<ChecksModule['runClusterChecks']>>;
type MasterLoss = import('../localcloud/master-loss.ts').MasterLoss;
type ScaleDown = import('../localcloud/scale-down.ts').ScaleDown;
type Upgrade = import('../localcloud/upgrade.ts').Upgrade;
type MasterReplacement = import('../localcloud/replace-master.ts').MasterReplacement;

const STACK_NAME = 'demo';

/** One run of `corekube demo`: open the local cloud, create the stack, check the cluster, fail over, scale, tear down. */
export async function runDemo(options: DemoOptions): Promise<number> {
  let local: LocalCloudModule;
  let checks: ChecksModule;
  try {
    local = await import('../localcloud/local-cloud.ts');
    checks = await import('../localcloud/cluster-checks.ts');
  } catch (cause) {
    throw new CorekubeError('E_IO', 'the local cloud is not part of this installation', { cause, hint: 'run corekube demo from a checkout of the repository, not from the overlord image' });
  }
  return new DemoRun(options, local, checks).run();
}

class DemoRun {
  private readonly human: NodeJS.WriteStream;
  private readonly interrupt = new AbortController();
  private interrupts = 0;
  private cloud: LocalCloud | undefined;
  /** standbys that logged leader.elected, and when */
  private readonly elected: { name: string; at: number }[] = [];

  constructor(
    private readonly options: DemoOptions,
    private readonly local: LocalCloudModule,
    private readonly checks: ChecksModule,
  ) {
    this.human = options.json ? process.stderr : process.stdout;
  }

  private get signal(): AbortSignal {
    return this.interrupt.signal;
  }

  async run(): Promise<number> {
    const { options, signal } = this;
    const onSignal = (sig: NodeJS.Signals) => this.interrupted(sig);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    this.say(`corekube demo: ${options.masters} master(s) and ${options.minions} minion(s) on a local cloud — a real Heat (Keystone + heat-all), machines booted by a real cloud-init and systemd (systemd-nspawn), the real Kubernetes / etcd / flannel / containerd / runc / CNI / CoreDNS built from their Go modules`);
    this.say('[cloud]     where this local cloud departs from a real OpenStack cloud (localcloud/README.md):');
    for (const d of this.local.LOCAL_CLOUD_DEVIATIONS) this.say(`              - ${d}`);
    let exit = 1;
    let kept = false;
    try {
      const cloud = (this.cloud = await this.open());
      signal.throwIfAborted();
      let report = await this.create(cloud);
      const kubeconfig = await cloud.kubeconfig(options.keep ? path.join(keptDir(options.net), 'admin.kubeconfig') : undefined);
      const kubectl = new this.checks.Kubectl(cloud.kubectl, kubeconfig);
      const results = await this.check(cloud, kubectl);
      if (options.failover) await this.failover(cloud);
      const loss = options.failMaster ? await this.failMaster(cloud, kubectl) : undefined;
      const replaced = options.replaceMaster ? await this.replaceMaster(cloud, kubectl) : undefined;
      const scaled = options.scale ? await this.scale(cloud, kubectl) : { report, untouched: true, ready: true };
      const shrunk = options.scaleDown ? await this.scaleDown(cloud, kubectl) : undefined;
      const upgraded = options.upgrade ? await this.upgrade(cloud, kubectl) : undefined;
      report = loss || replaced || shrunk || upgraded ? await cloud.status() : scaled.report;
      exit = await this.verdict(report, kubectl, results, scaled, loss, shrunk, upgraded, replaced);
      if (options.keep) {
        kept = true;
        await keep(cloud, kubeconfig, options, (t) => this.say(t));
      }
    } catch (err) {
      if (!signal.aborted) throw err;
      exit = 130;
    } finally {
      if (this.cloud && (!kept || signal.aborted)) exit = (await this.teardown(this.cloud)) ? exit : 1;
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    return exit;
  }

  /** The local cloud, its progress and the overlords' logs followed as `docker logs overlord` shows them. */
  private open(): Promise<LocalCloud> {
    const { options } = this;
    const pretty = prettyLogLines({ colorize: this.human.isTTY === true });
    return this.local.openLocalCloud({
      masters: options.masters,
      minions: options.minions,
      net: options.net,
      name: STACK_NAME,
      ...(options.apiLoadBalancer ? { apiLoadBalancer: options.apiLoadBalancer } : {}),
      ...(options.overlord ? { overlord: options.overlord } : {}),
      ...(options.upgrade ? { kubernetesVersion: UPGRADE_FROM } : {}),
      ...(options.overlords > 1 ? { overlords: options.overlords } : {}),
      onEvent: (e) => formatEvent(e, STACK_NAME).forEach((l) => this.say(l)),
      onOverlordLine: (line) => this.say(`[overlord]  ${pretty(line)}`),
      onStandbyLine: (name, line) => {
        if (/"event":"leader\.elected"/.test(line)) this.elected.push({ name, at: Date.now() });
        this.say(`[${name.replace('overlord-', '')}] ${pretty(line)}`);
      },
    });
  }

  /** stack create → CREATE_COMPLETE, then every initial machine deployed. */
  private async create(cloud: LocalCloud): Promise<StatusReport> {
    const created: Stack = await cloud.create({ signal: this.signal });
    this.say(`\n${formatStack(created)}`);
    const report = await cloud.waitDeployed(this.options.masters + this.options.minions, { signal: this.signal, timeoutMs: 120_000 });
    this.say(`\n${formatStatusTable(report)}`);
    this.say(formatTimings(await cloud.machineTimings()));
    this.say(`[cloud]     stack create → CREATE_COMPLETE in ${seconds(cloud.timings.create ?? 0)}: every Node Ready, CoreDNS available`);
    return report;
  }

  /** The real kubectl: the Nodes, the test workload on every minion, the cluster checks, each machine's memory. */
  private async check(cloud: LocalCloud, kubectl: Kubectl): Promise<CheckResults> {
    const { checks } = this;
    this.say(`\n[kubectl]   ${await checks.kubectlVersion(cloud.kubectl)}: kubectl get nodes -o wide\n${await checks.nodesWide(kubectl)}`);
    this.say(`[kubectl]   the test workload (DaemonSet ${checks.WORKLOAD.name}, image ${cloud.workloadImage}) on every minion`);
    const pods = await checks.deployWorkload(kubectl, cloud.workloadImage, await this.minionNodes(kubectl));
    for (const p of pods) this.say(`            ${p.name} on ${p.node} (${p.ip}) Running`);
    const results = await checks.runClusterChecks(kubectl, pods, async (url) => {
      const r = await cloud.exec(pods[0]!.node, ['curl', '--silent', '--show-error', '--fail', '--max-time', '5', url]);
      return { ok: r.code === 0, out: (r.stdout || r.stderr).trim() };
    });
    for (const [name, r] of Object.entries(results)) this.say(`[check]     ${r.ok ? 'ok  ' : 'FAIL'} ${name}: ${r.detail}`);
    for (const m of await cloud.machineMemory()) this.say(`[cloud]     ${m.name}: ${(m.bytes / 1024 ** 2).toFixed(0)} MiB of memory in use`);
    return results;
  }

  /** `--failover`: the bootstrap overlord's container killed; a standby must lead within 60 s. */
  private async failover(cloud: LocalCloud): Promise<void> {
    await cloud.standbysStarted();
    this.say('[cloud]     failover: killing the bootstrap overlord\'s container (docker kill), as a lost server would');
    const killedAt = Date.now();
    await cloud.overlord?.kill();
    const deadline = killedAt + 60_000;
    while (this.elected.length === 0 && Date.now() < deadline) {
      this.signal.throwIfAborted();
      await new Promise((r) => setTimeout(r, 200));
    }
    const lead = this.elected[0];
    if (!lead) throw new CorekubeError('E_NOT_LEADER', 'no standby overlord took over within 60 s of the bootstrap overlord\'s death', { hint: 'its lines above say why (the lease TTL is 15 s)' });
    this.say(`[cloud]     ${lead.name} leads ${((lead.at - killedAt) / 1000).toFixed(1)} s after the bootstrap overlord died (lease TTL 15 s)`);
  }

  /**
   * `--fail-master`: the master the load balancer used last powered off, the API must answer through the VIP; with
   * node-local, the last master powered off, the API must answer through every minion's proxy.
   */
  private async failMaster(cloud: LocalCloud, kubectl: Kubectl): Promise<MasterLoss> {
    const { loseMaster, loseMasterBehindNodeProxies } = await import('../localcloud/master-loss.ts');
    const lose = cloud.spec.apiLoadBalancer === 'node-local' ? loseMasterBehindNodeProxies : loseMaster;
    return lose(cloud, kubectl, { signal: this.signal, say: (t) => this.say(t) });
  }

  /** `--replace-master`: a master lost, removed (its etcd member first) and its server rebuilt; the API asked throughout. */
  private async replaceMaster(cloud: LocalCloud, kubectl: Kubectl): Promise<MasterReplacement> {
    const { replaceMaster } = await import('../localcloud/replace-master.ts');
    const out = await replaceMaster(cloud, kubectl, { signal: this.signal, say: (t) => this.say(t) });
    this.say(`\n${formatStatusTable(await cloud.status())}`);
    return out;
  }

  /** `--scale`: one more minion through a stack update; it must become a Ready Node, and nothing deployed before be touched. */
  private async scale(cloud: LocalCloud, kubectl: Kubectl): Promise<{ report: StatusReport; untouched: boolean; ready: boolean }> {
    const { options, checks, signal } = this;
    const before = await cloud.ledger();
    const nodesBefore = new Set(await this.minionNodes(kubectl));
    this.say(`[cloud]     scaling up: stack update (PATCH) minion_count ${options.minions} -> ${options.minions + 1}`);
    const t0 = Date.now();
    await cloud.scaleMinions(options.minions + 1, { signal });
    const report = await cloud.waitDeployed(options.masters + options.minions + 1, { signal, timeoutMs: 300_000 });
    const added = (await checks.nodeRows(kubectl)).filter((n) => !nodesBefore.has(n.name));
    const ready = added.length === 1 && added[0]!.ready;
    this.say(`[cloud]     the new minion's Node ${added.map((n) => `${n.name} ${n.ready ? 'Ready' : 'not Ready'}`).join(', ')} ${seconds(Date.now() - t0)} after the update request`);
    const touched = touchedMachines(before, await cloud.ledger());
    this.say(touched.length === 0 ? `[cloud]     the ${before.size} machines deployed before were left alone (their ledger entries are unchanged)` : `[cloud]     the scale-up touched machines deployed before: ${touched.join(', ')}`);
    const pods = await checks.deployWorkload(kubectl, cloud.workloadImage, await this.minionNodes(kubectl));
    this.say(`[kubectl]   the workload runs on the new minion too: ${pods.filter((p) => added.some((a) => a.name === p.node)).map((p) => `${p.name} on ${p.node}`).join(', ')}`);
    this.say(`\n${formatStatusTable(report)}`);
    this.say(formatTimings(await cloud.machineTimings()));
    this.say(`\n[kubectl]   kubectl get nodes -o wide\n${await checks.nodesWide(kubectl)}`);
    return { report, untouched: touched.length === 0, ready };
  }

  /** `--scale-down`: one minion fewer through a stack update; the overlord must remove it from the cluster. */
  private async scaleDown(cloud: LocalCloud, kubectl: Kubectl): Promise<ScaleDown> {
    const { scaleDownOne } = await import('../localcloud/scale-down.ts');
    const out = await scaleDownOne(cloud, kubectl, { signal: this.signal, say: (t) => this.say(t) });
    this.say(`\n[kubectl]   kubectl get nodes -o wide\n${await this.checks.nodesWide(kubectl)}`);
    return out;
  }

  /** `--upgrade`: the pinned Kubernetes release rolled through the cluster by a stack update, the overlord killed mid-way. */
  private async upgrade(cloud: LocalCloud, kubectl: Kubectl): Promise<Upgrade> {
    const { rollUpgrade } = await import('../localcloud/upgrade.ts');
    const out = await rollUpgrade(cloud, kubectl, { to: this.local.pinnedKubernetes(), signal: this.signal, say: (t) => this.say(t) });
    this.say(`\n[kubectl]   kubectl get nodes -o wide\n${await this.checks.nodesWide(kubectl)}`);
    return out;
  }

  /** 0 when every machine is deployed, every Node Ready and every check passed; with --json, the status and the Nodes. */
  private async verdict(report: StatusReport, kubectl: Kubectl, results: CheckResults, scaled: { untouched: boolean; ready: boolean }, loss: MasterLoss | undefined, shrunk: ScaleDown | undefined, upgraded: Upgrade | undefined, replaced?: MasterReplacement): Promise<number> {
    const { options } = this;
    const nodes = await this.checks.nodeRows(kubectl);
    const minions = options.minions + (options.scale ? 1 : 0) - (options.scaleDown ? 1 : 0);
    const expected = options.masters + minions;
    // a master powered off by --fail-master still counts: it was deployed, then lost on purpose
    const deployed = report.machines.filter((m) => m.state === 'deployed' || m.ip === loss?.lost.ip).length;
    const minionsReady = nodes.length === minions && nodes.every((n) => n.ready);
    const checked = results.podNetwork.ok && results.service.ok && results.dns.ok && results.metadataBlocked.ok;
    const survived = loss === undefined || loss.survivedMasterLoss;
    const removed = shrunk === undefined || (shrunk.nodeGone && shrunk.subnetReleased && shrunk.discoveryUserGone);
    const rebuilt = replaced === undefined || (replaced.replaced && replaced.failedRequests === 0);
    const rolled = upgraded === undefined || (upgraded.machines === expected && upgraded.workloadAvailableThroughout && upgraded.resumedAfterKill);
    const exit = deployed === expected && report.machines.length === expected && scaled.untouched && scaled.ready && minionsReady && checked && survived && removed && rolled && rebuilt ? 0 : 1;
    this.say(exit === 0 ? `[cloud]     done: ${deployed}/${expected} machines deployed, ${nodes.length} Nodes Ready, every check passed` : `[cloud]     not done: ${deployed}/${expected} machines deployed, Nodes ${nodes.map((n) => `${n.name} ${n.ready ? 'Ready' : 'NotReady'}`).join(', ')}, checks ${checked ? 'passed' : 'FAILED'}`);
    if (options.json) {
      const kubernetes = { nodes: nodes.map((n) => ({ name: n.name, ready: n.ready, podCIDR: n.podCIDR })), checks: { podNetwork: results.podNetwork.ok, service: results.service.ok, dns: results.dns.ok } };
      const apiEndpoint = loss
        ? { address: loss.address, survivedMasterLoss: loss.survivedMasterLoss, lostMaster: loss.lost, requests: loss.requests, failedRequests: loss.failedRequests, markedDownMs: loss.markedDownMs ?? null, nodesAlwaysReady: loss.nodesAlwaysReady }
        : undefined;
      const lifecycle = shrunk || upgraded || replaced
        ? {
            ...(replaced ? { replaceMaster: replaced } : {}),
            ...(shrunk ? { scaleDown: { removed: shrunk.removed, nodeGone: shrunk.nodeGone, subnetReleased: shrunk.subnetReleased, discoveryUserGone: shrunk.discoveryUserGone, updateMs: shrunk.updateMs, removedMs: shrunk.removedMs ?? null } } : {}),
            ...(upgraded ? { upgrade: upgraded } : {}),
          }
        : undefined;
      process.stdout.write(`${JSON.stringify({ ...report, kubernetes, ...(apiEndpoint ? { apiEndpoint } : {}), ...(lifecycle ? { lifecycle } : {}) })}\n`);
    }
    return exit;
  }

  /** Everything torn down; false when something could not be removed (said). */
  private async teardown(cloud: LocalCloud): Promise<boolean> {
    this.say('[cloud]     tearing down: the overlord, the machines, Heat, the mirror and registry');
    let ok = true;
    try {
      await cloud.teardown();
      this.say('[cloud]     torn down: no machine, mount, namespace, bridge, cgroup, container or service left');
    } catch (err) {
      this.say(`[cloud]     ${err instanceof Error ? err.message : String(err)}`);
      ok = false;
    }
    await rm(keptDir(this.options.net), { recursive: true, force: true }).catch(() => undefined);
    return ok;
  }

  private async minionNodes(kubectl: Kubectl): Promise<string[]> {
    return (await this.checks.nodeRows(kubectl)).map((n) => n.name);
  }

  private interrupted(sig: NodeJS.Signals): void {
    this.interrupts++;
    if (this.interrupts === 1) {
      this.say(`\n[cloud]     ${sig}: stopping and tearing everything down (again to force it)`);
      this.interrupt.abort(new CorekubeError('E_INTERNAL', `interrupted by ${sig}`));
      return;
    }
    void import('../localcloud/cleanup.ts').then((c) => {
      c.cleanupNow();
      process.exit(130);
    });
  }

  private say(text: string): void {
    this.human.write(text.endsWith('\n') ? text : `${text}\n`);
  }
}
