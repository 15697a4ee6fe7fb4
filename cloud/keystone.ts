import { CorekubeError } from '../core/errors.ts';
import type { AuthConfig, EndpointInterface } from './auth-config.ts';
import { toOpenStackError } from './errors.ts';
import { fetchTransport, type HttpRequest, type HttpResponse, type Transport } from './http.ts';

/**
 * A Keystone v3 session: one project-scoped token (password or application credential), the service
 * catalog that came with it, and re-authentication — ahead of expiry, and once after a 401. The token
 * lives only in a private field and in the X-Auth-Token header of outgoing requests: it is never
 * returned, logged or put into an error.
 */
export interface CatalogEndpoint {
  readonly interface: string;
  readonly region: string | undefined;
  readonly url: string;
}

export interface CatalogEntry {
  readonly type: string;
  readonly name: string;
  readonly endpoints: readonly CatalogEndpoint[];
}

export interface TokenFacts {
  readonly userId: string;
  readonly userName: string;
  readonly projectId: string;
  readonly projectName: string;
  readonly expiresAt: Date;
  readonly catalog: readonly CatalogEntry[];
}

/** Re-authenticate when the token has less than this left, so a long stack wait never sends a dead token. */
const EXPIRY_MARGIN_MS = 120_000;

export class KeystoneSession {
  readonly config: AuthConfig;
  readonly #transport: Transport;
  #token = '';
  #facts!: TokenFacts;
  #pending: Promise<void> | undefined;

  private constructor(config: AuthConfig, transport: Transport) {
    this.config = config;
    this.#transport = transport;
  }

  /** Authenticates once; throws E_HEAT (401 with a credentials hint, network errors retryable). */
  static async open(config: AuthConfig, transport: Transport = fetchTransport('Keystone')): Promise<KeystoneSession> {
    const session = new KeystoneSession(config, transport);
    await session.reauthenticate();
    return session;
  }

  get facts(): TokenFacts {
    return this.#facts;
  }

