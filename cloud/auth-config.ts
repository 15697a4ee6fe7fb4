import { InvalidInputError, type FieldProblem } from '../core/errors.ts';

/**
 * How corekube reaches an OpenStack cloud: the standard `OS_*` variables an openrc file or `openstack`
 * CLI users already have, parsed once into a frozen, validated value. Nothing else in corekube reads them.
 *
 * Two ways to authenticate, both Keystone v3:
 * - password: OS_USERNAME (or OS_USER_ID) + OS_PASSWORD, scoped to OS_PROJECT_NAME (+ its domain) or
 *   OS_PROJECT_ID;
 * - application credential: OS_APPLICATION_CREDENTIAL_ID + OS_APPLICATION_CREDENTIAL_SECRET (the credential
 *   carries its own project scope).
 * OS_AUTH_TYPE, when set, picks one; otherwise an application credential id picks the second.
 *
 * The secret (password or credential secret) is kept out of the value's enumerable fields, so printing or
 * serialising the config never shows it.
 */
export type EndpointInterface = 'public' | 'internal' | 'admin';

/** A user or project named within a domain, or given by id. */
export type NameRef =
  | { readonly id: string }
  | { readonly name: string; readonly domain: { readonly id: string } | { readonly name: string } };

export interface PasswordAuth {
  readonly method: 'password';
  readonly user: NameRef;
  readonly project: NameRef;
}

export interface ApplicationCredentialAuth {
  readonly method: 'application_credential';
  readonly id: string;
}

export interface AuthConfig {
  /** Keystone v3 base URL, always ending in `/v3` without a trailing slash. */
  readonly authUrl: string;
  readonly auth: PasswordAuth | ApplicationCredentialAuth;
  /** Region of the endpoints to use; undefined = the only region the catalog offers for a service. */
  readonly region: string | undefined;
  readonly interface: EndpointInterface;
  /** The password or application credential secret. Not enumerable: never printed, never serialised. */
  readonly secret: string;
}

export type OsEnv = Readonly<Record<string, string | undefined>>;

const PASSWORD_TYPES = new Set(['password', 'v3password']);
const APPCRED_TYPES = new Set(['v3applicationcredential', 'applicationcredential', 'application_credential']);

/** Parses OS_* variables; throws InvalidInputError (exit 2) listing every problem, each naming its variable. */
export function parseAuthConfig(env: OsEnv): AuthConfig {
  const problems: FieldProblem[] = [];
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const missing = (field: string, fix: string) => problems.push({ field, value: undefined, message: 'is not set', fix });

  const authUrl = parseAuthUrl(get('OS_AUTH_URL'), problems);

  const authType = get('OS_AUTH_TYPE');
  let method: 'password' | 'application_credential';
  if (authType !== undefined) {
    if (PASSWORD_TYPES.has(authType)) method = 'password';
    else if (APPCRED_TYPES.has(authType)) method = 'application_credential';
    else {
      problems.push({
        field: 'OS_AUTH_TYPE', value: authType, message: 'is not an auth type corekube supports',
        fix: 'use v3password or v3applicationcredential (or unset it)',
      });
      method = 'password';
    }
  } else {
    method = get('OS_APPLICATION_CREDENTIAL_ID') !== undefined ? 'application_credential' : 'password';
  }

  let auth: PasswordAuth | ApplicationCredentialAuth | undefined;
  let secret: string | undefined;
  if (method === 'application_credential') {
    const id = get('OS_APPLICATION_CREDENTIAL_ID');
    secret = env.OS_APPLICATION_CREDENTIAL_SECRET;
    if (id === undefined) {
      if (get('OS_APPLICATION_CREDENTIAL_NAME') !== undefined) {
        problems.push({
          field: 'OS_APPLICATION_CREDENTIAL_NAME', value: get('OS_APPLICATION_CREDENTIAL_NAME'),
          message: 'is not supported without an id', fix: 'set OS_APPLICATION_CREDENTIAL_ID to the credential\'s id instead',
        });
      } else missing('OS_APPLICATION_CREDENTIAL_ID', 'set it to the id of an application credential (openstack application credential create)');
    }
    if (secret === undefined || secret === '') missing('OS_APPLICATION_CREDENTIAL_SECRET', 'set it to the secret shown when the credential was created');
    if (id !== undefined) auth = { method, id };
  } else {
    secret = env.OS_PASSWORD;
    if (secret === undefined || secret === '') missing('OS_PASSWORD', 'set it, or use an application credential (OS_APPLICATION_CREDENTIAL_ID and _SECRET)');
    const user = nameRef(
      { id: 'OS_USER_ID', name: 'OS_USERNAME', domainId: 'OS_USER_DOMAIN_ID', domainName: 'OS_USER_DOMAIN_NAME' },
      get, problems, 'the user',
    );
    const project = nameRef(
      { id: 'OS_PROJECT_ID', name: 'OS_PROJECT_NAME', domainId: 'OS_PROJECT_DOMAIN_ID', domainName: 'OS_PROJECT_DOMAIN_NAME' },
      get, problems, 'the project',
    );
    if (user && project) auth = { method, user, project };
  }

  const iface = parseInterface(get('OS_INTERFACE') ?? get('OS_ENDPOINT_TYPE'), problems);
  const region = get('OS_REGION_NAME');

  if (problems.length > 0 || authUrl === undefined || auth === undefined || secret === undefined) {
    throw new InvalidInputError('the OpenStack credentials (OS_* environment variables) are incomplete', problems, 'E_USAGE');
  }
  const config = { authUrl, auth: deepFreeze(auth), region, interface: iface } as AuthConfig;
  Object.defineProperty(config, 'secret', { value: secret, enumerable: false, writable: false });
  return Object.freeze(config);
}

