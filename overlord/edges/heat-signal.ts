import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { CorekubeError } from '../../core/errors.ts';
import { BACKOFF, retry, type Backoff } from '../../core/retry.ts';
import type { Clock } from '../../core/clock.ts';
import { errorFields, type Logger } from './log.ts';
import { writeFileAtomic } from '../../core/private-files.ts';

/**
 * Heat wait-condition signals from the overlord (overlord_ready, cluster_ready): the same request the
 * machines' `corekube-heat-signal` script sends — POST `{"status":"SUCCESS","reason":…,"id":…,"data":…}` to
 * the handle's `endpoint` with `X-Auth-Token: <token>`. The URL and the header come from the files the
 * overlord server's cloud-config wrote (cloud-config/overlord-config.ts `files.*Signal`): the URL file holds
 * one line, empty when the machine was booted by hand (nothing to signal); the header file (0600) holds
 * `X-Auth-Token: <token>`.
 *
 * The token is read here, sent in the header and nowhere else: no log line, no error message carries it.
 * Transient failures (no answer, 5xx, 408, 429) are retried with a growing backoff until the signal aborts;
 * any other answer is E_HEAT, terminal (a 4xx will not heal by asking again).
 */
export interface SignalFiles {
  readonly url: string;
  readonly header: string;
}

export interface HeatHandle {
  readonly url: string;
  /** never log it */
  readonly token: string;
}

export interface HeatSignal {
  readonly status: 'SUCCESS' | 'FAILURE';
  readonly reason: string;
  /** the key of `data` in the wait condition's data attribute: {"<id>": "<data>"} */
  readonly id: string;
  readonly data: string;
}

export interface SignalDeps {
  readonly clock: Clock;
  readonly log: Logger;
  readonly signal?: AbortSignal;
  /** default: the global fetch */
  readonly fetch?: typeof fetch;
  /** between attempts; default BACKOFF.heat */
  readonly backoff?: Backoff;
  /** give up after this many attempts (default: never, until the signal aborts) */
  readonly maxAttempts?: number;
  /** one request's deadline (default 30 s) */
  readonly requestTimeoutMs?: number;
}

const HEADER = /^X-Auth-Token:[ \t]*([!-~]+)[ \t]*$/i;

/**
 * The handle described by the files, or undefined when the URL file is empty (booted by hand: there is no
 * stack waiting). A URL without its token is E_HEAT: signalling without it can only fail.
 */
export async function readHeatHandle(files: SignalFiles): Promise<HeatHandle | undefined> {
  const url = (await readText(files.url)).trim();
  if (url === '') return undefined;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CorekubeError('E_HEAT', `${files.url} does not hold a URL`, { hint: 'it must hold the wait-condition handle endpoint (one line), or nothing' });
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new CorekubeError('E_HEAT', `${files.url} holds a ${parsed.protocol} URL`, { hint: 'a Heat signal URL is http(s)' });
  }
  const header = (await readText(files.header)).split('\n').find((l) => l.trim() !== '') ?? '';
  const m = HEADER.exec(header.trim());
  if (!m) {
    throw new CorekubeError('E_HEAT', `${files.header} does not hold an "X-Auth-Token: <token>" line`, {
      hint: 'the overlord server\'s user_data writes it from the wait-condition handle\'s token',
    });
  }
  return Object.freeze({ url, token: m[1]! });
}

/** The request body Heat's WaitConditionHandle expects (the same JSON as corekube-heat-signal's). */
export function signalBody(s: HeatSignal): string {
  return JSON.stringify({ status: s.status, reason: s.reason, id: s.id, data: s.data });
}