  /** The URL of a service from the catalog, for the configured interface and region. */
  endpoint(type: string): string {
    return selectEndpoint(this.#facts.catalog, type, this.config.interface, this.config.region);
  }

  /** Gets a fresh token; concurrent callers share one request. */
  async reauthenticate(): Promise<void> {
    this.#pending ??= this.#authenticate().finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  /**
   * Runs `send` with the token header. On 401, re-authenticates once and runs it again (a token can be
   * revoked or expire early); a second 401 is returned to the caller to convert.
   */
  async authorized(send: (headers: Readonly<Record<string, string>>) => Promise<HttpResponse>): Promise<HttpResponse> {
    if (this.#facts.expiresAt.getTime() - Date.now() < EXPIRY_MARGIN_MS) await this.reauthenticate();
    const res = await send({ 'X-Auth-Token': this.#token });
    if (res.status !== 401) return res;
    await this.reauthenticate();
    return send({ 'X-Auth-Token': this.#token });
  }

  /**
   * A call to Keystone's own API (`path` relative to the v3 URL, e.g. `/users/<id>/application_credentials`),
   * returning the parsed body of a 2xx answer and throwing E_HEAT otherwise.
   */
  async identity<T = unknown>(method: HttpRequest['method'], path: string, body?: unknown): Promise<T> {
    const url = `${this.config.authUrl}${path}`;
    const res = await this.authorized((headers) => this.#transport({ method, url, headers, body }));
    if (res.status < 200 || res.status > 299) throw toOpenStackError({ service: 'Keystone', method, url }, res);
    return res.body as T;
  }

  async #authenticate(): Promise<void> {
    const url = `${this.config.authUrl}/auth/tokens`;
    // a second token request does no harm: sent again if the connection closes under it
    const res = await this.#transport({ method: 'POST', url, body: authRequestBody(this.config), idempotent: true });
    if (res.status !== 201 && res.status !== 200) {
      throw toOpenStackError({ service: 'Keystone', method: 'POST', url }, res);
    }
    const token = res.headers.get('x-subject-token');
    if (!token) {
      throw new CorekubeError('E_HEAT', `Keystone POST ${url}: answered ${res.status} without an X-Subject-Token header`, {
        hint: 'OS_AUTH_URL must point at Keystone v3 itself, not at a proxy that drops headers',
      });
    }
    this.#facts = parseTokenBody(res.body, url);
    this.#token = token;
  }
}

/** The JSON body of POST /v3/auth/tokens. The secret goes only here. */
export function authRequestBody(config: AuthConfig): unknown {
  const a = config.auth;
  if (a.method === 'application_credential') {
    return { auth: { identity: { methods: ['application_credential'], application_credential: { id: a.id, secret: config.secret } } } };
  }
  const ref = (r: typeof a.user) => ('id' in r ? { id: r.id } : { name: r.name, domain: { ...r.domain } });
  return {
    auth: {
      identity: { methods: ['password'], password: { user: { ...ref(a.user), password: config.secret } } },
      scope: { project: ref(a.project) },
    },
  };
}

/** Reads the facts corekube needs from a token body; an unscoped token (no project, no catalog) is an error. */
export function parseTokenBody(body: unknown, url: string): TokenFacts {
  const t = (body as { token?: Record<string, any> } | null)?.token;
  if (!t || typeof t !== 'object') {
    throw new CorekubeError('E_HEAT', `Keystone POST ${url}: the answer has no token body`, { hint: 'OS_AUTH_URL must point at Keystone v3' });
  }
  if (!t.project?.id || !Array.isArray(t.catalog)) {
    throw new CorekubeError('E_HEAT', 'Keystone issued a token without a project scope or catalog', {
      hint: 'set OS_PROJECT_NAME (+ OS_PROJECT_DOMAIN_NAME) or OS_PROJECT_ID, or use an application credential of the project',
    });
  }
  const catalog: CatalogEntry[] = (t.catalog as any[]).map((s) => ({
    type: String(s.type),
    name: String(s.name ?? ''),
    endpoints: (Array.isArray(s.endpoints) ? s.endpoints : []).map((e: any) => ({
      interface: String(e.interface),
      region: e.region_id ?? e.region ?? undefined,
      url: String(e.url).replace(/\/+$/, ''),
    })),
  }));
  return Object.freeze({
    userId: String(t.user?.id ?? ''),
    userName: String(t.user?.name ?? ''),
    projectId: String(t.project.id),
    projectName: String(t.project.name ?? ''),
    expiresAt: new Date(String(t.expires_at ?? Date.now() + 3600_000)),
    catalog,
  });
}

/**
 * Picks one endpoint of a service type. Pure. Errors say what the catalog does offer, so a wrong
 * OS_REGION_NAME or OS_INTERFACE is easy to fix.
 */
export function selectEndpoint(catalog: readonly CatalogEntry[], type: string, iface: EndpointInterface, region: string | undefined): string {
  const services = catalog.filter((s) => s.type === type);
  if (services.length === 0) {
    throw new CorekubeError('E_HEAT', `the service catalog has no ${type} service (it has: ${catalog.map((s) => s.type).sort().join(', ') || 'nothing'})`, {
      hint: type === 'orchestration' ? 'this cloud does not offer Heat to this project; ask the operator' : `this cloud does not offer ${type}`,
    });
  }
  const all = services.flatMap((s) => s.endpoints);
  const inRegion = region === undefined ? all : all.filter((e) => e.region === region);
  const matches = inRegion.filter((e) => e.interface === iface);
  const regions = [...new Set(matches.map((e) => e.region ?? '(none)'))];
  if (matches.length === 0) {
    const offered = all.map((e) => `${e.interface}@${e.region ?? '(none)'}`).join(', ');
    throw new CorekubeError('E_HEAT', `no ${iface} ${type} endpoint${region ? ` in region ${region}` : ''} (the catalog offers ${offered})`, {
      hint: 'set OS_REGION_NAME and OS_INTERFACE to one of the offered region/interface pairs',
    });
  }
  if (region === undefined && regions.length > 1) {
    throw new CorekubeError('E_HEAT', `the ${type} service has ${iface} endpoints in several regions (${regions.join(', ')})`, {
      hint: 'set OS_REGION_NAME to pick one',
    });
  }
  return matches[0]!.url;
}
