import type { LedgerEntry } from '../../contracts/ledger-entry.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import { ROLE_TRAITS, type Role } from '../../contracts/roles.ts';
import type { MachinePlan } from './planner.ts';

/** Where the deployment stands: what `corekube demo`, the log's summary line and the cluster-ready check read. */
export interface Summary {
  readonly total: number;
  readonly deployed: number;
  readonly deploying: number;
  readonly waiting: number;
  readonly failed: readonly { readonly id: string; readonly hostname: string; readonly reason: string }[];
  readonly invalid: number;
  /** "3/4 machines deployed, 1 failed: …" */
  readonly text: string;
}

export interface SummaryInput {
  readonly plans: readonly MachinePlan[];
  /** machines a worker is on */
  readonly running: ReadonlySet<string> | ReadonlyMap<string, unknown>;
  readonly records: ReadonlyMap<string, MachineRecord>;
  readonly ledger: (id: string) => LedgerEntry | null;
  /** records refused, and those beyond the memory of refusals */
  readonly invalid: number;
}

/** PURE: the summary of the last plans. */
export function summarize(input: SummaryInput): Summary {
  let deployed = 0;
  let deploying = 0;
  let waiting = 0;
  const failed: { id: string; hostname: string; reason: string }[] = [];
  for (const p of input.plans) {
    if (input.running.has(p.id)) deploying++;
    else if (p.action === 'none' && p.state === 'deployed') deployed++;
    else if ((p.action === 'none' && p.state === 'failed') || p.action === 'fail' || (p.action === 'deploy' && p.reason === 'retry')) {
      failed.push({ id: p.id, hostname: input.records.get(p.id)?.hostname ?? p.id, reason: input.ledger(p.id)?.error ?? (p.action === 'fail' ? p.reason : 'failed') });
    } else if (p.action === 'wait') waiting++;
    else deploying++;
  }
  const total = input.plans.length;
  const parts = [`${deployed}/${total} machines deployed`];
  if (deploying > 0) parts.push(`${deploying} deploying`);
  if (waiting > 0) parts.push(`${waiting} waiting`);
  let text = parts.join(', ');
  if (failed.length > 0) text += `, ${failed.length} failed: ${failed.map((f) => `${f.hostname} (${firstLine(f.reason)})`).join('; ')}`;
  if (input.invalid > 0) text += `; ${input.invalid} invalid record${input.invalid === 1 ? '' : 's'} skipped`;
  return { total, deployed, deploying, waiting, failed, invalid: input.invalid, text };
}

/** PURE: how many machines of each role are deployed and idle, from the last plans. */
export function deployedByRole(plans: readonly MachinePlan[], running: ReadonlyMap<string, unknown>): { readonly controlPlane: number; readonly others: number } {
  let controlPlane = 0;
  let others = 0;
  for (const p of plans) {
    if (p.action === 'none' && p.state === 'deployed' && !running.has(p.id)) {
      if (ROLE_TRAITS[p.role as Role].controlPlane) controlPlane++;
      else others++;
    }
  }
  return { controlPlane, others };
}

export function firstLine(text: string): string {
  return text.split('\n')[0] ?? text;
}

export function formatMs(ms: number): string {
  return ms < 1_000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`;
}
