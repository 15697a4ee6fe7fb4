import { CorekubeError } from '../core/errors.ts';

/**
 * The one seam through which corekube talks HTTP to OpenStack: JSON in, JSON (or text) out, no redirects
 * followed (callers decide, see heat-client.ts), a timeout on every request. A network failure becomes a
 * retryable E_HEAT naming the service and URL; HTTP error statuses are returned, not thrown, so the
 * service adapter converts them once with the service's own error body (errors.ts).
 */
export interface HttpRequest {
  readonly method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent as JSON. */
  readonly body?: unknown;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /**
   * Sending it twice does no harm (GET, PUT and DELETE always; a POST only when its caller says so, e.g. asking
   * Keystone for a token): it is sent once more when the connection it went out on was closed under it.
   */
  readonly idempotent?: boolean;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Headers;
  /** Parsed JSON when the body is JSON, the text otherwise, null when empty. */
  readonly body: unknown;
}

export type Transport = (request: HttpRequest) => Promise<HttpResponse>;

const DEFAULT_TIMEOUT_MS = 60_000;

/** Node's fetch as a Transport. `service` names the far end in error messages ("Keystone", "Heat"). */
export function fetchTransport(service: string): Transport {
  return async (req) => {
    const headers: Record<string, string> = { Accept: 'application/json', ...req.headers };
    let body: string | undefined;
    if (req.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(req.body);
    }
    const timeout = AbortSignal.timeout(req.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    const signal = req.signal ? AbortSignal.any([req.signal, timeout]) : timeout;
    let res: Response;
    try {
      res = await fetch(req.url, { method: req.method, headers, body, redirect: 'manual', signal }).catch((cause: unknown) => {
        // a kept-alive connection the server closed as the request went out on it: once more, on a new one
        if (!closedUnder(cause) || signal.aborted || !(req.idempotent ?? IDEMPOTENT.has(req.method))) throw cause;
        return fetch(req.url, { method: req.method, headers, body, redirect: 'manual', signal });
      });
    } catch (cause) {
      throw networkError(service, req, cause, timeout.aborted);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (cause) {
      throw networkError(service, req, cause, timeout.aborted);
    }
    return { status: res.status, headers: res.headers, body: parseBody(text, res.headers.get('content-type')) };
  };
}

const IDEMPOTENT: ReadonlySet<HttpRequest['method']> = new Set(['GET', 'PUT', 'DELETE']);

/** The far end closed the connection before answering (undici's UND_ERR_SOCKET, or a reset). */
function closedUnder(cause: unknown): boolean {
  const code = (cause as { cause?: { code?: string } })?.cause?.code;
  return code === 'UND_ERR_SOCKET' || code === 'ECONNRESET';
}

function parseBody(text: string, contentType: string | null): unknown {
  if (text === '') return null;
  if (contentType?.includes('json') || /^\s*[[{"]|^\s*null\s*$/.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

function networkError(service: string, req: HttpRequest, cause: unknown, timedOut: boolean): CorekubeError {
  if (req.signal?.aborted) {
    return new CorekubeError('E_HEAT', `${service} ${req.method} ${redactUrl(req.url)} was cancelled`, { cause, retryable: false });
  }
  const reason = timedOut
    ? `no answer within ${Math.round((req.timeoutMs ?? DEFAULT_TIMEOUT_MS) / 1000)} s`
    : describeCause(cause);
  return new CorekubeError('E_HEAT', `${service} ${req.method} ${redactUrl(req.url)} failed: ${reason}`, {
    hint: `check that ${new URL(req.url).origin} is reachable from here (OS_AUTH_URL, the catalog's endpoints, proxies, firewall)`,
    retryable: true,
    cause,
  });
}

function describeCause(cause: unknown): string {
  const inner = (cause as { cause?: { code?: string; message?: string } })?.cause;
  if (inner?.code) return inner.code;
  if (inner?.message) return inner.message;
  return cause instanceof Error ? cause.message : String(cause);
}

/** URLs never carry secrets in OpenStack APIs, but drop any query string and userinfo to be sure. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '<invalid url>';
  }
}
