/**
 * Heat wait-condition signals from the overlord (overlord/edges/heat-signal.ts): the files cloud-config writes,
 * the request Heat expects, retries of transient failures on a fake clock, and no token in any log line
 * or error. The same client against a real local HTTP server: test/integration/discovery-trust-boot.test.ts.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { findSecrets } from '../../../core/secrets.ts';
import { readHeatHandle, sendHeatSignal, signalBody, signalOnce } from '../../../overlord/edges/heat-signal.ts';
import { FakeClock, flush } from './fakes.ts';
import { captureLog } from '../../harness/log-capture.ts';

const TOKEN = 'gAAAAABheattoken-0123456789abcdefXYZ';
const URL_ = 'http://heat.example:8000/v1/signal/arn%3Aopenstack%3Aheat%3A%3Aproject%3Astacks/demo/overlord_ready_handle?Timestamp=1&Signature=s3cr3t';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function files(url: string, header: string) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corekube-heat-'));
  dirs.push(dir);
  writeFileSync(path.join(dir, 'ready.url'), url);
  writeFileSync(path.join(dir, 'ready.header'), header, { mode: 0o600 });
  return { url: path.join(dir, 'ready.url'), header: path.join(dir, 'ready.header') };
}


/** A fetch that answers with the given statuses in turn and records every request. */
function fakeFetch(statuses: (number | 'unreachable')[]) {
  const requests: { url: string; method: string; headers: Record<string, string>; body: string }[] = [];
  const f = (async (input: string | URL | Request, init?: RequestInit) => {
    const headers = Object.fromEntries(Object.entries((init?.headers ?? {}) as Record<string, string>).map(([k, v]) => [k.toLowerCase(), v]));
    requests.push({ url: String(input), method: init?.method ?? 'GET', headers, body: String(init?.body) });
    const status = statuses.shift() ?? 200;
    if (status === 'unreachable') throw new TypeError('fetch failed');
    return new Response(status === 200 ? '' : '{"error":"no"}', { status });
  }) as typeof fetch;
  return { fetch: f, requests };
}

describe('Heat signal files', () => {
  it('read the handle URL and the token of the X-Auth-Token header line', async () => {
    const handle = await readHeatHandle(files(`${URL_}\n`, `X-Auth-Token: ${TOKEN}\n`));
    expect(handle).toEqual({ url: URL_, token: TOKEN });
  });

  it('mean "nothing to signal" when the URL file is empty (booted by hand)', async () => {
    expect(await readHeatHandle(files('\n', 'X-Auth-Token: \n'))).toBeUndefined();
  });

  it('are refused, without quoting the token, when the header line is not an X-Auth-Token', async () => {
    const err = (await readHeatHandle(files(URL_, `Authorization: ${TOKEN}\n`)).catch((e: unknown) => e)) as CorekubeError;
    expect(err).toBeInstanceOf(CorekubeError);
    expect(err.code).toBe('E_HEAT');
    expect(findSecrets(`${err.message} ${err.hint}`, { values: [TOKEN] })).toEqual([]);
  });
});

