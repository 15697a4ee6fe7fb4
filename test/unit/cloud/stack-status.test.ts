import { describe, expect, it } from 'vitest';
import { isSuccessFor, isTerminalFor, MAX_POLL_MS, MIN_POLL_MS, nextDelay, parseStatus } from '../../../cloud/stack-status.ts';

describe('stack statuses', () => {
  it('splits ACTION_STATE, also for IN_PROGRESS', () => {
    expect(parseStatus('CREATE_IN_PROGRESS')).toEqual({ action: 'CREATE', state: 'IN_PROGRESS' });
    expect(parseStatus('ROLLBACK_COMPLETE')).toEqual({ action: 'ROLLBACK', state: 'COMPLETE' });
  });

  it('ends an action on its own COMPLETE or FAILED, or a rollback\'s end after a create or update', () => {
    expect(isTerminalFor('CREATE_COMPLETE', 'CREATE')).toBe(true);
    expect(isTerminalFor('CREATE_FAILED', 'CREATE')).toBe(true);
    expect(isTerminalFor('ROLLBACK_COMPLETE', 'UPDATE')).toBe(true);
    expect(isTerminalFor('ROLLBACK_COMPLETE', 'DELETE')).toBe(false);
    expect(isTerminalFor('CREATE_IN_PROGRESS', 'CREATE')).toBe(false);
    expect(isTerminalFor('INIT_COMPLETE', 'CREATE')).toBe(false);
    expect(isTerminalFor('CREATE_COMPLETE', 'UPDATE')).toBe(false);
  });

  it('counts only the action\'s own COMPLETE as success', () => {
    expect(isSuccessFor('UPDATE_COMPLETE', 'UPDATE')).toBe(true);
    expect(isSuccessFor('ROLLBACK_COMPLETE', 'UPDATE')).toBe(false);
  });
});

describe('polling backoff', () => {
  it('starts at 1 s, grows ×1.5 while nothing happens, caps at 5 s, and drops to 1 s on news', () => {
    const quiet: number[] = [];
    let d = 0;
    for (let i = 0; i < 7; i++) quiet.push((d = nextDelay(d, false)));
    expect(quiet).toEqual([1000, 1500, 2250, 3375, 5000, 5000, 5000]);
    expect(nextDelay(5000, true)).toBe(MIN_POLL_MS);
    expect(Math.max(...quiet)).toBe(MAX_POLL_MS);
  });
});
