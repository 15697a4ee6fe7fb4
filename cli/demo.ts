import { CorekubeError } from '../core/errors.ts';
import type { Stack, StackEvent } from '../cloud/heat-client.ts';
import { prettyLogLines } from '../overlord/log.ts';
import type { LedgerEntry } from '../overlord/ledger.ts';
import { formatStatusTable, type StatusReport } from '../overlord/status.ts';
import type { LocalCloud, LocalCloudEvent, MachineTiming } from '../localcloud/local-cloud.ts';
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
const usage = `Usage: corekube demo [--masters N] [--minions M] [--overlords O [--failover]] [--scale] [--json] [--overlord docker|process] [--net K]

Brings up a local cloud on this machine and deploys a cluster on it, end to end: a real OpenStack Heat
(Keystone + heat-all) creates the Heat template corekube generates; every server is a systemd-nspawn machine
booted by a real cloud-init from the user_data Heat resolved; the machines and the overlord signal Heat's wait
conditions, so CREATE_COMPLETE means every machine is deployed. Shows the overlord's log as it works, the final
status (as \`corekube status\`) and how long each machine took, then tears everything down (also on Ctrl-C).
Kubernetes, flannel and containerd are stand-in executables; etcd is real. Needs root and scripts/setup.

Options:
  --masters N          masters (1, 3 or 5; default 1)
  --minions M          minions (0-20; default 2)
  --overlords O        overlord servers (1-3; default 1): the bootstrap overlord and O - 1 standbys, booted by
                       Heat from the stack's overlord_count, each fetching the bootstrap overlord's sealed state
  --failover           (with --overlords 2 or more) once deployed, kill the bootstrap overlord's container and
                       show a standby taking over within the lease TTL; with --scale, the standby deploys it
  --scale              once deployed, raise minion_count by one with a Heat stack update (PATCH): one more
                       machine boots, the overlord deploys it, the others are left alone
  --json               print progress on stderr and, as the last line on stdout, the final status object in
                       the shape of \`corekube status --json\`
  --overlord MODE      where the overlord container runs: docker (a private Docker engine on this host, the
                       image built from overlord/Dockerfile; the default when docker.io is installed) or
                       process (\`corekube overlord\` as a child process)
  --net K              the cloud's network 10.200.K.0/24, bridge ckbrK (default 60)

Exit status: 0 when every machine is deployed (and, with --scale, the new one too); 1 otherwise; 2 on bad
options; 130 when interrupted.`;

export interface DemoOptions {
  readonly masters: number;
  readonly minions: number;
  readonly overlords: number;
  readonly failover: boolean;
  readonly scale: boolean;
  readonly json: boolean;
  readonly overlord: OverlordMode | undefined;
  readonly net: number;
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
  const minions = whole('minions', values.minions, 2, (n) => n >= 0 && n <= MAX_DEMO_MINIONS, `a whole number from 0 to ${MAX_DEMO_MINIONS}`);
  const overlords = whole('overlords', values.overlords, 1, (n) => n >= 1 && n <= 3, 'a whole number from 1 to 3');
  const failover = values.failover ?? false;
  if (failover && overlords < 2) problems.push(`--failover needs a standby to take over: give --overlords 2 or 3 (got ${overlords})`);
  const net = whole('net', values.net, 60, (n) => n >= 1 && n <= 254, 'a whole number from 1 to 254');
  const overlord = values.overlord;
  if (overlord !== undefined && overlord !== 'docker' && overlord !== 'process') problems.push(`--overlord must be docker or process (got ${JSON.stringify(overlord)})`);
  if (problems.length > 0) throw new CorekubeError('E_USAGE', problems.join('; '), { hint: 'for example: corekube demo --masters 1 --minions 2' });
  return Object.freeze({ masters, minions, overlords, failover, scale: values.scale ?? false, json: values.json ?? false, overlord: overlord as OverlordMode | undefined, net });
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
  summary: 'a local cloud with a real Heat: boot machines from the generated template, watch the overlord deploy them',
  usage,
  async run(argv) {
    const options = parseDemoArgs(argv);
    const human = options.json ? process.stderr : process.stdout;
    const say = (text: string) => void human.write(text.endsWith('\n') ? text : `${text}\n`);
    let local: typeof import('../localcloud/local-cloud.ts');
    try {
      local = await import('../localcloud/local-cloud.ts');
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

    say(`corekube demo: ${options.masters} master(s) and ${options.minions} minion(s) on a local cloud — a real Heat (Keystone + heat-all), machines booted by a real cloud-init and systemd (systemd-nspawn), real etcd; Kubernetes, flannel and containerd binaries are stand-ins`);
    let cloud: LocalCloud | undefined;
    let exit = 1;
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
      if (options.scale) {
        const before = await cloud.ledger();
        say(`[cloud]     scaling up: stack update (PATCH) minion_count ${options.minions} -> ${options.minions + 1}`);
        await cloud.scaleMinions(options.minions + 1, { signal });
        report = await cloud.waitDeployed(initial + 1, { signal, timeoutMs: 300_000 });
        const touched = touchedMachines(before, await cloud.ledger());
        untouched = touched.length === 0;
        say(untouched ? `[cloud]     the ${before.size} machines deployed before were left alone (their ledger entries are unchanged)` : `[cloud]     the scale-up touched machines deployed before: ${touched.join(', ')}`);
        say(`\n${formatStatusTable(report)}`);
        say(formatTimings(await cloud.machineTimings()));
      }
      const expected = initial + (options.scale ? 1 : 0);
      const deployed = report.machines.filter((m) => m.state === 'deployed').length;
      exit = deployed === expected && report.machines.length === expected && untouched ? 0 : 1;
      say(exit === 0 ? `[cloud]     done: ${deployed}/${expected} machines deployed` : `[cloud]     not done: ${deployed}/${expected} machines deployed`);
      if (options.json) process.stdout.write(`${JSON.stringify(report)}\n`);
    } catch (err) {
      if (signal.aborted) {
        exit = 130;
      } else {
        throw err;
      }
    } finally {
      if (cloud) {
        say('[cloud]     tearing down: the overlord, the machines, Heat, the mirror');
        try {
          await cloud.teardown();
          say('[cloud]     torn down: no machine, mount, namespace, bridge, cgroup, container or service left');
        } catch (err) {
          say(`[cloud]     ${err instanceof Error ? err.message : String(err)}`);
          exit = 1;
        }
      }
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
    return exit;
  },
};
