import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { EtcdHealth, healthReport, leadershipHealth, observedStore } from '../../../overlord/availability/health.ts';
import { createLogger } from '../../../overlord/edges/log.ts';
import { FakeClock, MemoryStore } from './fakes.ts';

function logLines() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _e, done) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger({ format: 'json', destination }), lines };
}

const down = new CorekubeError('E_ETCD', 'list /corekube/t/machines/: etcd at http://127.0.0.1:2379 did not answer (connect ECONNREFUSED)', { retryable: true, hint: 'check that etcd is running' });

describe('etcd health', () => {
  it('is down from the first failure to the next answer, and logs one error once down past the budget', async () => {
    const clock = new FakeClock();
    const { log, lines } = logLines();
    const health = new EtcdHealth(clock, log, 30_000);
    expect(health.state()).toEqual({ etcd: 'ok', downForMs: 0, overBudget: false, lastError: null });
    health.failed(down);
    await clock.advance(10_000);
    health.failed(down);
    expect(health.state()).toMatchObject({ etcd: 'down', downForMs: 10_000, overBudget: false });
    expect(lines.filter((l) => l.event === 'etcd.unreachable')).toEqual([]);
    await clock.advance(25_000);
    expect(health.state()).toMatchObject({ etcd: 'down', downForMs: 35_000, overBudget: true, lastError: down.message });
    const errors = lines.filter((l) => l.event === 'etcd.unreachable');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ level: 50, code: 'E_ETCD', reason: down.message, budgetMs: 30_000 });
    expect(String(errors[0]!.msg)).toContain('keeps retrying');
    await clock.advance(60_000);
    expect(lines.filter((l) => l.event === 'etcd.unreachable')).toHaveLength(1);

    health.answered();
    expect(health.state()).toEqual({ etcd: 'ok', downForMs: 0, overBudget: false, lastError: null });
    expect(lines.filter((l) => l.event === 'etcd.reachable')).toHaveLength(1);
    health.close();
  });

  it('counts a store call that etcd answered, even with a refusal, as an answer', async () => {
    const clock = new FakeClock();
    const health = new EtcdHealth(clock, logLines().log, 1_000);
    const store = new MemoryStore();
    const watched = observedStore(store, health);
    store.down = true;
    await expect(watched.get('/x')).rejects.toMatchObject({ code: 'E_ETCD' });
    expect(health.state().etcd).toBe('down');
    store.down = false;
    await watched.put('/x', '1');
    await expect(watched.put('/x', '2', { expectModRevision: '0' })).rejects.toMatchObject({ code: 'E_ETCD_CONFLICT' });
    expect(health.state().etcd).toBe('ok');
    expect(await watched.get('/x')).toMatchObject({ value: '1' });
    health.close();
  });

  it('answers 200 with the role and the leader, and 503 once etcd is down past the budget', () => {
    const ok = healthReport({ id: 'b', role: 'standby', leader: 'a', etcd: { etcd: 'ok', downForMs: 0, overBudget: false, lastError: null } });
    expect(ok).toEqual({ status: 200, body: { role: 'standby', id: 'b', leader: 'a', etcd: 'ok' } });
    const shortly = healthReport({ id: 'a', role: 'leader', leader: 'a', etcd: { etcd: 'down', downForMs: 2_000, overBudget: false, lastError: 'x' }, machines: { total: 3, deployed: 1, failed: 0 } });
    expect(shortly.status).toBe(200);
    expect(shortly.body).toMatchObject({ etcd: 'down', etcdDownForMs: 2_000, machines: { total: 3, deployed: 1, failed: 0 } });
    const long = healthReport({ id: 'a', role: 'standby', leader: null, etcd: { etcd: 'down', downForMs: 61_000, overBudget: true, lastError: 'connect ECONNREFUSED' } });
    expect(long).toEqual({ status: 503, body: { role: 'standby', id: 'a', leader: null, etcd: 'down', etcdDownForMs: 61_000, error: 'etcd unreachable for 61 s: connect ECONNREFUSED' } });
  });

  it('does not let an unreachable etcd hang the health check of a standby', async () => {
    const report = await leadershipHealth(
      { id: 'b', role: () => 'standby', overlord: () => undefined },
      { leader: () => new Promise<string | null>(() => undefined) },
      { state: () => ({ etcd: 'down', downForMs: 5, overBudget: false, lastError: 'x' }) },
      20,
    );
    expect(report.body).toMatchObject({ role: 'standby', leader: null, etcd: 'down' });
  });
});
