/**
 * Heat stack statuses (`<ACTION>_<STATE>`) and the polling policy of a wait, as pure functions.
 */
export type StackAction = 'CREATE' | 'UPDATE' | 'DELETE' | 'SUSPEND' | 'RESUME' | 'CHECK' | 'SNAPSHOT' | 'RESTORE';

export interface ParsedStatus {
  readonly action: string;
  readonly state: 'IN_PROGRESS' | 'COMPLETE' | 'FAILED' | string;
}

export function parseStatus(status: string): ParsedStatus {
  const m = /^([A-Z]+)_(IN_PROGRESS|COMPLETE|FAILED)$/.exec(status);
  return m ? { action: m[1]!, state: m[2]! } : { action: status, state: '' };
}

/**
 * Whether `status` ends `action`: its own COMPLETE/FAILED, or — after a failed create or update with
 * rollback enabled — the rollback's end.
 */
export function isTerminalFor(status: string, action: StackAction): boolean {
  const { action: a, state } = parseStatus(status);
  if (state !== 'COMPLETE' && state !== 'FAILED') return false;
  if (a === action) return true;
  return a === 'ROLLBACK' && (action === 'CREATE' || action === 'UPDATE');
}

/** Whether the stack reached what `action` wanted (a completed rollback is still a failure of the action). */
export function isSuccessFor(status: string, action: StackAction): boolean {
  return status === `${action}_COMPLETE`;
}

export const MIN_POLL_MS = 1_000;
export const MAX_POLL_MS = 5_000;

/**
 * Delay before the next poll: 1 s right after something happened (events tend to come in bursts),
 * growing ×1.5 up to 5 s while nothing changes. Never a tight loop: the first delay is 1 s too.
 */
export function nextDelay(previousMs: number, sawNews: boolean): number {
  if (sawNews || previousMs <= 0) return MIN_POLL_MS;
  return Math.min(MAX_POLL_MS, Math.round(previousMs * 1.5));
}
