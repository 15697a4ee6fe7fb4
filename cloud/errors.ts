import { CorekubeError } from '../core/errors.ts';
import { redactUrl, type HttpResponse } from './http.ts';

/**
 * OpenStack HTTP errors, converted once at the client's edge into one typed error: which service, which
 * call, the status, the service's own title and message (Heat: `{title, explanation, error: {type,
 * message}}`; Keystone: `{error: {code, title, message}}`), and a hint for what to do. Tracebacks that a
 * debug-mode service puts in error bodies are dropped.
 */
export class OpenStackError extends CorekubeError {
  readonly status: number;
  /** The service's error title ("Bad Request"), or the HTTP reason. */
  readonly title: string;
  /** The service's message: Heat's `error.message` (its `explanation` when there is none), Keystone's `error.message`. */
  readonly explanation: string;
  /** Heat's exception class name (`StackValidationFailed`, `EntityNotFound`…) when it gives one. */
  readonly errorType: string | undefined;

  constructor(service: string, call: string, status: number, parsed: ParsedErrorBody, hint: string, retryable: boolean) {
    const kind = parsed.errorType ? `${parsed.errorType}: ` : '';
    super('E_HEAT', `${service} ${call}: ${status} ${parsed.title}${parsed.explanation ? ` — ${kind}${parsed.explanation}` : ''}`, { hint, retryable });
    this.name = 'OpenStackError';
    this.status = status;
    this.title = parsed.title;
    this.explanation = parsed.explanation;
    this.errorType = parsed.errorType;
  }
}

export interface ParsedErrorBody {
  title: string;
  explanation: string;
  errorType: string | undefined;
}

const REASONS: Readonly<Record<number, string>> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict',
  413: 'Request Entity Too Large', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** Reads Heat's and Keystone's error bodies (and plain-text ones from proxies). Pure. */
export function parseErrorBody(status: number, body: unknown): ParsedErrorBody {
  const fallbackTitle = REASONS[status] ?? `HTTP ${status}`;
  if (body && typeof body === 'object') {
    const b = body as Record<string, unknown>;
    const err = (b.error && typeof b.error === 'object' ? b.error : {}) as Record<string, unknown>;
    const title = str(b.title) ?? str(err.title) ?? fallbackTitle;
    const message = str(err.message) ?? str(b.explanation) ?? str(b.message) ?? '';
    return { title, explanation: firstLines(message), errorType: str(err.type) };
  }
  if (typeof body === 'string' && body.trim() !== '') {
    // HTML error pages of proxies and webob: keep the text, not the markup.
    const text = body.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();
    return { title: fallbackTitle, explanation: firstLines(text), errorType: undefined };
  }
  return { title: fallbackTitle, explanation: '', errorType: undefined };
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
}

function firstLines(text: string): string {
  const t = text.split('\n').slice(0, 6).join('\n');
  return t.length > 1000 ? `${t.slice(0, 1000)}…` : t;
}

export interface CallContext {
  readonly service: 'Heat' | 'Keystone';
  readonly method: string;
  readonly url: string;
  /** Hints for statuses where the caller knows better than the defaults (e.g. 404 of a named stack). */
  readonly hints?: Readonly<Partial<Record<number, string>>>;
}

/** The one conversion of an HTTP error response into an E_HEAT error. */
export function toOpenStackError(ctx: CallContext, res: Pick<HttpResponse, 'status' | 'body'>): OpenStackError {
  const parsed = parseErrorBody(res.status, res.body);
  const call = `${ctx.method} ${redactUrl(ctx.url)}`;
  const hint = ctx.hints?.[res.status] ?? defaultHint(ctx.service, res.status, parsed);
  const retryable = res.status >= 500 || res.status === 429 || (res.status === 409 && /in.progress|busy|locked/i.test(parsed.explanation));
  return new OpenStackError(ctx.service, call, res.status, parsed, hint, retryable);
}

function defaultHint(service: string, status: number, parsed: ParsedErrorBody): string {
  switch (status) {
    case 400:
      return service === 'Heat'
        ? 'Heat rejected the template, its parameters or environment: fix what the message names'
        : 'Keystone rejected the request: check the OS_* variables the message names';
    case 401:
      return 'authentication failed: check OS_AUTH_URL and the credentials (OS_USERNAME/OS_PASSWORD or the application credential), e.g. source your openrc again';
    case 403:
      return service === 'Heat'
        ? 'the user may not do this: it needs a role that may use Heat in the project (often member or heat_stack_owner)'
        : 'the user may not do this in the scoped project: ask the cloud admin for a role';
    case 404:
      return service === 'Heat' ? 'no such stack or resource: list stacks with `openstack stack list`' : 'not found: check OS_AUTH_URL';
    case 409:
      return /exist/i.test(parsed.explanation)
        ? 'the name is taken: choose another stack name, or delete the old stack first (corekube down)'
        : 'the stack is busy with another action: wait for it to finish, then retry';
    case 413:
      return 'the request is larger than the cloud allows (Heat max_template_size): ask the operator or shrink the template';
    case 429:
      return 'the cloud is rate limiting: wait and retry';
    default:
      return status >= 500
        ? `${service} failed internally: retry; if it keeps failing, give the message to the cloud operator`
        : `unexpected answer from ${service}`;
  }
}
