import { CorekubeError } from '../core/errors.ts';
import { OpenStackError, toOpenStackError } from './errors.ts';
import { fetchTransport, type HttpRequest, type HttpResponse, type Transport } from './http.ts';
import type { KeystoneSession } from './keystone.ts';
import { isTerminalFor, nextDelay, type StackAction } from './stack-status.ts';

/**
 * A small typed client of Heat's v1 REST API, on a Keystone session. Every call goes through `call`,
 * which adds the token (re-authenticating once on 401), addresses stacks by name and id, and converts any
 * error status into E_HEAT once. No logging here: progress goes to the caller through callbacks.
 */
export interface StackRef {
  readonly name: string;
  readonly id: string;
}

export interface StackOutput {
  readonly key: string;
  /** As Heat resolved it; null when it could not (e.g. a get_attr of a resource without that attribute). */
  readonly value: unknown;
  readonly description: string;
  /** Heat's reason when resolving the output failed. */
  readonly error: string | undefined;
}

export interface Stack extends StackRef {
  /** `<ACTION>_<STATE>`, e.g. CREATE_COMPLETE. */
  readonly status: string;
  readonly statusReason: string;
  readonly createdTime: string | undefined;
  readonly updatedTime: string | undefined;
  readonly parameters: Readonly<Record<string, string>>;
  /** Present when the stack was shown with outputs resolved (showStack does). */
  readonly outputs: readonly StackOutput[];
  readonly timeoutMins: number | undefined;
}

export interface StackEvent {
  readonly id: string;
  readonly time: string;
  /** The resource's name; the stack's own events carry the stack's name. */
  readonly resourceName: string;
  readonly physicalResourceId: string;
  /** `<ACTION>_<STATE>`, e.g. CREATE_IN_PROGRESS, SIGNAL_COMPLETE. */
  readonly status: string;
  readonly statusReason: string;
}

export interface StackResource {
  readonly name: string;
  readonly type: string;
  readonly status: string;
  readonly statusReason: string;
  readonly physicalId: string;
  /** The stack this resource belongs to (a nested stack's when listed with nestedDepth > 0). */
  readonly stack: StackRef | undefined;
  /** The nested stack this resource is (template resources, groups), if any. */
  readonly nested: StackRef | undefined;
  /** The name of the resource in the parent stack whose nested stack holds this one. */
  readonly parentResource: string | undefined;
}

export type ParameterValue = string | number | boolean;

/** What Heat needs to read a template: the template (object or YAML/JSON text), files it references, environment. */
export interface TemplateInput {
  readonly template: object | string;
  /** `get_file` contents and provider templates, keyed by the names the template/environment use. */
  readonly files?: Readonly<Record<string, string>>;
  /** An environment (object or YAML text): parameter_defaults, resource_registry… */
  readonly environment?: object | string;
  readonly parameters?: Readonly<Record<string, ParameterValue>>;
}

export interface CreateStackInput extends TemplateInput {
  readonly name: string;
  readonly timeoutMins?: number;
  /** Keep failed resources for inspection instead of rolling back (Heat's default: true). */
  readonly disableRollback?: boolean;
}

export interface UpdateStackInput {
  /** Changed parameters; with PATCH every other parameter keeps its current value. */
  readonly parameters?: Readonly<Record<string, ParameterValue>>;
  /** A new template (with its files and environment); omitted = keep the current one. */
  readonly template?: TemplateInput;
  readonly timeoutMins?: number;
}

export interface WaitOptions {
  readonly onEvent?: (event: StackEvent) => void;
  readonly signal?: AbortSignal;
  /** Give up (E_HEAT, retryable) after this long; the stack goes on in Heat. Default: no limit. */
  readonly timeoutMs?: number;
  /** Only events after this one count (the last event id before the action started). */
  readonly sinceEventId?: string | undefined;
  /** Sleep between polls; injectable for tests. */
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export interface ValidateResult {
  readonly description: string;
  readonly parameters: Readonly<Record<string, unknown>>;
  readonly raw: unknown;
}

export class HeatClient {
  readonly session: KeystoneSession;
  /** The orchestration endpoint (`…/v1/<project id>`), from the catalog. */
  readonly endpoint: string;
  readonly #transport: Transport;

  constructor(session: KeystoneSession, options: { endpoint?: string; transport?: Transport } = {}) {
    this.session = session;
    this.endpoint = (options.endpoint ?? session.endpoint('orchestration')).replace(/\/+$/, '');
    this.#transport = options.transport ?? fetchTransport('Heat');
  }