describe('sending a Heat signal', () => {
  const signal = { status: 'SUCCESS' as const, reason: 'overlord key pair and discovery CA made', id: 'overlord', data: 'c3NoLWVkMjU1MTk=:LS0tLS1CRUdJTg==' };

  it('POSTs the JSON body Heat expects with the token header, once, when Heat accepts it', async () => {
    const f = fakeFetch([200]);
    const { log, text } = captureLog();
    await sendHeatSignal({ url: URL_, token: TOKEN }, signal, { clock: new FakeClock(), log, fetch: f.fetch });
    expect(f.requests).toHaveLength(1);
    const [req] = f.requests;
    expect(req).toMatchObject({ url: URL_, method: 'POST' });
    expect(req!.headers['x-auth-token']).toBe(TOKEN);
    expect(req!.headers['content-type']).toBe('application/json');
    expect(JSON.parse(req!.body)).toEqual({ status: 'SUCCESS', reason: signal.reason, id: 'overlord', data: signal.data });
    expect(req!.body).toBe(signalBody(signal));
    expect(text()).toContain('"event":"heat.signalled"');
    // neither the token nor the URL's signature reach the log
    expect(findSecrets(text(), { values: [TOKEN, 's3cr3t'] })).toEqual([]);
  });

  it('retries while Heat is unreachable or answers 5xx/429, with a growing backoff, then succeeds', async () => {
    const f = fakeFetch(['unreachable', 503, 429, 200]);
    const clock = new FakeClock();
    const { log, text } = captureLog();
    const t0 = clock.now();
    let done = false;
    const sending = sendHeatSignal({ url: URL_, token: TOKEN }, signal, { clock, log, fetch: f.fetch, backoff: { initialMs: 1_000, maxMs: 60_000 } }).then(() => {
      done = true;
    });
    await clock.runUntil(() => done);
    await sending;
    expect(f.requests).toHaveLength(4);
    expect(clock.now() - t0).toBe(1_000 + 2_000 + 4_000);
    expect(text().match(/"event":"heat.signal-retry"/g)).toHaveLength(3);
    expect(findSecrets(text(), { values: [TOKEN, 's3cr3t'] })).toEqual([]);
  });

  it('gives up at once on a refusal (4xx): asking again cannot help', async () => {
    const f = fakeFetch([404]);
    const { log, text } = captureLog();
    const err = (await sendHeatSignal({ url: URL_, token: TOKEN }, signal, { clock: new FakeClock(), log, fetch: f.fetch }).catch((e: unknown) => e)) as CorekubeError;
    expect(err).toBeInstanceOf(CorekubeError);
    expect(err).toMatchObject({ code: 'E_HEAT', retryable: false });
    expect(err.message).toContain('HTTP 404');
    expect(f.requests).toHaveLength(1);
    expect(findSecrets(`${err.message} ${err.hint} ${text()}`, { values: [TOKEN, 's3cr3t'] })).toEqual([]);
  });

  it('stops waiting when its signal aborts (SIGTERM while booting)', async () => {
    const f = fakeFetch([503, 503, 503]);
    const clock = new FakeClock();
    const stop = new AbortController();
    const sending = sendHeatSignal({ url: URL_, token: TOKEN }, signal, { clock, log: captureLog().log, fetch: f.fetch, signal: stop.signal }).catch((e: unknown) => e);
    await flush();
    stop.abort(new Error('stopped'));
    expect(((await sending) as Error).message).toBe('stopped');
  });
});

describe('signalling once (overlord_ready, cluster_ready)', () => {
  const ready = { status: 'SUCCESS' as const, reason: '1 masters and 3 minions deployed', id: 'overlord', data: '1 masters and 3 minions deployed' };

  it('sends a signal once: a restarted overlord, or a new leader term, finds the marker and sends nothing', async () => {
    const signalFiles = files(URL_, `X-Auth-Token: ${TOKEN}\n`);
    const stateDir = path.dirname(signalFiles.url);
    const marker = path.join(stateDir, 'heat', 'cluster-ready.sent');
    const f = fakeFetch([200, 200]);
    const deps = { clock: new FakeClock(), log: captureLog().log, fetch: f.fetch, stateDir };
    expect(await signalOnce(signalFiles, marker, ready, deps)).toBe('sent');
    expect(await signalOnce(signalFiles, marker, ready, deps)).toBe('already-sent');
    expect(f.requests).toHaveLength(1);
    expect((statSync(marker).mode & 0o777).toString(8)).toBe('600');
    // a different signal (another stack's handle, other data) is sent
    expect(await signalOnce(signalFiles, marker, { ...ready, data: 'other' }, deps)).toBe('sent');
    expect(f.requests).toHaveLength(2);
  });

  it('sends nothing and writes no marker when booted by hand (no URL)', async () => {
    const signalFiles = files('', '');
    const marker = path.join(path.dirname(signalFiles.url), 'heat', 'cluster-ready.sent');
    const f = fakeFetch([]);
    expect(await signalOnce(signalFiles, marker, ready, { clock: new FakeClock(), log: captureLog().log, fetch: f.fetch, stateDir: path.dirname(signalFiles.url) })).toBe('no-handle');
    expect(f.requests).toHaveLength(0);
    expect(() => statSync(marker)).toThrow();
  });

  it('writes no marker when Heat refused the signal, so the next start tries again', async () => {
    const signalFiles = files(URL_, `X-Auth-Token: ${TOKEN}\n`);
    const stateDir = path.dirname(signalFiles.url);
    const marker = path.join(stateDir, 'heat', 'cluster-ready.sent');
    const f = fakeFetch([403, 200]);
    const deps = { clock: new FakeClock(), log: captureLog().log, fetch: f.fetch, stateDir };
    await expect(signalOnce(signalFiles, marker, ready, deps)).rejects.toMatchObject({ code: 'E_HEAT' });
    expect(await signalOnce(signalFiles, marker, ready, deps)).toBe('sent');
  });
});
