/**
 * Admission at scale: `npm run bench:admission -- --machines N [--concurrency C] [--command-latency-ms L] [--json]`.
 *
 * A real etcd run as discovery runs it (localcloud/etcd/discovery-etcd.ts: the overlord's discovery certificate,
 * the unit's TLS flags) with the auth the overlord sets up (root, joiner); the overlord's admission
 * (overlord/discovery/admission.ts) with the real per-machine etcd users (overlord/trust/machine-credentials.ts). The one
 * stand-in: the machines' SSH side — each remote command costs L ms and succeeds. N join requests are put
 * (as nodes do, 64 at a time); measured until every one is admitted:
 *
 * - wallMs, machinesPerSecond; etcdAuthChangesPerMachine (users, roles, grants made — each one an etcd auth
 *   request through raft); kvWritesPerMachine (host key pinned, request deleted) and kvRequestsPerMachine;
 *   commandsPerMachine (over SSH); peakRssMb of this process (admission runs in it; etcd is its own process).
 *
 * It checks the end state too (N machine users in etcd, no join request left) and exits 1 if it is not so.
 * With --json it prints exactly one JSON object.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Etcd3 } from 'etcd3';
import { Admission } from '../overlord/discovery/admission.ts';
import { systemClock } from '../core/clock.ts';
import { discoveryClientOptions, discoveryRbac, ensureDiscoveryAuth, ensureDiscoveryPasswords, pingDiscovery, ROOT_USER, type DiscoveryConnection } from '../overlord/trust/discovery-auth.ts';
import { createEtcdStore, retryStaleAuth } from '../overlord/edges/etcd-store.ts';
import type { ExecResult, HostRunner, HostTarget } from '../overlord/edges/host-runner.ts';
import { IdentityBook } from '../overlord/discovery/identity.ts';
import { clusterKeys, type ClusterKeys } from '../contracts/keys.ts';
import { silentLogger } from '../overlord/edges/log.ts';
import { DiscoveryMachineCredentials, type MachineCredentials } from '../overlord/trust/machine-credentials.ts';
import { flannelGrants } from '../overlord/pod-network/flannel.ts';
import { CertificateAuthority } from '../overlord/trust/pki/authority.ts';
import { DirectoryPkiStore } from '../overlord/trust/pki/store.ts';
import { parseClusterSpec } from '../clusterspec/cluster-spec.ts';
import { startDiscoveryEtcd } from '../localcloud/etcd/discovery-etcd.ts';
import { syntheticHostKey, syntheticNonce } from '../localcloud/identities.ts';
import { countingStore } from './counting-store.ts';

const { values } = parseArgs({
  options: {
    machines: { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '16' },
    'command-latency-ms': { type: 'string', default: '50' },
    json: { type: 'boolean', default: false },
  },
  strict: true,
});

function whole(flag: string, value: string, min: number): number {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`bench:admission: --${flag} must be a whole number ≥ ${min}, got ${JSON.stringify(value)}\n`);
    process.exit(2);
  }
  return n;
}
const machines = whole('machines', values.machines, 1);
const concurrency = whole('concurrency', values.concurrency, 1);
const commandLatencyMs = whole('command-latency-ms', values['command-latency-ms'], 0);


/** The stand-in for the machines' SSH side: every command takes L ms and succeeds; the identity read shows the machine's id and nonce. */
class SimulatedSsh implements HostRunner {
  commands = 0;
  async exec(target: HostTarget, argv: readonly string[]): Promise<ExecResult> {
    this.commands++;
    await new Promise((r) => setTimeout(r, commandLatencyMs));
    const identity = argv.includes('/etc/machine-id');
    return { code: 0, stdout: identity ? `${target.id}\n${syntheticNonce(target.id).nonce}\n` : '', stderr: '' };
  }
  async close(): Promise<void> {}
}

const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');

