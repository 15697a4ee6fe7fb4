/**
 * The overlord at scale: `npm run bench -- --machines N --concurrency C [--step-latency-ms L] [--json]`
 * (also: --masters M (1), --idle-ms (3000), --node-options "…" for the overlord's node process).
 *
 * Starts a real etcd (localcloud/etcd/etcd.ts) and the overlord in its own process (bench/overlord-process.ts:
 * leader election, the etcd store, the spec's units and pod network — only the machines are simulated,
 * bench/simulated-hosts.ts, every step costing L ms of machine time). Once it leads, N machine records are
 * registered in etcd (masters first), as fast as etcd takes them. Reported:
 *
 * - wallMs: first registration → every machine deployed; lowerBoundMs: what the step latencies and C allow
 *   (the masters' steps, then ⌈minions / C⌉ waves of a minion's steps: minions wait for the masters);
 *   ratio = wallMs / lowerBoundMs;
 * - etcdWritesPerMachine: the overlord's etcd writes (put, delete, transactions) / N; idleRequests: its
 *   etcd requests during the idle seconds after the last machine was deployed (0 = no polling);
 * - peakRssMb, cpuSeconds of the overlord's process;
 * - reactionP50Ms / reactionP99Ms: a record's put sent → the overlord planned the machine (its
 *   machine.queued or machine.waiting event).
 *
 * With --json it prints exactly one JSON object (the keys above but cpuSeconds); else a table.
 */
import { fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createEtcdStore } from '../overlord/edges/etcd-store.ts';
import { clusterKeys } from '../contracts/keys.ts';
import { startEtcd } from '../localcloud/etcd/etcd.ts';
import { benchCluster } from './cluster.ts';
import type { ProcessConfig, ProcessResult } from './overlord-process.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));

// `--node-options "--flag"`: a value that starts with "--" is taken as such (parseArgs would refuse it)
const args = process.argv.slice(2).map((a, i, all) => (all[i - 1] === '--node-options' && a.startsWith('-') ? ` ${a}` : a));
const { values } = parseArgs({
  args,
  options: {
    machines: { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '50' },
    'step-latency-ms': { type: 'string', default: '250' },
    masters: { type: 'string', default: '1' },
    'idle-ms': { type: 'string', default: '3000' },
    'node-options': { type: 'string', default: '' },
    json: { type: 'boolean', default: false },
  },
  strict: true,
});

function whole(flag: string, value: string, min: number): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`bench: --${flag} must be a whole number ≥ ${min}, got ${JSON.stringify(value)}\n`);
    process.exit(2);
  }
  return n;
}

const machines = whole('machines', values.machines, 1);
const concurrency = whole('concurrency', values.concurrency, 1);
const stepLatencyMs = whole('step-latency-ms', values['step-latency-ms'], 1);
const masters = Math.min(machines, whole('masters', values.masters, 1));
const idleMs = whole('idle-ms', values['idle-ms'], 0);
/** node flags of the overlord's process, e.g. "--max-old-space-size=128" or "--cpu-prof --cpu-prof-dir=/tmp/p" */
const nodeOptions = values['node-options'].split(/\s+/).filter(Boolean);
const cluster = 'bench';
const bench = benchCluster(cluster, machines, masters);
const progress = (text: string) => values.json || process.stderr.write(`${text}\n`);

