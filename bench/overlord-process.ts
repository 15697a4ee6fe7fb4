/**
 * The overlord under benchmark, in a process of its own so that its memory and CPU are measured alone:
 * `corekube overlord`'s wiring (leader election on a real etcd, the etcd store, the units of a spec, the
 * pod network) with the SSH edge replaced by bench/simulated-hosts.ts. Driven by bench/run.ts over IPC:
 *
 *   ← config (argv[2], JSON)      → {type:'ready'} once elected and listing
 *   → {type:'done', …} once every machine is deployed and the store has been watched for idleMs
 *
 * Instrumentation reads the overlord's own log events (machine.queued / machine.waiting = planned,
 * machine.deployed) through its log stream, and counts store requests by wrapping the store: the
 * overlord's code runs unchanged.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { systemClock } from '../core/clock.ts';
import { createEtcdElection } from '../overlord/availability/etcd-election.ts';
import { createEtcdStore } from '../overlord/edges/etcd-store.ts';
import { clusterKeys } from '../contracts/keys.ts';
import { runLeader } from '../overlord/availability/leader.ts';
import { overlordTerms } from '../overlord/term.ts';
import { createLogger } from '../overlord/edges/log.ts';
import { podNetworkOf } from '../overlord/pod-network/registry.ts';
import { unitsForSpec } from '../overlord/deploy/machine-units.ts';
import { benchCluster } from './cluster.ts';
import { countingStore, type StoreCounts } from './counting-store.ts';
import { SimulatedHosts } from './simulated-hosts.ts';

export interface ProcessConfig {
  readonly endpoint: string;
  readonly cluster: string;
  readonly machines: number;
  readonly masters: number;
  readonly concurrency: number;
  readonly stepLatencyMs: number;
  readonly idleMs: number;
}

export interface ProcessResult {
  readonly type: 'done';
  /** Date.now() when the last machine was deployed */
  readonly doneAt: number;
  /** store requests up to then */
  readonly counts: StoreCounts;
  /** store requests in the idle window after */
  readonly idleRequests: number;
  /** [machine id, Date.now() when first planned] */
  readonly planned: readonly (readonly [string, number])[];
  readonly cpuSeconds: number;
  readonly peakRssMb: number;
  readonly logLines: number;
  /** the event loop's delay while deploying, p50 and p99 (ms): how late every timer and answer was handled */
  readonly loopDelayMs: { readonly p50: number; readonly p99: number; readonly max: number };
  /** reconcile passes (each plans every machine) */
  readonly passes: number;
  readonly remoteCommands: { readonly total: number; readonly stateReads: number };
}

const config = JSON.parse(process.argv[2] ?? '{}') as ProcessConfig;
const send = (m: unknown) => process.send?.(m);

const bench = benchCluster(config.cluster, config.machines, config.masters);
const roleOf = new Map(bench.records.map((r) => [r.id, r.role]));
const hosts = new SimulatedHosts({ stepLatencyMs: config.stepLatencyMs, filesOf: (id) => bench.files[roleOf.get(id) ?? 'minion'] });

const planned = new Map<string, number>();
let deployed = 0;
let logLines = 0;
let onAllDeployed: () => void = () => undefined;
const allDeployed = new Promise<void>((r) => (onAllDeployed = r));
const MACHINE = /"machine":"([0-9a-f]{32})"/;
const sink = new Writable({
  write(chunk, _enc, done) {
    const now = Date.now();
    for (const line of String(chunk).split('\n')) {
      if (line === '') continue;
      logLines++;
      if (line.includes('"event":"machine.queued"') || line.includes('"event":"machine.waiting"')) {
        const id = MACHINE.exec(line)?.[1];
        if (id && !planned.has(id)) planned.set(id, now);
      } else if (line.includes('"event":"machine.deployed"')) {
        if (++deployed === config.machines) onAllDeployed();
      } else if (line.includes('"level":50') || line.includes('"level":60')) {
        process.stderr.write(`overlord: ${line}\n`);
      }
    }
    done();
  },
});
const log = createLogger({ format: 'json', level: 'debug', destination: sink });

const counted = countingStore(createEtcdStore({ endpoints: [config.endpoint] }));
const election = createEtcdElection({ endpoints: [config.endpoint], keys: clusterKeys(config.cluster), clock: systemClock });
const ports = { store: counted.store, hosts, clock: systemClock, log };
const leadership = runLeader(ports, {
  id: 'bench',
  election,
  term: overlordTerms(ports, {
    cluster: config.cluster,
    sshUser: 'corekube',
    unitsFor: unitsForSpec(bench.spec),
    expected: { masters: config.masters, minions: config.machines - config.masters },
    concurrency: config.concurrency,
    podNetwork: podNetworkOf(bench.spec),
  }),
});

// ready once elected and its overlord listed the machines (none yet) and watches
while (!leadership.overlord()) await new Promise((r) => setTimeout(r, 10));
await leadership.overlord()!.idle();
const cpu0 = process.cpuUsage();
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
send({ type: 'ready' });

await allDeployed;
const doneAt = Date.now();
const counts = counted.counts();
const cpu = process.cpuUsage(cpu0);
loopDelay.disable();
await new Promise((r) => setTimeout(r, config.idleMs));
const idleRequests = counted.counts().requests - counts.requests;

const result: ProcessResult = {
  type: 'done',
  doneAt,
  counts,
  idleRequests,
  planned: [...planned.entries()],
  cpuSeconds: (cpu.user + cpu.system) / 1e6,
  peakRssMb: process.resourceUsage().maxRSS / 1024,
  logLines,
  loopDelayMs: { p50: loopDelay.percentile(50) / 1e6, p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 },
  passes: leadership.overlord()?.reconciler.passes ?? 0,
  remoteCommands: { ...hosts.commands },
};
send(result);
await leadership.stop();
await election.close();
await counted.store.close();
process.disconnect?.();