async function main(): Promise<number> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-bench-admission-'));
  const spec = parseClusterSpec({ flags: { name: 'bench-admission' } });
  const keys = clusterKeys(spec.name);
  const pkiStore = new DirectoryPkiStore(path.join(dir, 'state', 'pki'));
  const pki = await new CertificateAuthority({ store: pkiStore, clock: systemClock, cluster: spec.name }).ensureDiscovery(spec);
  const passwords = await ensureDiscoveryPasswords(pkiStore);
  const etcd = await startDiscoveryEtcd({ spec, dir, pki });
  const conn: DiscoveryConnection = { endpoints: [etcd.endpoint], ca: pki.ca, callTimeoutMs: 10_000 };
  const closers: (() => Promise<unknown> | void)[] = [];
  try {
    await untilDiscoveryAnswers(conn);
    await ensureDiscoveryAuth(conn, discoveryRbac(keys, { root: passwords.root, joiner: 'bench-join-token-0123456789' }));
    const auth = { username: ROOT_USER, password: passwords.root };
    const base = createEtcdStore({ endpoints: [etcd.endpoint], tls: { ca: Buffer.from(pki.ca) }, auth });
    closers.push(() => base.close());
    const counted = countingStore(base);
    const credentials = new DiscoveryMachineCredentials(conn, passwords.root, keys, passwords.machines, flannelGrants);
    closers.push(() => credentials.close());
    const counting = countingCredentials(credentials);
    const ssh = new SimulatedSsh();
    const { log, failures } = failureCountingLog();
    const admission = new Admission({ store: counted.store, hosts: ssh, credentials: counting.credentials, keys, log, clock: systemClock, book: new IdentityBook() }, { remote: { user: 'corekube' }, concurrency, maxPending: machines, rate: { perSecond: 1_000, burst: machines } });
    closers.push(() => admission.stop());
    await admission.start();
    const before = counted.counts();

    // the nodes: each puts its join request (here as root, 64 at a time, as fast as etcd takes them)
    const nodes = new Etcd3(discoveryClientOptions(conn, auth));
    closers.push(() => nodes.close());
    const t0 = Date.now();
    await putJoinRequests(nodes, keys);
    while (admission.admitted < machines) await new Promise((r) => setTimeout(r, 20));
    const wallMs = Date.now() - t0;
    const after = counted.counts();

    // the end state: every machine has its user, no request is left
    const users = (await retryStaleAuth(() => nodes.getUsers())).filter((u) => u.name.startsWith('machine-')).length;
    const left = (await base.list(keys.join)).kvs.length;
    const result = {
      machines,
      concurrency,
      commandLatencyMs,
      wallMs,
      machinesPerSecond: Math.round((machines / wallMs) * 1000 * 10) / 10,
      etcdAuthChangesPerMachine: Math.round((counting.changes() / machines) * 100) / 100,
      kvWritesPerMachine: Math.round(((after.writes - before.writes) / machines) * 100) / 100,
      kvRequestsPerMachine: Math.round(((after.requests - before.requests) / machines) * 100) / 100,
      commandsPerMachine: Math.round((ssh.commands / machines) * 100) / 100,
      peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
      retriedFailures: failures,
      machineUsers: users,
      requestsLeft: left,
    };
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else for (const [k, v] of Object.entries(result)) process.stdout.write(`${k.padEnd(28)} ${v}\n`);
    if (users !== machines || left !== 0) {
      process.stderr.write(`bench:admission: end state wrong: ${users} machine users for ${machines} machines, ${left} join requests left\n`);
      return 1;
    }
    return 0;
  } finally {
    for (const close of closers.reverse()) await Promise.resolve(close()).catch(() => undefined);
    etcd.proc.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
}

async function untilDiscoveryAnswers(conn: DiscoveryConnection): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await pingDiscovery(conn);
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The same credentials, with the auth changes they make counted. */
function countingCredentials(credentials: MachineCredentials): { credentials: MachineCredentials; changes(): number } {
  let authChanges = 0;
  return {
    credentials: {
      fileFor: (id) => credentials.fileFor(id),
      remove: (id) => credentials.remove(id),
      ensure: async (id, subnet) => {
        const changes = await credentials.ensure(id, subnet);
        authChanges += changes.length;
        return changes;
      },
    },
    changes: () => authChanges,
  };
}

/** A silent log that counts its warnings by reason (the failures admission retried). */
function failureCountingLog(): { log: ReturnType<typeof silentLogger>; failures: Record<string, number> } {
  const failures: Record<string, number> = {};
  const log = silentLogger();
  const warn = log.warn.bind(log);
  log.warn = ((obj: Record<string, unknown>, ...rest: unknown[]) => {
    const reason = String(obj?.reason ?? obj?.code ?? 'unknown').replace(/[0-9a-f]{32}/g, '<id>').slice(0, 160);
    failures[reason] = (failures[reason] ?? 0) + 1;
    return (warn as (...a: unknown[]) => void)(obj, ...rest);
  }) as typeof log.warn;
  return { log, failures };
}

/** The nodes: each puts its join request (here as root, 64 at a time, as fast as etcd takes them). */
async function putJoinRequests(nodes: Etcd3, keys: ClusterKeys): Promise<void> {
  for (let i = 0; i < machines; i += 64) {
    await Promise.all(
      Array.from({ length: Math.min(64, machines - i) }, (_, j) => {
        const n = i + j;
        const id = hex(n + 1, 32);
        const record = { schema: 1, id, role: 'minion', ip: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, hostname: `minion-${n}`, bootId: hex(n + 1, 32), sshHostKey: syntheticHostKey(id), nonceDigest: syntheticNonce(id).digest, announcedAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z') };
        return retryStaleAuth(() => nodes.put(keys.joinOf(id)).value(JSON.stringify(record)).exec());
      }),
    );
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench:admission: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
