import { describe, expect, it } from 'vitest';
import { parseAuthConfig } from '../../../cloud/auth-config.ts';
import { authRequestBody, parseTokenBody, selectEndpoint, type CatalogEntry } from '../../../cloud/keystone.ts';
import { CorekubeError } from '../../../core/errors.ts';

const catalog: CatalogEntry[] = [
  { type: 'identity', name: 'keystone', endpoints: [{ interface: 'public', region: 'One', url: 'https://k/v3' }] },
  {
    type: 'orchestration',
    name: 'heat',
    endpoints: [
      { interface: 'public', region: 'One', url: 'https://heat.one/v1/p1' },
      { interface: 'internal', region: 'One', url: 'http://heat.internal/v1/p1' },
      { interface: 'public', region: 'Two', url: 'https://heat.two/v1/p1' },
    ],
  },
];

function errorOf(fn: () => unknown): CorekubeError {
  try {
    fn();
  } catch (err) {
    return err as CorekubeError;
  }
  throw new Error('expected an error');
}

describe('selectEndpoint', () => {
  it('picks the endpoint of the interface and region asked for', () => {
    expect(selectEndpoint(catalog, 'orchestration', 'public', 'Two')).toBe('https://heat.two/v1/p1');
    expect(selectEndpoint(catalog, 'orchestration', 'internal', undefined)).toBe('http://heat.internal/v1/p1');
  });

  it('asks for a region when the interface exists in several', () => {
    const e = errorOf(() => selectEndpoint(catalog, 'orchestration', 'public', undefined));
    expect(e.message).toContain('several regions (One, Two)');
    expect(e.hint).toContain('OS_REGION_NAME');
  });

  it('names what the catalog offers when nothing matches', () => {
    const e = errorOf(() => selectEndpoint(catalog, 'orchestration', 'admin', 'One'));
    expect(e.message).toBe('no admin orchestration endpoint in region One (the catalog offers public@One, internal@One, public@Two)');
    expect(errorOf(() => selectEndpoint(catalog, 'compute', 'public', undefined)).message).toContain('has no compute service (it has: identity, orchestration)');
  });
});

describe('authRequestBody', () => {
  it('scopes a password login to the project, names and domains as given', () => {
    const c = parseAuthConfig({ OS_AUTH_URL: 'https://k/v3', OS_USERNAME: 'a', OS_PASSWORD: 'pw', OS_PROJECT_ID: 'p1', OS_USER_DOMAIN_ID: 'd' });
    expect(authRequestBody(c)).toEqual({
      auth: {
        identity: { methods: ['password'], password: { user: { name: 'a', domain: { id: 'd' }, password: 'pw' } } },
        scope: { project: { id: 'p1' } },
      },
    });
  });

  it('sends an application credential without a scope (it carries its own)', () => {
    const c = parseAuthConfig({ OS_AUTH_URL: 'https://k/v3', OS_APPLICATION_CREDENTIAL_ID: 'id1', OS_APPLICATION_CREDENTIAL_SECRET: 'sec' });
    expect(authRequestBody(c)).toEqual({ auth: { identity: { methods: ['application_credential'], application_credential: { id: 'id1', secret: 'sec' } } } });
  });
});

describe('parseTokenBody', () => {
  it('reads project, user, expiry and the catalog, without trailing slashes on URLs', () => {
    const facts = parseTokenBody({
      token: {
        expires_at: '2030-01-01T00:00:00.000000Z',
        user: { id: 'u', name: 'alice' },
        project: { id: 'p', name: 'k8s' },
        catalog: [{ type: 'orchestration', name: 'heat', endpoints: [{ interface: 'public', region_id: 'One', url: 'https://h/v1/p/' }] }],
      },
    }, 'https://k/v3/auth/tokens');
    expect(facts).toMatchObject({ userId: 'u', userName: 'alice', projectId: 'p', projectName: 'k8s' });
    expect(facts.expiresAt.toISOString()).toBe('2030-01-01T00:00:00.000Z');
    expect(facts.catalog[0]!.endpoints[0]).toEqual({ interface: 'public', region: 'One', url: 'https://h/v1/p' });
  });

  it('refuses an unscoped token, saying how to scope it', () => {
    const e = errorOf(() => parseTokenBody({ token: { user: { id: 'u' } } }, 'u'));
    expect(e.code).toBe('E_HEAT');
    expect(e.hint).toContain('OS_PROJECT_NAME');
  });
});