/** Sends one signal, retrying transient failures; resolves once Heat accepted it (2xx). */
export async function sendHeatSignal(handle: HeatHandle, s: HeatSignal, deps: SignalDeps): Promise<void> {
  const target = safeUrl(handle.url);
  const attempt = await retry((n) => postSignal(handle, s, deps).then(() => n), {
    policy: { ...(deps.backoff ?? BACKOFF.heat), retries: deps.maxAttempts === undefined ? Infinity : deps.maxAttempts - 1 },
    clock: deps.clock,
    ...(deps.signal ? { signal: deps.signal } : {}),
    onRetry: (e, n, delay) => deps.log.warn({ event: 'heat.signal-retry', id: s.id, url: target, attempt: n, nextRetryMs: delay, ...errorFields(e) }, 'signalling Heat failed; retrying'),
  });
  deps.log.info({ event: 'heat.signalled', id: s.id, url: target, attempt }, `Heat wait condition signalled (${s.status})`);
}

/** One POST of the signal: resolves on 2xx; E_HEAT otherwise, retryable when Heat may take it later. */
async function postSignal(handle: HeatHandle, s: HeatSignal, deps: SignalDeps): Promise<void> {
  const target = safeUrl(handle.url);
  let res: Response;
  try {
    const timeout = AbortSignal.timeout(deps.requestTimeoutMs ?? 30_000);
    res = await (deps.fetch ?? fetch)(handle.url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-Auth-Token': handle.token },
      body: signalBody(s),
      signal: deps.signal ? AbortSignal.any([deps.signal, timeout]) : timeout,
    });
  } catch (err) {
    if (deps.signal?.aborted) throw deps.signal.reason;
    throw new CorekubeError('E_HEAT', `cannot reach Heat at ${target}: ${(err as Error).message ?? String(err)}`, {
      retryable: true,
      hint: 'check that the overlord can reach the Heat API (the endpoint in the signal URL file)',
    });
  }
  // the body is read only to free the connection; Heat's answers hold no secret but are not logged either
  await res.arrayBuffer().catch(() => undefined);
  if (res.ok) return;
  const transient = res.status >= 500 || res.status === 408 || res.status === 429;
  throw new CorekubeError('E_HEAT', `Heat answered HTTP ${res.status} to the signal at ${target}`, {
    retryable: transient,
    hint: transient
      ? 'Heat is busy or restarting; the overlord retries'
      : 'the wait-condition handle refused the signal: check that the stack still exists and its handle token is current',
  });
}

/**
 * Sends a signal once: a marker file (0600, under `stateDir`) records what was sent — a hash of the handle URL,
 * id and data — after Heat accepted it, and the same signal is not sent again (a restarted overlord, a new
 * leader's term). A crash between Heat's answer and the marker sends it again, which Heat takes as the same
 * signal (same id). No handle (booted by hand): nothing is sent.
 */
export async function signalOnce(files: SignalFiles, markerFile: string, s: HeatSignal, deps: SignalDeps & { readonly stateDir: string }): Promise<'sent' | 'already-sent' | 'no-handle'> {
  const handle = await readHeatHandle(files);
  if (handle === undefined) {
    deps.log.info({ event: 'heat.no-handle', file: files.url }, 'no wait-condition URL (booted by hand): nothing to signal');
    return 'no-handle';
  }
  const fingerprint = createHash('sha256').update(`${handle.url}\0${s.id}\0${s.data}`).digest('hex');
  const sent = await readFile(markerFile, 'utf8').catch(() => '');
  if (sent.trim() === fingerprint) {
    deps.log.info({ event: 'heat.already-signalled', id: s.id, url: safeUrl(handle.url) }, 'this wait condition was signalled before');
    return 'already-sent';
  }
  await sendHeatSignal(handle, s, deps);
  await writeFileAtomic(markerFile, `${fingerprint}\n`, { root: deps.stateDir });
  return 'sent';
}

/** The URL without query or credentials, for logs and errors (a signal URL may carry a signature). */
function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CorekubeError('E_IO', `cannot read ${file} (${code ?? 'error'})`, {
      hint: 'the overlord server\'s cloud-config writes it; the container mounts /etc/corekube read-only',
    });
  }
}
