/**
 * etcd refuses a request checked against an older auth revision ("revision of auth store is old") before
 * applying it — every user the overlord makes as it admits a machine bumps the revision. The store sends such a
 * request again (overlord/edges/etcd-store.ts retryStaleAuth); anything else goes up at once.
 */
import { describe, expect, it } from 'vitest';
import { isStaleAuth, retryStaleAuth } from '../../../overlord/edges/etcd-store.ts';

const stale = () => new Error('3 INVALID_ARGUMENT: etcdserver: revision of auth store is old');

describe('a request etcd refused for a stale auth revision', () => {
  it('is sent again until etcd takes it', async () => {
    let calls = 0;
    const result = await retryStaleAuth(async () => {
      calls++;
      if (calls < 4) throw stale();
      return 'taken';
    });
    expect(result).toBe('taken');
    expect(calls).toBe(4);
  });

  it('goes up after 16 refusals in a row', async () => {
    let calls = 0;
    await expect(retryStaleAuth(async () => {
      calls++;
      throw stale();
    })).rejects.toThrow(/auth store is old/);
    expect(calls).toBe(16);
  });

  it('is the only refusal sent again: a permission denied goes up at once', async () => {
    let calls = 0;
    await expect(retryStaleAuth(async () => {
      calls++;
      throw new Error('7 PERMISSION_DENIED: etcdserver: permission denied');
    })).rejects.toThrow(/permission denied/);
    expect(calls).toBe(1);
    expect(isStaleAuth(stale())).toBe(true);
    expect(isStaleAuth('revision of auth store is old')).toBe(false);
  });
});
