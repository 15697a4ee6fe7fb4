/**
 * The overlord's memory and log under hostile writes: `npm run -s bench:hostile -- [--writes 1000]
 * [--value-kb 900] [--kinds rewrite,keys,deep,foreign] [--json]`.
 *
 * A real etcd run as discovery runs it (the rendered unit's TLS, password hashing and size flags; auth set up by
 * the overlord's code), the overlord in this process as the booted CLI runs it (admission on, the real
 * per-machine etcd users; its SSH side a stand-in that never answers — no hostile request gets that far), one good
 * machine record. Then a join-token holder writes N hostile values under join/, in turn of the kinds given (all
 * four by default; an overlord that parses before it bounds dies of `deep` at once, so compare one without):
 *
 *   rewrite  one key rewritten with a new value of --value-kb KB each time (a bad role embedding the value)
 *   keys     a new key each time, a small value with a bad field
 *   deep     a new key each time, a value nested 5,000 levels deep
 *   foreign  a new key each time, a well-formed request at an address outside the cluster
 *
 * Figures: the overlord's heap after a full collection before and after the writes (this process holds the
 * overlord and the writer; etcd is its own process), its peak RSS, the log lines and the longest, what it
 * remembers of bad keys, and whether it still leads its one good machine. It is not a test and asserts nothing.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { systemClock } from '../core/clock.ts';
import { createEtcdStore, retryStaleAuth } from '../overlord/edges/etcd-store.ts';
import type { HostRunner } from '../overlord/edges/host-runner.ts';
import { clusterKeys, type ClusterKeys } from '../contracts/keys.ts';
import type { Etcd3 } from 'etcd3';
import { createLogger } from '../overlord/edges/log.ts';
import { DiscoveryMachineCredentials } from '../overlord/trust/machine-credentials.ts';
import { flannelGrants } from '../overlord/pod-network/flannel.ts';
import { runOverlord } from '../overlord/term.ts';
import { parseClusterSpec } from '../clusterspec/cluster-spec.ts';
import { startAuthedDiscovery } from '../localcloud/etcd/discovery-etcd.ts';

const { values } = parseArgs({
  options: { writes: { type: 'string', default: '1000' }, 'value-kb': { type: 'string', default: '900' }, kinds: { type: 'string', default: 'rewrite,keys,deep,foreign' }, json: { type: 'boolean', default: false } },
  strict: true,
});
const whole = (flag: string, value: string, min: number, max: number) => {
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) {
    process.stderr.write(`bench:hostile: --${flag} must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}\n`);
    process.exit(2);
  }
  return n;
};
const writes = whole('writes', values.writes, 4, 100_000);
const valueKb = whole('value-kb', values['value-kb'], 1, 1000);
const KINDS = ['rewrite', 'keys', 'deep', 'foreign'] as const;
const kinds = values.kinds.split(',').map((k) => k.trim());
if (kinds.length === 0 || kinds.some((k) => !(KINDS as readonly string[]).includes(k))) {
  process.stderr.write(`bench:hostile: --kinds must list some of ${KINDS.join(', ')}, got ${JSON.stringify(values.kinds)}\n`);
  process.exit(2);
}

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapMb = () => {
  gc();
  gc();
  return Math.round((process.memoryUsage().heapUsed / 1e6) * 10) / 10;
};

/** The machines' SSH side, never reached by a hostile request: any command fails as an unreachable machine would. */
const unreachable: HostRunner = { exec: () => Promise.reject(new Error('no machine is reached in this benchmark')), close: async () => undefined };