  /** POST /validate: Heat's verdict on a template + environment + files; throws E_HEAT (400) with Heat's reason. */
  async validate(input: TemplateInput): Promise<ValidateResult> {
    const body = await this.call<Record<string, unknown>>('POST', '/validate', { body: templateBody(input) });
    return {
      description: String(body?.Description ?? ''),
      parameters: (body?.Parameters ?? {}) as Record<string, unknown>,
      raw: body,
    };
  }

  /** POST /stacks. Returns at once; follow with waitForStack(ref, 'CREATE'). */
  async createStack(input: CreateStackInput): Promise<StackRef> {
    const body = await this.call<{ stack?: { id?: string } }>('POST', '/stacks', {
      body: {
        stack_name: input.name,
        ...templateBody(input),
        ...(input.timeoutMins !== undefined ? { timeout_mins: input.timeoutMins } : {}),
        ...(input.disableRollback !== undefined ? { disable_rollback: input.disableRollback } : {}),
      },
      hints: { 409: `a stack named ${input.name} exists already: choose another name, or delete it first (corekube down --stack ${input.name})` },
    });
    const id = body?.stack?.id;
    if (!id) throw new CorekubeError('E_HEAT', `Heat POST /stacks: the answer has no stack id`, { hint: 'unexpected answer from Heat' });
    return { name: input.name, id };
  }

  /**
   * GET a stack by name, id or ref, with outputs resolved (unless `outputs: false`). `GET /stacks/<name>` answers 302 to
   * `/stacks/<name>/<id>`; the redirect's path is followed on our own endpoint (a proxy in front of Heat may
   * put an internal host into Location).
   */
  async showStack(stack: string | StackRef, options: { outputs?: boolean } = {}): Promise<Stack> {
    const ref = typeof stack === 'string' ? await this.resolve(stack) : stack;
    // Without outputs Heat answers faster, and also for a deleted stack (whose outputs no longer resolve).
    const q = options.outputs === false ? '?resolve_outputs=False' : '';
    const body = await this.call<{ stack: Record<string, any> }>('GET', `${stackPath(ref)}${q}`, { hints: notFoundHint(ref.name) });
    return toStack(body.stack);
  }

