import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CorekubeError } from '../core/errors.ts';
import type { Stack, StackEvent } from '../cloud/heat-client.ts';
import { prettyLogLines } from '../overlord/edges/log.ts';
import type { LedgerEntry } from '../contracts/ledger-entry.ts';
import { formatStatusTable, type StatusReport } from '../overlord/status.ts';
import type { LocalCloud, LocalCloudEvent, LocalCloudTraces, MachineTiming } from '../localcloud/cloud.ts';
import type { OverlordMode } from '../localcloud/overlord-runner.ts';
import { parseOptions, type Command } from './command.ts';
import { formatStack } from './cloud.ts';

/*
 * `corekube demo`: the local cloud (localcloud/) — a real Heat creating corekube's generated template,
 * machines booted by a real cloud-init and systemd, the overlord building the cluster — followed as a
 * person would follow `docker logs overlord`, then the final status, how long each machine took, an optional
 * scale-up through a Heat stack update, and a teardown that leaves nothing behind (also on Ctrl-C).
 * localcloud/ is imported lazily: the overlord image carries no local cloud.
 */
const usage = `Usage: corekube demo [--masters N] [--minions M] [--overlords O [--failover]] [--scale] [--json] [--keep]
                     [--overlord docker|process] [--net K]
       corekube demo --down [--net K]

Brings up a local cloud on this machine and a real Kubernetes cluster on it, end to end: a real OpenStack Heat
(Keystone + heat-all) creates the Heat template corekube generates; every server is a systemd-nspawn machine
booted by a real cloud-init from the user_data Heat resolved; the overlord deploys the real Kubernetes, etcd,
flannel, containerd, runc and CNI plugins (built from their Go modules at the pinned versions, served by a
local mirror and registry) and signals cluster_ready once every Node is Ready and CoreDNS is available — so
CREATE_COMPLETE means a working cluster. Shows the overlord's log as it works, the status, \`kubectl get nodes\`,
and checks the cluster with the real kubectl: a workload on every minion, pod traffic across minions (VXLAN),
a Service through kube-proxy, names resolved by CoreDNS, the metadata service refused to pods. Then tears
everything down (also on Ctrl-C), unless --keep. Needs root and scripts/setup. localcloud/README.md lists
where the local cloud departs from a real one; the demo prints that list too.

Options:
  --masters N          masters (1, 3 or 5; default 1)
  --minions M          minions (1-20; default 2)
  --overlords O        overlord servers (1-3; default 1): the bootstrap overlord and O - 1 standbys, booted by
                       Heat from the stack's overlord_count, each fetching the bootstrap overlord's sealed state
  --failover           (with --overlords 2 or more) once deployed, kill the bootstrap overlord's container and
                       show a standby taking over within the lease TTL; with --scale, the standby deploys it
  --scale              once deployed, raise minion_count by one with a Heat stack update (PATCH): one more
                       machine boots, becomes a Ready Node and runs the workload; the others are left alone
  --json               print progress on stderr and, as the last line on stdout, the final status object (the
                       shape of \`corekube status --json\`) with "kubernetes": {nodes, checks}
  --keep               leave the cloud running (machines, Heat, Keystone, the cluster) and print the admin
                       kubeconfig (KUBECONFIG=), an openrc for the openstack CLI (OPENRC=), the kubectl built for
                       the cluster (kubectl:) and the command that tears it all down (down:)
  --down               tear down what \`corekube demo --keep\` left running on net K
  --overlord MODE      where the overlord container runs: docker (a private Docker engine on this host, the
                       image built from overlord/Dockerfile; the default when docker.io is installed) or
                       process (\`corekube overlord\` as a child process)
  --net K              the cloud's network 10.200.K.0/24, bridge ckbrK (default 60)

Exit status: 0 when every machine is deployed, every minion's Node is Ready and every check passed (and, with
--scale, the new minion too); 1 otherwise; 2 on bad options; 130 when interrupted.`;

export interface DemoOptions {
  readonly masters: number;
  readonly minions: number;
  readonly overlords: number;
  readonly failover: boolean;
  readonly scale: boolean;
  readonly json: boolean;
  readonly keep: boolean;
  readonly down: boolean;
  readonly overlord: OverlordMode | undefined;
  readonly net: number;
  /** internal: this process is the kept cloud's keeper (started by --keep), its output in this log file */
  readonly keeperLog: string | undefined;
}

const MAX_DEMO_MINIONS = 20;

