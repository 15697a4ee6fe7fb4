import type { StackEvent } from '../cloud/heat-client.ts';
import type { LedgerEntry } from '../contracts/ledger-entry.ts';
import type { LocalCloudEvent, MachineTiming } from '../localcloud/cloud.ts';

/** What `corekube demo` prints of the local cloud's progress: PURE formatting. */
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
    case 'octavia':
      return e.event.kind === 'lb.configured'
        ? [`[octavia]   haproxy on this host serves the load balancer ${e.event.vips.join(', ')} (${e.event.members} pool members, the stack's Octavia resources)`]
        : [`[octavia]   could not configure the load balancer (will retry): ${e.event.reason}`];
    case 'nova': {
      const n = e.event;
      if (n.kind === 'poll.failed') return [`[nova]      could not read the stack (will retry): ${n.reason}`];
      const who = `${n.boot.server.name} ${n.boot.ip}`;
      if (n.kind === 'boot.start') return [`[nova]      ${who}: booting an nspawn machine with the user_data Heat resolved (cloud-init)`];
      if (n.kind === 'boot.reported') return [`[nova]      ${who}: running, network up: reported to Heat`];
      if (n.kind === 'boot.ready') return [`[nova]      ${who}: systemd and cloud-init done, sshd up (${seconds((n.boot.readyAt ?? 0) - n.boot.seenAt)} after Heat asked)`];
      if (n.kind === 'server.deleted') return [`[nova]      ${who}: Heat deleted the server: powering the machine off (Nova's delete)`];
      return [`[nova]      ${who}: did not boot: ${n.reason.split('\n')[0]}`];
    }
  }
}

function heatLine(e: StackEvent): string {
  const time = /T(\d\d:\d\d:\d\d)/.exec(e.time)?.[1] ?? e.time;
  const reason = e.statusReason && e.statusReason !== 'state changed' ? `  ${e.statusReason}` : '';
  return `${time}  ${e.resourceName.padEnd(16)}  ${e.status}${reason}`;
}

export const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

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