  /** Name + id of a stack given by either; E_HEAT 404 when there is none. */
  async resolve(nameOrId: string): Promise<StackRef> {
    const res = await this.send('GET', `/stacks/${encodeURIComponent(nameOrId)}`);
    if (res.status === 302 || res.status === 301 || res.status === 303) {
      const location = res.headers.get('location') ?? '';
      const m = /\/stacks\/([^/?#]+)\/([^/?#]+)\/?(?:[?#].*)?$/.exec(location);
      if (!m) throw new CorekubeError('E_HEAT', `Heat GET /stacks/${nameOrId}: redirect to an unexpected place`, { hint: 'unexpected answer from Heat' });
      return { name: decodeURIComponent(m[1]!), id: decodeURIComponent(m[2]!) };
    }
    if (res.status >= 200 && res.status < 300) {
      const s = (res.body as { stack?: { id?: string; stack_name?: string } })?.stack;
      if (s?.id && s.stack_name) return { name: s.stack_name, id: s.id };
    }
    throw toOpenStackError({ service: 'Heat', method: 'GET', url: `${this.endpoint}/stacks/${nameOrId}`, hints: notFoundHint(nameOrId) }, res);
  }

  /** Events of a stack, oldest first, after `marker` (an event id). nestedDepth > 0 adds nested stacks' events. */
  async events(ref: StackRef, options: { marker?: string | undefined; nestedDepth?: number; limit?: number } = {}): Promise<StackEvent[]> {
    const q = new URLSearchParams({ sort_dir: 'asc', sort_keys: 'created_at' });
    if (options.marker) q.set('marker', options.marker);
    if (options.nestedDepth) q.set('nested_depth', String(options.nestedDepth));
    if (options.limit) q.set('limit', String(options.limit));
    const body = await this.call<{ events?: any[] }>('GET', `${stackPath(ref)}/events?${q}`, { hints: notFoundHint(ref.name) });
    return (body?.events ?? []).map(toEvent);
  }

  /** The id of the newest event, to pass as `sinceEventId` before starting an action. */
  async lastEventId(ref: StackRef): Promise<string | undefined> {
    const body = await this.call<{ events?: any[] }>('GET', `${stackPath(ref)}/events?sort_dir=desc&sort_keys=created_at&limit=1`, { hints: notFoundHint(ref.name) });
    const e = body?.events?.[0];
    return e ? String(e.id) : undefined;
  }

  /** Resources of a stack; nestedDepth > 0 includes those of nested stacks (provider templates, groups). */
  async resources(ref: StackRef, options: { nestedDepth?: number } = {}): Promise<StackResource[]> {
    const q = options.nestedDepth ? `?nested_depth=${options.nestedDepth}` : '';
    const body = await this.call<{ resources?: any[] }>('GET', `${stackPath(ref)}/resources${q}`, { hints: notFoundHint(ref.name) });
    return (body?.resources ?? []).map(toResource);
  }

  /** Every output, resolved: key → value (null when Heat could not resolve it). */
  async outputs(stack: string | StackRef): Promise<Record<string, unknown>> {
    const s = await this.showStack(stack);
    return Object.fromEntries(s.outputs.map((o) => [o.key, o.value]));
  }

  /** One output, resolved by Heat on demand. */
  async output(ref: StackRef, key: string): Promise<StackOutput> {
    const body = await this.call<{ output?: Record<string, any> }>('GET', `${stackPath(ref)}/outputs/${encodeURIComponent(key)}`, {
      hints: { 404: `stack ${ref.name} has no output ${key}` },
    });
    return toOutput(body?.output ?? {});
  }

  /**
   * PATCH the stack: the given parameters change, everything else (template, other parameters,
   * environment) stays as it is. Returns the event marker to wait from.
   */
  async updateStack(ref: StackRef, input: UpdateStackInput): Promise<{ sinceEventId: string | undefined }> {
    const sinceEventId = await this.lastEventId(ref);
    const body: Record<string, unknown> = { parameters: input.parameters ?? {} };
    if (input.template) Object.assign(body, templateBody(input.template));
    if (input.timeoutMins !== undefined) body.timeout_mins = input.timeoutMins;
    await this.call('PATCH', stackPath(ref), { body, hints: notFoundHint(ref.name) });
    return { sinceEventId };
  }

  /** DELETE the stack (returns at once; waitForStack(ref, 'DELETE') to see it gone). 404 = already gone. */
  async deleteStack(ref: StackRef): Promise<{ sinceEventId: string | undefined; existed: boolean }> {
    let sinceEventId: string | undefined;
    try {
      sinceEventId = await this.lastEventId(ref);
      await this.call('DELETE', stackPath(ref), { hints: notFoundHint(ref.name) });
    } catch (err) {
      if (err instanceof OpenStackError && err.status === 404) return { sinceEventId, existed: false };
      throw err;
    }
    return { sinceEventId, existed: true };
  }

  /** POST a signal to a resource (a wait condition handle takes {status, reason, id, data}). Heat answers null. */
  async signal(ref: StackRef, resource: string, data?: unknown): Promise<unknown> {
    return this.call('POST', `${stackPath(ref)}/resources/${encodeURIComponent(resource)}/signal`, {
      body: data ?? {},
      hints: { 404: `stack ${ref.name} has no resource ${resource}`, 400: `resource ${resource} does not take signals in its state (is it a wait condition handle or a signal-able resource?)` },
    });
  }

  /**
   * Waits until the stack finished `action` (its status is `<action>_COMPLETE|FAILED`, or ROLLBACK_* after
   * a failed create/update, or it is gone for DELETE), streaming every new event to onEvent. Polls with
   * backoff: 1 s after news, growing to 5 s while nothing happens. When `sinceEventId` is given, a status
   * counts only once an event of the action has been seen after it (a stale UPDATE_COMPLETE of the
   * previous update is not this update's end).
   */
  async waitForStack(ref: StackRef, action: StackAction, options: WaitOptions = {}): Promise<Stack> {
    const sleep = options.sleep ?? abortableSleep;
    const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    let marker = options.sinceEventId;
    let sawAction = options.sinceEventId === undefined;
    let delay = 0;
    for (;;) {
      options.signal?.throwIfAborted();
      let news = false;
      let stack: Stack | undefined;
      try {
        const events = await this.events(ref, { marker });
        for (const e of events) {
          marker = e.id;
          news = true;
          if (e.status.startsWith(`${action}_`) || e.status.startsWith('ROLLBACK_')) sawAction = true;
          options.onEvent?.(e);
        }
        stack = await this.showStack(ref, { outputs: false });
      } catch (err) {
        if (action === 'DELETE' && err instanceof OpenStackError && err.status === 404) return deletedStack(ref);
        throw err;
      }
      if (sawAction && isTerminalFor(stack.status, action)) {
        // Events that landed between the last events read and the status read.
        for (const e of await this.events(ref, { marker })) options.onEvent?.(e);
        return action === 'DELETE' ? stack : this.showStack(ref);
      }
      delay = nextDelay(delay, news);
      if (Date.now() + delay > deadline) {
        throw new CorekubeError('E_HEAT', `stack ${ref.name} is still ${stack.status} after ${Math.round((options.timeoutMs ?? 0) / 1000)} s`, {
          hint: `Heat keeps working on it: follow with corekube stack status --stack ${ref.name}`,
          retryable: true,
        });
      }
      await sleep(delay, options.signal);
    }
  }

  /** One Heat call: path relative to the endpoint; 2xx → parsed body, anything else → E_HEAT. */
  async call<T = unknown>(
    method: HttpRequest['method'],
    path: string,
    options: { body?: unknown; hints?: Readonly<Partial<Record<number, string>>> } = {},
  ): Promise<T> {
    const res = await this.send(method, path, options.body);
    if (res.status < 200 || res.status > 299) {
      throw toOpenStackError({ service: 'Heat', method, url: `${this.endpoint}${path}`, hints: options.hints }, res);
    }
    return res.body as T;
  }

  private send(method: HttpRequest['method'], path: string, body?: unknown): Promise<HttpResponse> {
    const url = `${this.endpoint}${path}`;
    return this.session.authorized((headers) => this.#transport({ method, url, headers, body }));
  }
}

/**
 * What a machine does at boot: POST to a wait condition handle's `endpoint` with the handle's own token
 * (no Keystone login). The body is `{status, reason, id, data}`.
 */
export async function signalWaitConditionHandle(
  handle: { readonly endpoint: string; readonly token: string },
  data: { status: 'SUCCESS' | 'FAILURE'; reason?: string; id?: string; data?: string },
  transport: Transport = fetchTransport('Heat'),
): Promise<void> {
  const res = await transport({ method: 'POST', url: handle.endpoint, headers: { 'X-Auth-Token': handle.token }, body: data });
  if (res.status < 200 || res.status > 299) throw toOpenStackError({ service: 'Heat', method: 'POST', url: handle.endpoint }, res);
}

function stackPath(ref: StackRef): string {
  return `/stacks/${encodeURIComponent(ref.name)}/${encodeURIComponent(ref.id)}`;
}

function notFoundHint(name: string): Partial<Record<number, string>> {
  return { 404: `there is no stack ${name} in this project (openstack stack list shows the stacks)` };
}

function templateBody(input: TemplateInput): Record<string, unknown> {
  return {
    template: input.template,
    files: input.files ?? {},
    environment: input.environment ?? {},
    parameters: input.parameters ?? {},
  };
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function deletedStack(ref: StackRef): Stack {
  return { ...ref, status: 'DELETE_COMPLETE', statusReason: 'gone', createdTime: undefined, updatedTime: undefined, parameters: {}, outputs: [], timeoutMins: undefined };
}

/** Heat's stack JSON → Stack. Exported for unit tests. */
export function toStack(s: Record<string, any>): Stack {
  return {
    name: String(s.stack_name),
    id: String(s.id),
    status: String(s.stack_status ?? 'UNKNOWN'),
    statusReason: String(s.stack_status_reason ?? ''),
    createdTime: s.creation_time ?? undefined,
    updatedTime: s.updated_time ?? undefined,
    parameters: (s.parameters ?? {}) as Record<string, string>,
    outputs: Array.isArray(s.outputs) ? s.outputs.map(toOutput) : [],
    timeoutMins: typeof s.timeout_mins === 'number' ? s.timeout_mins : undefined,
  };
}

function toOutput(o: Record<string, any>): StackOutput {
  return {
    key: String(o.output_key),
    value: o.output_value ?? null,
    description: String(o.description ?? ''),
    error: o.output_error ?? undefined,
  };
}

/** Heat's event JSON → StackEvent. Exported for unit tests. */
export function toEvent(e: Record<string, any>): StackEvent {
  return {
    id: String(e.id),
    time: String(e.event_time ?? ''),
    resourceName: String(e.resource_name ?? e.logical_resource_id ?? ''),
    physicalResourceId: String(e.physical_resource_id ?? ''),
    status: String(e.resource_status ?? ''),
    statusReason: String(e.resource_status_reason ?? ''),
  };
}

function refFromLink(href: unknown): StackRef | undefined {
  if (typeof href !== 'string') return undefined;
  const m = /\/stacks\/([^/]+)\/([^/?#]+)\/?$/.exec(href);
  return m ? { name: decodeURIComponent(m[1]!), id: decodeURIComponent(m[2]!) } : undefined;
}

/** Heat's resource JSON → StackResource. Exported for unit tests. */
export function toResource(r: Record<string, any>): StackResource {
  const links: any[] = Array.isArray(r.links) ? r.links : [];
  return {
    name: String(r.resource_name ?? r.logical_resource_id),
    type: String(r.resource_type ?? ''),
    status: String(r.resource_status ?? ''),
    statusReason: String(r.resource_status_reason ?? ''),
    physicalId: String(r.physical_resource_id ?? ''),
    stack: refFromLink(links.find((l) => l.rel === 'stack')?.href),
    nested: refFromLink(links.find((l) => l.rel === 'nested')?.href),
    parentResource: r.parent_resource ?? undefined,
  };
}