/** PURE: the demo's flags, each checked, every problem reported at once. */
export function parseDemoArgs(argv: readonly string[]): DemoOptions {
  const { values } = parseOptions(
    argv,
    {
      masters: { type: 'string' },
      minions: { type: 'string' },
      overlords: { type: 'string' },
      failover: { type: 'boolean' },
      scale: { type: 'boolean' },
      json: { type: 'boolean' },
      overlord: { type: 'string' },
      net: { type: 'string' },
      keep: { type: 'boolean' },
      down: { type: 'boolean' },
      'keeper-log': { type: 'string' },
    },
    usage,
  );
  const problems: string[] = [];
  const whole = (flag: string, raw: string | undefined, fallback: number, ok: (n: number) => boolean, allowed: string): number => {
    if (raw === undefined) return fallback;
    const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
    if (!ok(n)) problems.push(`--${flag} must be ${allowed} (got ${JSON.stringify(raw)})`);
    return n;
  };
  const masters = whole('masters', values.masters, 1, (n) => [1, 3, 5].includes(n), '1, 3 or 5');
  const minions = whole('minions', values.minions, 2, (n) => n >= 1 && n <= MAX_DEMO_MINIONS, `a whole number from 1 to ${MAX_DEMO_MINIONS} (the checks run a workload on the minions)`);
  const overlords = whole('overlords', values.overlords, 1, (n) => n >= 1 && n <= 3, 'a whole number from 1 to 3');
  const failover = values.failover ?? false;
  if (failover && overlords < 2) problems.push(`--failover needs a standby to take over: give --overlords 2 or 3 (got ${overlords})`);
  const net = whole('net', values.net, 60, (n) => n >= 1 && n <= 254, 'a whole number from 1 to 254');
  const overlord = values.overlord;
  if (overlord !== undefined && overlord !== 'docker' && overlord !== 'process') problems.push(`--overlord must be docker or process (got ${JSON.stringify(overlord)})`);
  const keep = values.keep ?? false;
  const down = values.down ?? false;
  if (down) {
    const others = Object.keys(values).filter((k) => !['down', 'net', 'json'].includes(k));
    if (others.length > 0) problems.push(`--down takes only --net (got ${others.map((o) => `--${o}`).join(', ')})`);
  }
  if (problems.length > 0) throw new CorekubeError('E_USAGE', problems.join('; '), { hint: 'for example: corekube demo --masters 1 --minions 2' });
  return Object.freeze({ masters, minions, overlords, failover, scale: values.scale ?? false, json: values.json ?? false, keep, down, overlord: overlord as OverlordMode | undefined, net, keeperLog: values['keeper-log'] });
}

/** The stack's resources whose events tell the story (the rest are networks and security groups). */
const STORY = /^(overlord|discovery|masters|minions|overlord_ready|discovery_ready|cluster_ready)$/;

/** PURE: one progress event as the lines a person reads (none for the noise). */
export function formatEvent(e: LocalCloudEvent, stackName: string): string[] {
  switch (e.kind) {
    case 'phase':
      return [`[cloud]     ${e.detail ?? e.name} (${seconds(e.ms)})`];
    case 'heat':
      return e.event.resourceName === stackName || STORY.test(e.event.resourceName) ? [`[heat]      ${heatLine(e.event)}`] : [];
    case 'overlord.started':
      if (e.name !== undefined) {
        return [`[${e.name.replace('overlord-', '')}] started on this host like the bootstrap overlord, from its own machine's files, as container ${e.name} with its own --health-port (they share this host's network):`, `            ${e.command.join(' ')}`];
      }
      return e.mode === 'docker'
        ? [
            '[overlord]  started on this host\'s Docker engine — the local cloud\'s one deviation: Docker cannot run in an nspawn',
            '            machine, so the container runs here, on the overlord machine\'s own /etc/corekube and /var/lib/corekube:',
            `            ${e.command.join(' ')}`,
          ]
        : ['[overlord]  started as a process on this host (--overlord process), on the overlord machine\'s own files:', `            ${e.command.join(' ')}`];
    case 'release': {
      const r = e.event;
      if (r.kind === 'start') return [`[release]   [${r.index}/${r.total}] building ${r.project} ${r.version} from its Go module (${r.programs.length} programs; cached by version afterwards)`];
      if (r.kind === 'step') return [`[release]         ${r.message}`];
      if (r.kind === 'done' && !r.built.cached) return [`[release]         ${r.built.project} ${r.built.version} built in ${r.built.seconds} s`];
      return [];
    }
    case 'nova': {
      const n = e.event;
      if (n.kind === 'poll.failed') return [`[nova]      could not read the stack (will retry): ${n.reason}`];
      const who = `${n.boot.server.name} ${n.boot.ip}`;
      if (n.kind === 'boot.start') return [`[nova]      ${who}: booting an nspawn machine with the user_data Heat resolved (cloud-init)`];
      if (n.kind === 'boot.reported') return [`[nova]      ${who}: running, network up: reported to Heat`];
      if (n.kind === 'boot.ready') return [`[nova]      ${who}: systemd and cloud-init done, sshd up (${seconds((n.boot.readyAt ?? 0) - n.boot.seenAt)} after Heat asked)`];
      return [`[nova]      ${who}: did not boot: ${n.reason.split('\n')[0]}`];
    }
  }
}