const etcd = await startEtcd();
let child: ReturnType<typeof fork> | undefined;
try {
  const config: ProcessConfig = { endpoint: etcd.endpoints[0]!, cluster, machines, masters, concurrency, stepLatencyMs, idleMs };
  child = fork(path.join(HERE, 'overlord-process.ts'), [JSON.stringify(config)], { execArgv: ['--import', 'tsx', ...nodeOptions], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const messages: unknown[] = [];
  let wake: () => void = () => undefined;
  child.on('message', (m) => (messages.push(m), wake()));
  const exited = new Promise<never>((_, reject) => child!.once('exit', (code) => reject(new Error(`the overlord's process exited (${code}) before it was done`))));
  exited.catch(() => undefined);
  const next = async <T>(type: string): Promise<T> => {
    for (;;) {
      const i = messages.findIndex((m) => (m as { type?: string }).type === type);
      if (i >= 0) return messages.splice(i, 1)[0] as T;
      await Promise.race([new Promise<void>((r) => (wake = r)), exited]);
    }
  };
  await next('ready');
  progress(`overlord ready; registering ${machines} machines (${masters} masters)…`);

  // the machines' announce scripts: one put a record, many at once
  const store = createEtcdStore({ endpoints: [etcd.endpoints[0]!] });
  const keys = clusterKeys(cluster);
  const sent = new Map<string, number>();
  let cursor = 0;
  const putter = async (until: number) => {
    while (cursor < until) {
      const r = bench.records[cursor++]!;
      sent.set(r.id, Date.now());
      await store.put(keys.machine(r.id), JSON.stringify(r));
    }
  };
  await putter(masters); // the masters first
  await Promise.all(Array.from({ length: 64 }, () => putter(bench.records.length)));
  const firstAt = Math.min(...sent.values());
  progress(`registered in ${Date.now() - firstAt} ms; deploying…`);
  const result = await next<ProcessResult>('done');
  await store.close();

  const wallMs = result.doneAt - firstAt;
  const minions = machines - masters;
  const lowerBoundMs = stepLatencyMs * (bench.steps.master + Math.ceil(minions / concurrency) * bench.steps.minion);
  const reactions = result.planned.map(([id, t]) => t - (sent.get(id) ?? t)).sort((a, b) => a - b);
  const pct = (q: number) => reactions[Math.min(reactions.length - 1, Math.ceil(q * reactions.length) - 1)] ?? 0;
  const round = (x: number, d = 0) => Math.round(x * 10 ** d) / 10 ** d;
  const report = {
    machines,
    concurrency,
    wallMs,
    lowerBoundMs,
    ratio: round(wallMs / lowerBoundMs, 3),
    etcdWritesPerMachine: round(result.counts.writes / machines, 2),
    idleRequests: result.idleRequests,
    peakRssMb: round(result.peakRssMb, 1),
    reactionP50Ms: pct(0.5),
    reactionP99Ms: pct(0.99),
  };
  if (values.json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    const avgSteps = (bench.steps.master * masters + bench.steps.minion * minions) / machines;
    const rows: [string, string, string][] = [
      ['machines (masters)', `${machines} (${masters})`, ''],
      ['concurrency', String(concurrency), ''],
      ['step latency', `${stepLatencyMs} ms`, `steps: master ${bench.steps.master}, minion ${bench.steps.minion}`],
      ['wall time to all deployed', `${wallMs} ms`, ''],
      ['lower bound', `${lowerBoundMs} ms`, ''],
      ['ratio', String(report.ratio), 'target ≤ 1.05'],
      ['etcd writes / machine', String(report.etcdWritesPerMachine), `target ≤ steps + 2 = ${round(avgSteps + 2, 2)}`],
      ['etcd requests / machine', String(round(result.counts.requests / machines, 2)), JSON.stringify(result.counts.byMethod)],
      [`etcd requests while idle (${idleMs} ms)`, String(result.idleRequests), 'target 0'],
      ['overlord peak RSS', `${report.peakRssMb} MB`, `target < 200 MB${nodeOptions.length ? `; node ${nodeOptions.join(' ')}` : ''}`],
      ['overlord CPU', `${round(result.cpuSeconds, 2)} s`, 'from ready to all deployed'],
      ['reaction p50 / p99', `${report.reactionP50Ms} / ${report.reactionP99Ms} ms`, 'target p99 < 100 ms'],
      ['remote commands / machine', String(round(result.remoteCommands.total / machines, 1)), `state reads: ${round(result.remoteCommands.stateReads / machines, 1)}`],
      ['log lines / machine', String(round(result.logLines / machines, 1)), ''],
      ['reconcile passes', String(result.passes), 'each plans every machine'],
      ['event loop delay p50 / p99 / max', `${round(result.loopDelayMs.p50, 1)} / ${round(result.loopDelayMs.p99, 1)} / ${round(result.loopDelayMs.max)} ms`, 'in the overlord, while deploying'],
      ['unit files / machine', `master ${bench.files.master}, minion ${bench.files.minion}`, 'written one command each'],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    const v = Math.max(...rows.map((r) => r[1].length));
    process.stdout.write(`${rows.map(([k, x, note]) => `${k.padEnd(w)}  ${x.padStart(v)}  ${note}`.trimEnd()).join('\n')}\n`);
  }
  await new Promise<void>((r) => (child!.exitCode !== null ? r() : child!.once('exit', () => r())));
} finally {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  await etcd.destroy();
}