function parseAuthUrl(raw: string | undefined, problems: FieldProblem[]): string | undefined {
  if (raw === undefined) {
    problems.push({ field: 'OS_AUTH_URL', value: undefined, message: 'is not set', fix: 'source your cloud\'s openrc file, or set it to the Keystone URL (https://keystone.example.com:5000/v3)' });
    return undefined;
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    problems.push({ field: 'OS_AUTH_URL', value: raw, message: 'is not a URL', fix: 'give the Keystone URL, e.g. https://keystone.example.com:5000/v3' });
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    problems.push({ field: 'OS_AUTH_URL', value: raw, message: 'must be http or https', fix: 'give the Keystone URL, e.g. https://keystone.example.com:5000/v3' });
    return undefined;
  }
  const path = url.pathname.replace(/\/+$/, '');
  if (/\/v2(\.0)?$/.test(path)) {
    problems.push({ field: 'OS_AUTH_URL', value: raw, message: 'points at Keystone v2, which corekube does not speak', fix: 'use the v3 URL (replace /v2.0 with /v3)' });
    return undefined;
  }
  // A bare Keystone root (no version) is common in openrc files; v3 lives under /v3 on every deployment.
  const base = /\/v3$/.test(path) ? path : `${path}/v3`;
  return `${url.origin}${base}`;
}

function parseInterface(raw: string | undefined, problems: FieldProblem[]): EndpointInterface {
  if (raw === undefined) return 'public';
  // The old `publicURL` spelling is still in many openrc files.
  const v = raw.replace(/URL$/, '').toLowerCase();
  if (v === 'public' || v === 'internal' || v === 'admin') return v;
  problems.push({ field: 'OS_INTERFACE', value: raw, message: 'is not an endpoint interface', fix: 'use public, internal or admin' });
  return 'public';
}

interface RefVars { id: string; name: string; domainId: string; domainName: string }

function nameRef(vars: RefVars, get: (n: string) => string | undefined, problems: FieldProblem[], what: string): NameRef | undefined {
  const id = get(vars.id);
  if (id !== undefined) return { id };
  const name = get(vars.name);
  if (name === undefined) {
    problems.push({ field: vars.name, value: undefined, message: 'is not set', fix: `set it (or ${vars.id}) to name ${what}` });
    return undefined;
  }
  const domainId = get(vars.domainId);
  const domainName = get(vars.domainName);
  if (domainId !== undefined) return { name, domain: { id: domainId } };
  if (domainName !== undefined) return { name, domain: { name: domainName } };
  problems.push({ field: vars.domainName, value: undefined, message: `is not set, so ${what} ${JSON.stringify(name)} is ambiguous`, fix: `set it (often "Default") or ${vars.domainId}` });
  return undefined;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