function heatLine(e: StackEvent): string {
  const time = /T(\d\d:\d\d:\d\d)/.exec(e.time)?.[1] ?? e.time;
  const reason = e.statusReason && e.statusReason !== 'state changed' ? `  ${e.statusReason}` : '';
  return `${time}  ${e.resourceName.padEnd(16)}  ${e.status}${reason}`;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** PURE: how long each machine took, as a table. Times count from the stack create (or update) request. */
export function formatTimings(rows: readonly MachineTiming[]): string {
  const t = (ms: number | undefined) => (ms === undefined ? '-' : `+${(ms / 1000).toFixed(1)} s`);
  const header = ['MACHINE', 'ROLE', 'IP', 'HEAT ASKED', 'BOOTED', 'READY', 'DEPLOYED', 'DEPLOY TOOK'];
  const body = rows.map((r) => [
    `${r.name}${r.fromUpdate ? ' *' : ''}`, r.role, r.ip, t(r.requestedMs), t(r.bootedMs), t(r.readyMs), t(r.deployedMs),
    r.deployMs === undefined ? '-' : `${(r.deployMs / 1000).toFixed(1)} s`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const note = rows.some((r) => r.fromUpdate) ? '\n* booted by the stack update: its times count from the update request' : '';
  return `${[line(header), ...body.map(line)].join('\n')}\n(times since the stack create request; READY = systemd and cloud-init done)${note}\n`;
}

/** PURE: ids of machines whose ledger entry differs between two reads (a redeploy, a step run again). */
export function touchedMachines(before: ReadonlyMap<string, LedgerEntry>, after: ReadonlyMap<string, LedgerEntry>): string[] {
  return [...before.keys()].filter((id) => JSON.stringify(before.get(id)) !== JSON.stringify(after.get(id)));
}

export const demoCommand: Command = {
  path: ['demo'],
  summary: 'a local cloud with a real Heat and a real Kubernetes cluster on it: boot, deploy, check with kubectl',
  usage,
  async run(argv) {
    const options = parseDemoArgs(argv);
    if (options.down) return tearDownKept(options.net);
    if (options.keep && options.keeperLog === undefined) return keepInBackground(options, argv);
    return runDemo(options);
  },
};

/** Where `--keep` keeps what `--down` needs: the keeper's pid, its log, the kubeconfig and openrc. */
export function keptDir(net: number): string {
  return path.join(os.tmpdir(), `corekube-demo-${net}`);
}

interface KeptState {
  readonly pid: number;
  readonly net: number;
  readonly kubeconfig: string;
  readonly openrc: string;
  readonly kubectl: string;
  readonly traces: LocalCloudTraces;
}

async function runDemo(options: DemoOptions): Promise<number> {
  const human = options.json ? process.stderr : process.stdout;
  const say = (text: string) => void human.write(text.endsWith('\n') ? text : `${text}\n`);
  let local: typeof import('../localcloud/local-cloud.ts');
  let checks: typeof import('../localcloud/cluster-checks.ts');
  try {
    local = await import('../localcloud/local-cloud.ts');
    checks = await import('../localcloud/cluster-checks.ts');
  } catch (cause) {
    throw new CorekubeError('E_IO', 'the local cloud is not part of this installation', { cause, hint: 'run corekube demo from a checkout of the repository, not from the overlord image' });
  }
  const pretty = prettyLogLines({ colorize: human.isTTY === true });
  const stackName = 'demo';
  const interrupt = new AbortController();
  let interrupts = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupts++;
    if (interrupts === 1) {
      say(`\n[cloud]     ${sig}: stopping and tearing everything down (again to force it)`);
      interrupt.abort(new CorekubeError('E_INTERNAL', `interrupted by ${sig}`));
    } else {
      void import('../localcloud/cleanup.ts').then((c) => {
        c.cleanupNow();
        process.exit(130);
      });
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const signal = interrupt.signal;

  say(`corekube demo: ${options.masters} master(s) and ${options.minions} minion(s) on a local cloud — a real Heat (Keystone + heat-all), machines booted by a real cloud-init and systemd (systemd-nspawn), the real Kubernetes ${'/'} etcd ${'/'} flannel ${'/'} containerd ${'/'} runc ${'/'} CNI ${'/'} CoreDNS built from their Go modules`);
  say('[cloud]     where this local cloud departs from a real OpenStack cloud (localcloud/README.md):');
  for (const d of local.LOCAL_CLOUD_DEVIATIONS) say(`              - ${d}`);
  let cloud: LocalCloud | undefined;
  let exit = 1;
  let kept = false;
  /** standbys that logged leader.elected, and when */
  const elected: { name: string; at: number }[] = [];
  try {
    cloud = await local.openLocalCloud({
      masters: options.masters,
      minions: options.minions,
      net: options.net,
      name: stackName,
      ...(options.overlord ? { overlord: options.overlord } : {}),
      ...(options.overlords > 1 ? { overlords: options.overlords } : {}),
      onEvent: (e) => formatEvent(e, stackName).forEach(say),
      onOverlordLine: (line) => say(`[overlord]  ${pretty(line)}`),
      onStandbyLine: (name, line) => {
        if (/"event":"leader\.elected"/.test(line)) elected.push({ name, at: Date.now() });
        say(`[${name.replace('overlord-', '')}] ${pretty(line)}`);
      },
    });
    signal.throwIfAborted();
    const created: Stack = await cloud.create({ signal });
    say(`\n${formatStack(created)}`);
    const initial = options.masters + options.minions;
    let report: StatusReport = await cloud.waitDeployed(initial, { signal, timeoutMs: 120_000 });
    say(`\n${formatStatusTable(report)}`);
    say(formatTimings(await cloud.machineTimings()));
    say(`[cloud]     stack create → CREATE_COMPLETE in ${seconds(cloud.timings.create ?? 0)}: every Node Ready, CoreDNS available`);

    const kubeconfig = await cloud.kubeconfig(options.keep ? path.join(keptDir(options.net), 'admin.kubeconfig') : undefined);
    const kubectl = new checks.Kubectl(cloud.kubectl, kubeconfig);
    say(`\n[kubectl]   ${await checks.kubectlVersion(cloud.kubectl)}: kubectl get nodes -o wide\n${await checks.nodesWide(kubectl)}`);
    const minionNodes = async () => (await checks.nodeRows(kubectl)).map((n) => n.name);
    say(`[kubectl]   the test workload (DaemonSet ${checks.WORKLOAD.name}, image ${cloud.workloadImage}) on every minion`);
    let pods = await checks.deployWorkload(kubectl, cloud.workloadImage, await minionNodes());
    for (const p of pods) say(`            ${p.name} on ${p.node} (${p.ip}) Running`);
    const results = await checks.runClusterChecks(kubectl, pods, async (url) => {
      const r = await cloud!.exec(pods[0]!.node, ['curl', '--silent', '--show-error', '--fail', '--max-time', '5', url]);
      return { ok: r.code === 0, out: (r.stdout || r.stderr).trim() };
    });
    for (const [name, r] of Object.entries(results)) say(`[check]     ${r.ok ? 'ok  ' : 'FAIL'} ${name}: ${r.detail}`);
    for (const m of await cloud.machineMemory()) say(`[cloud]     ${m.name}: ${(m.bytes / 1024 ** 2).toFixed(0)} MiB of memory in use`);

    if (options.failover) {
      await cloud.standbysStarted();
      say('[cloud]     failover: killing the bootstrap overlord\'s container (docker kill), as a lost server would');
      const killedAt = Date.now();
      await cloud.overlord?.kill();
      const deadline = killedAt + 60_000;
      while (elected.length === 0 && Date.now() < deadline) {
        signal.throwIfAborted();
        await new Promise((r) => setTimeout(r, 200));
      }
      const lead = elected[0];
      if (!lead) throw new CorekubeError('E_NOT_LEADER', 'no standby overlord took over within 60 s of the bootstrap overlord\'s death', { hint: 'its lines above say why (the lease TTL is 15 s)' });
      say(`[cloud]     ${lead.name} leads ${((lead.at - killedAt) / 1000).toFixed(1)} s after the bootstrap overlord died (lease TTL 15 s)`);
    }
    let untouched = true;
    let scaledReady = true;
    if (options.scale) {
      const before = await cloud.ledger();
      const nodesBefore = new Set(await minionNodes());
      say(`[cloud]     scaling up: stack update (PATCH) minion_count ${options.minions} -> ${options.minions + 1}`);
      const t0 = Date.now();
      await cloud.scaleMinions(options.minions + 1, { signal });
      report = await cloud.waitDeployed(initial + 1, { signal, timeoutMs: 300_000 });
      const added = (await checks.nodeRows(kubectl)).filter((n) => !nodesBefore.has(n.name));
      scaledReady = added.length === 1 && added[0]!.ready;
      say(`[cloud]     the new minion's Node ${added.map((n) => `${n.name} ${n.ready ? 'Ready' : 'not Ready'}`).join(', ')} ${seconds(Date.now() - t0)} after the update request`);
      const touched = touchedMachines(before, await cloud.ledger());
      untouched = touched.length === 0;
      say(untouched ? `[cloud]     the ${before.size} machines deployed before were left alone (their ledger entries are unchanged)` : `[cloud]     the scale-up touched machines deployed before: ${touched.join(', ')}`);
      pods = await checks.deployWorkload(kubectl, cloud.workloadImage, await minionNodes());
      say(`[kubectl]   the workload runs on the new minion too: ${pods.filter((p) => added.some((a) => a.name === p.node)).map((p) => `${p.name} on ${p.node}`).join(', ')}`);
      say(`\n${formatStatusTable(report)}`);
      say(formatTimings(await cloud.machineTimings()));
      say(`\n[kubectl]   kubectl get nodes -o wide\n${await checks.nodesWide(kubectl)}`);
    }
    const nodes = await checks.nodeRows(kubectl);
    const expected = initial + (options.scale ? 1 : 0);
    const deployed = report.machines.filter((m) => m.state === 'deployed').length;
    const minionsReady = nodes.length === options.minions + (options.scale ? 1 : 0) && nodes.every((n) => n.ready);
    const checked = results.podNetwork.ok && results.service.ok && results.dns.ok && results.metadataBlocked.ok;
    exit = deployed === expected && report.machines.length === expected && untouched && scaledReady && minionsReady && checked ? 0 : 1;
    say(exit === 0 ? `[cloud]     done: ${deployed}/${expected} machines deployed, ${nodes.length} Nodes Ready, every check passed` : `[cloud]     not done: ${deployed}/${expected} machines deployed, Nodes ${nodes.map((n) => `${n.name} ${n.ready ? 'Ready' : 'NotReady'}`).join(', ')}, checks ${checked ? 'passed' : 'FAILED'}`);
    if (options.json) {
      const kubernetes = { nodes: nodes.map((n) => ({ name: n.name, ready: n.ready, podCIDR: n.podCIDR })), checks: { podNetwork: results.podNetwork.ok, service: results.service.ok, dns: results.dns.ok } };
      process.stdout.write(`${JSON.stringify({ ...report, kubernetes })}\n`);
    }
    if (options.keep) {
      kept = true;
      await keep(cloud, kubeconfig, options, say);
    }
  } catch (err) {
    if (signal.aborted) {
      exit = 130;
    } else {
      throw err;
    }
  } finally {
    if (cloud && (!kept || signal.aborted)) {
      say('[cloud]     tearing down: the overlord, the machines, Heat, the mirror and registry');
      try {
        await cloud.teardown();
        say('[cloud]     torn down: no machine, mount, namespace, bridge, cgroup, container or service left');
      } catch (err) {
        say(`[cloud]     ${err instanceof Error ? err.message : String(err)}`);
        exit = 1;
      }
      await rm(keptDir(options.net), { recursive: true, force: true }).catch(() => undefined);
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return exit;
}

/**
 * `--keep`, in the keeper: prints where everything is (the lines `KUBECONFIG=`, `OPENRC=`, `kubectl:` and
 * `down:`, then KEPT_MARKER for the process that started it), records the keeper's pid for `--down`, and
 * serves the cloud — Nova boots what a stack update asks for — until SIGTERM/SIGINT, then returns (the
 * caller tears down).
 */
async function keep(cloud: LocalCloud, kubeconfig: string, options: DemoOptions, say: (t: string) => void): Promise<void> {
  const dir = keptDir(options.net);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const openrc = path.join(dir, 'openrc');
  await writeFile(openrc, `# corekube demo --keep: the local Keystone and Heat of net ${options.net} (source it for the openstack CLI)\n${Object.entries(cloud.heatService.env).map(([k, v]) => `export ${k}=${shellQuote(v)}`).join('\n')}\n`, { mode: 0o600 });
  const state: KeptState = { pid: process.pid, net: options.net, kubeconfig, openrc, kubectl: cloud.kubectl, traces: cloud.traces };
  await writeFile(path.join(dir, 'state.json'), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/corekube.js');
  say(`\n[cloud]     kept running (Heat, Keystone, the machines, the cluster); this process (pid ${process.pid}) serves it`);
  say(`KUBECONFIG=${kubeconfig}`);
  say(`OPENRC=${openrc}`);
  say(`kubectl: ${cloud.kubectl}`);
  say(`down: ${process.execPath} ${bin} demo --down --net ${options.net}`);
  say(`[cloud]     try: ${cloud.kubectl} --kubeconfig ${kubeconfig} get nodes -o wide`);
  say(`[cloud]     and: . ${openrc} && openstack stack update --existing --parameter minion_count=${options.minions + 1} --wait demo`);
  say(KEPT_MARKER);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

export const KEPT_MARKER = '[cloud]     keeper ready';

/**
 * `--keep` in the process a person started: runs the demo in a detached keeper process (this command with
 * --keeper-log), relays its log until the keeper says it keeps the cloud (exit 0) or ends (its exit status).
 */
async function keepInBackground(options: DemoOptions, argv: readonly string[]): Promise<number> {
  const dir = keptDir(options.net);
  const existing = await readKept(options.net);
  if (existing && alive(existing.pid)) {
    throw new CorekubeError('E_USAGE', `a kept demo already runs on net ${options.net} (pid ${existing.pid})`, { hint: `tear it down first: corekube demo --down --net ${options.net}` });
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const log = path.join(dir, 'demo.log');
  const fd = openSync(log, 'w', 0o600);
  const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/corekube.js');
  const child = spawn(process.execPath, [...process.execArgv, bin, 'demo', ...argv, '--keeper-log', log], { detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  child.unref();
  let exited: number | undefined;
  child.on('exit', (code) => (exited = code ?? 1));
  let offset = 0;
  let carry = '';
  for (;;) {
    const text = await readFile(log, 'utf8').catch(() => '');
    const fresh = text.slice(offset);
    offset = text.length;
    const lines = (carry + fresh).split('\n');
    carry = lines.pop() ?? '';
    for (const line of lines) {
      if (line === KEPT_MARKER) return 0;
      const stdoutLine = options.json ? /^\{/.test(line) : true;
      (stdoutLine ? process.stdout : process.stderr).write(`${line}\n`);
    }
    if (exited !== undefined) {
      if (carry) process.stdout.write(`${carry}\n`);
      return exited;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** `--down`: stops the keeper (which tears the cloud down) and waits; cleans up after a keeper that was killed. */
async function tearDownKept(net: number): Promise<number> {
  const state = await readKept(net);
  const say = (t: string) => void process.stdout.write(`${t}\n`);
  if (state && alive(state.pid)) {
    say(`[cloud]     stopping the kept demo on net ${net} (pid ${state.pid}): it tears everything down`);
    process.kill(state.pid, 'SIGTERM');
    const deadline = Date.now() + 180_000;
    while (alive(state.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
  }
  // the keeper's process group (its registry and overlord process), should it or they have survived
  if (state) {
    try {
      process.kill(-state.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  // whatever a killed keeper left: machines, bridge, Heat, the Docker engine, the registry
  const { cleanupLocalCloud } = await import('../localcloud/local-cloud.ts');
  const left = await cleanupLocalCloud(net, state?.traces);
  await rm(keptDir(net), { recursive: true, force: true });
  say(left.length > 0 ? `[cloud]     removed what was left: ${left.join(', ')}` : `[cloud]     nothing of the demo on net ${net} is left`);
  return 0;
}

async function readKept(net: number): Promise<KeptState | undefined> {
  try {
    return JSON.parse(await readFile(path.join(keptDir(net), 'state.json'), 'utf8')) as KeptState;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function shellQuote(v: string): string {
  return `'${v.replace(/'/g, `'\\''`)}'`;
}