async function main(): Promise<number> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-bench-hostile-'));
  const spec = parseClusterSpec({ flags: { name: 'bench-hostile' } });
  const keys = clusterKeys(spec.name);
  const discovery = await startAuthedDiscovery({ spec, dir, joinToken: randomBytes(24).toString('hex') });
  const closers: (() => Promise<unknown> | unknown)[] = [() => discovery.close(), () => rm(dir, { recursive: true, force: true })];
  try {
    const root = discovery.client({ username: 'root', password: discovery.passwords.root });
    const joiner = discovery.client({ username: 'joiner', password: discovery.joinToken });
    const good = 'a'.repeat(32);
    // admitted as admission records it (overlord/discovery/identity.ts admittedValue; JSON here, so that this runs against
    // an overlord without admission as well)
    await root.put(`${keys.prefix}admitted/${good}`).value(JSON.stringify({ schema: 1, id: good, role: 'master', ip: '10.240.0.40', hostKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkHostKeyOfTheGoodMachine00000000000', admittedAt: '2026-01-01T00:00:00Z' }));
    await root.put(keys.machine(good)).value(JSON.stringify({ schema: 1, id: good, role: 'master', ip: '10.240.0.40', hostname: 'good', bootId: 'b'.repeat(32), announcedAt: '2026-01-01T00:00:00Z' }));

    const counted = countedLog();
    const log = counted.log;
    const store = createEtcdStore(discovery.rootStore);
    closers.unshift(() => store.close());
    const credentials = new DiscoveryMachineCredentials(discovery.conn, discovery.passwords.root, keys, discovery.passwords.machines, flannelGrants);
    closers.unshift(() => credentials.close());
    const overlord = await runOverlord(
      { store, hosts: unreachable, clock: systemClock, log },
      { cluster: spec.name, sshUser: 'corekube', unitsFor: () => ({ files: [], start: [], hash: 'none' }), expected: { masters: 2, minions: 0 }, admission: { credentials } },
    );
    closers.unshift(() => overlord.stop());
    await new Promise((r) => setTimeout(r, 500));
    const heapBefore = heapMb();
    const linesBefore = counted.lines;

    const t0 = Date.now();
    const written = await writeHostile(joiner, keys);
    const writeMs = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 2_000)); // the watch catches up
    const heapAfter = heapMb();
    const snapshot = overlord.discovery.snapshot();
    const result = {
      writes,
      kinds: kinds.join(','),
      valueKb,
      writtenMb: Math.round(written / 1e5) / 10,
      writeMs,
      heapBeforeMb: heapBefore,
      heapAfterMb: heapAfter,
      heapGrowthMb: Math.round((heapAfter - heapBefore) * 10) / 10,
      peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
      logLines: counted.lines - linesBefore,
      logBytes: counted.bytes,
      longestLogLine: counted.longest,
      goodMachinePlanned: snapshot.records.has(good),
      summary: overlord.summary().text,
    };
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else for (const [k, v] of Object.entries(result)) process.stdout.write(`${k.padEnd(20)} ${v}\n`);
    return 0;
  } finally {
    for (const close of closers) await Promise.resolve(close()).catch(() => undefined);
  }
}

/** The log, counted and never kept. */
function countedLog(): { readonly log: ReturnType<typeof createLogger>; readonly lines: number; readonly bytes: number; readonly longest: number } {
  const counts = { lines: 0, bytes: 0, longest: 0 };
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.length > 0) {
        counts.lines++;
        counts.longest = Math.max(counts.longest, l.length);
      }
      counts.bytes += chunk.length;
      done();
    },
  });
  const log = createLogger({ destination: sink, format: 'json' });
  return { log, get lines() { return counts.lines; }, get bytes() { return counts.bytes; }, get longest() { return counts.longest; } };
}

/** The join-token holder's writes, the kinds in turn; returns the bytes written. */
async function writeHostile(joiner: Etcd3, keys: ClusterKeys): Promise<number> {
  const big = 'r'.repeat(valueKb * 1000);
  let written = 0;
  for (let i = 0; i < writes; i++) {
    const kind = kinds[i % kinds.length];
    const id = i.toString(16).padStart(32, '0');
    let key: string;
    let value: string;
    if (kind === 'rewrite') {
      key = keys.joinOf('e'.repeat(32));
      value = JSON.stringify({ schema: 1, id: 'e'.repeat(32), role: `${i}${big}`, ip: '10.240.0.41' });
    } else if (kind === 'keys') {
      key = keys.joinOf(id);
      value = JSON.stringify({ schema: 1, id, role: 'minion', ip: `10.240.0.${i % 256}; reboot`, hostname: `h${i}`, bootId: 'b'.repeat(32), announcedAt: '2026-01-01T00:00:00Z' });
    } else if (kind === 'deep') {
      key = keys.joinOf(id);
      value = `{"schema":${'['.repeat(5_000)}${']'.repeat(5_000)}}`;
    } else {
      key = keys.joinOf(id);
      value = JSON.stringify({ schema: 1, id, role: 'minion', ip: '169.254.169.254', hostname: `h${i}`, bootId: 'b'.repeat(32), sshHostKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkHostKeyOfAStandInMachine0000000', nonceDigest: 'd'.repeat(64), announcedAt: '2026-01-01T00:00:00Z' });
    }
    // (an overlord that makes etcd users for these requests changes etcd's auth revision meanwhile)
    await retryStaleAuth(() => joiner.put(key).value(value).exec());
    written += value.length + key.length;
  }
  return written;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench:hostile: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
