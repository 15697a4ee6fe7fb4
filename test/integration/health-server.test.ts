/**
 * The overlord's /healthz endpoint over a real socket on 127.0.0.1 (what the image's HEALTHCHECK and an
 * operator's curl see); the overlord-level cases (503 while etcd is away, the role after a failover) run in
 * test/e2e/overlord-faults.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startHealthServer, type HealthServer } from '../../overlord/availability/health-server.ts';
import { healthReport, type HealthReport } from '../../overlord/availability/health.ts';

describe('health endpoint', () => {
  let server: HealthServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  const report = (overBudget: boolean): HealthReport =>
    healthReport({ id: 'a', role: 'leader', leader: 'a', etcd: { etcd: overBudget ? 'down' : 'ok', downForMs: overBudget ? 90_000 : 0, overBudget, lastError: overBudget ? 'connect ECONNREFUSED' : null } });

  it('answers GET /healthz with the report as JSON: 200 while etcd answers, 503 once it has been away past the budget', async () => {
    let down = false;
    server = await startHealthServer({ port: 0, report: () => report(down) });
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/healthz$/);
    const ok = await fetch(server.url);
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toBe('application/json');
    expect(await ok.json()).toEqual({ role: 'leader', id: 'a', leader: 'a', etcd: 'ok' });
    down = true;
    const bad = await fetch(server.url);
    expect(bad.status).toBe(503);
    expect(await bad.json()).toMatchObject({ etcd: 'down', etcdDownForMs: 90_000, error: 'etcd unreachable for 90 s: connect ECONNREFUSED' });
  });

  it('refuses other paths and methods, and reports a failing report as 500', async () => {
    let fail = false;
    server = await startHealthServer({
      port: 0,
      report: () => {
        if (fail) throw new Error('boom');
        return report(false);
      },
    });
    const base = server.url.replace('/healthz', '');
    expect((await fetch(`${base}/metrics`)).status).toBe(404);
    expect((await fetch(server.url, { method: 'POST' })).status).toBe(405);
    fail = true;
    expect((await fetch(server.url)).status).toBe(500);
  });

  it('says which port is taken when it cannot listen', async () => {
    server = await startHealthServer({ port: 0, report: () => report(false) });
    await expect(startHealthServer({ port: server.port, report: () => report(false) })).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringContaining(`127.0.0.1:${server.port}`) });
  });
});
