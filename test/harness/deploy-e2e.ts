import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Etcd3 } from 'etcd3';
import { clusterKeys } from '../../contracts/keys.ts';
import type { LedgerEntry } from '../../contracts/ledger-entry.ts';
import type { Role } from '../../contracts/roles.ts';
import type { Machine } from './machines.ts';
import { deployedOnce, testUnitNames, unitFacts, type UnitFacts } from './test-units.ts';

/**
 * What the e2e tests of the overlord's deploy mechanics share (test/e2e/overlord-deploy.test.ts,
 * overlord-faults.test.ts): machines announced as their announce script announces them, the ledger read from
 * etcd, `corekube overlord` deploying the test units (test-units.ts, through units-mock.mjs), and what is wrong
 * with a machine that should be deployed with every unit started exactly once — read from systemd and sudo's
 * log on the machine, never from the overlord's own account.
 */
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = path.join(REPO, 'bin/corekube.js');
const UNITS_MOCK = path.join(REPO, 'test/harness/units-mock.mjs');

/** `corekube overlord ARGS…` as an operator runs it, deploying the test units; stdout and stderr piped. */
export function overlordProcess(args: readonly string[]): ChildProcess {
  return spawn(process.execPath, ['--import', UNITS_MOCK, CLI, 'overlord', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** What a node's announce script writes: its record, with its host key pinned unless `pin` is false. */
export async function announce(client: Etcd3, cluster: string, m: Machine, role: Role, pin = true): Promise<void> {
  const bootId = (await m.exec(['cat', '/proc/sys/kernel/random/boot_id'])).stdout.trim();
  const record = { schema: 1, id: m.id, role, ip: m.ip, hostname: m.hostname, bootId, announcedAt: new Date().toISOString(), ...(pin ? { sshHostKey: m.hostKey } : {}) };
  await client.put(clusterKeys(cluster).machine(m.id)).value(JSON.stringify(record));
}

export async function readLedger(client: Etcd3, cluster: string): Promise<Map<string, LedgerEntry>> {
  const prefix = clusterKeys(cluster).ledger;
  const kvs = await client.getAll().prefix(prefix).strings();
  return new Map(Object.entries(kvs).map(([k, v]) => [k.slice(prefix.length), JSON.parse(v) as LedgerEntry]));
}

export const ledgerText = (l: Map<string, LedgerEntry>) => [...l.values()].map((e) => `${e.hostname}: ${e.state} ${e.error ?? ''}`).join('\n');

export const doneSteps = (l: Map<string, LedgerEntry>) => [...l.values()].reduce((n, e) => n + Object.values(e.steps).filter((s) => s.state === 'done').length, 0);

/** machine id → the step the ledger shows in flight on it */
export const inFlight = (l: Map<string, LedgerEntry>) =>
  new Map([...l.values()].flatMap((e) => Object.entries(e.steps).filter(([, s]) => s.state === 'in-flight').map(([step]) => [e.id, step] as [string, string])));

/** steps of a machine of `role`: write-units, daemon-reload and a start a unit */
export const stepCount = (role: Role) => 2 + testUnitNames(role).length;

/** A fault struck: the facts of every unit whose start step the ledger shows done, per machine id. */
export async function doneUnitFacts(machines: readonly { readonly machine: Machine; readonly role: Role }[], ledger: Map<string, LedgerEntry>): Promise<Map<string, Record<string, UnitFacts>>> {
  const out = new Map<string, Record<string, UnitFacts>>();
  for (const { machine, role } of machines) {
    const steps = ledger.get(machine.id)?.steps ?? {};
    out.set(machine.id, await unitFacts(machine, testUnitNames(role).filter((u) => steps[`start:${u}`]?.state === 'done')));
  }
  return out;
}

export interface OnceOptions {
  /** facts of the units that were done when a fault struck: each must still be that same run */
  readonly before?: Record<string, UnitFacts>;
  /** how often write-units and daemon-reload may have run again: a fault caught that very step in flight */
  readonly redone?: { readonly 'write-units': number; readonly 'daemon-reload': number };
}

/**
 * What is wrong with a machine that should be deployed with each unit started exactly once in this boot (empty
 * when nothing is): a unit not running (the oneshot: not exited), started more than once or restarted, not
 * enabled, or no longer the run it was when a fault struck; write-units or daemon-reload run more often than
 * once (plus once for each fault that caught that very step in flight), counted from sudo's log.
 */
export async function notDeployedOnce(m: Machine, role: Role, options: OnceOptions = {}): Promise<string[]> {
  const problems: string[] = [];
  const facts = await unitFacts(m, testUnitNames(role));
  for (const [unit, f] of Object.entries(facts)) {
    for (const [k, want] of Object.entries(deployedOnce(unit))) {
      const got = f[k as keyof UnitFacts];
      if (got !== want) problems.push(`${unit}: ${k} ${String(got)}, expected ${String(want)}`);
    }
    const before = options.before?.[unit];
    if (before && (before.invocationId !== f.invocationId || before.startedAt !== f.startedAt)) {
      problems.push(`${unit}: run ${f.invocationId} (main process started at ${f.startedAt}), but it was run ${before.invocationId} (${before.startedAt}) when it was done`);
    }
  }
  const sudo = (await m.exec(['journalctl', '-b', '_COMM=sudo', '-o', 'cat', '--no-pager'])).stdout;
  const perFile = [...sudo.matchAll(/corekube-write-file (\S+) /g)].reduce((c, [, f]) => c.set(f!, (c.get(f!) ?? 0) + 1), new Map<string, number>());
  const counts = {
    'write-units': Math.max(0, ...perFile.values()),
    'daemon-reload': sudo.split('\n').filter((l) => l.endsWith('COMMAND=/usr/bin/systemctl daemon-reload')).length,
  };
  for (const step of ['write-units', 'daemon-reload'] as const) {
    const most = 1 + (options.redone?.[step] ?? 0);
    if (counts[step] < 1 || counts[step] > most) problems.push(`${step} ran ${counts[step]} times, expected 1${most > 1 ? ` to ${most}` : ''}`);
  }
  return problems;
}
