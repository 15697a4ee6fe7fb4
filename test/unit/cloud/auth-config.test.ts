import { describe, expect, it } from 'vitest';
import { parseAuthConfig } from '../../../cloud/auth-config.ts';
import { InvalidInputError } from '../../../core/errors.ts';

const PASSWORD_ENV = {
  OS_AUTH_URL: 'https://keystone.example.com:5000/v3',
  OS_USERNAME: 'alice',
  OS_PASSWORD: 's3cret-pass',
  OS_PROJECT_NAME: 'k8s',
  OS_USER_DOMAIN_NAME: 'Default',
  OS_PROJECT_DOMAIN_NAME: 'Default',
};

function problemsOf(env: Record<string, string | undefined>): { field: string; message: string }[] {
  try {
    parseAuthConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as InvalidInputError).code).toBe('E_USAGE');
    return (err as InvalidInputError).problems.map(({ field, message }) => ({ field, message }));
  }
  throw new Error('expected the config to be rejected');
}

describe('parseAuthConfig', () => {
  it('reads a password openrc into a frozen config with the public interface by default', () => {
    const c = parseAuthConfig({ ...PASSWORD_ENV, OS_REGION_NAME: 'RegionOne' });
    expect(c).toEqual({
      authUrl: 'https://keystone.example.com:5000/v3',
      auth: { method: 'password', user: { name: 'alice', domain: { name: 'Default' } }, project: { name: 'k8s', domain: { name: 'Default' } } },
      region: 'RegionOne',
      interface: 'public',
    });
    expect(c.secret).toBe('s3cret-pass');
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.auth)).toBe(true);
  });

  it('never shows the secret when the config is printed or serialised', () => {
    const c = parseAuthConfig(PASSWORD_ENV);
    expect(JSON.stringify(c)).not.toContain('s3cret-pass');
    expect(Object.keys(c)).not.toContain('secret');
  });

  it('picks the application credential when its id is set, needing no user or project', () => {
    const c = parseAuthConfig({ OS_AUTH_URL: 'http://10.0.0.1:5000/v3/', OS_APPLICATION_CREDENTIAL_ID: 'abc', OS_APPLICATION_CREDENTIAL_SECRET: 'xyz' });
    expect(c.auth).toEqual({ method: 'application_credential', id: 'abc' });
    expect(c.authUrl).toBe('http://10.0.0.1:5000/v3');
    expect(c.secret).toBe('xyz');
  });

  it('follows OS_AUTH_TYPE over the presence of variables', () => {
    const c = parseAuthConfig({ ...PASSWORD_ENV, OS_AUTH_TYPE: 'v3password', OS_APPLICATION_CREDENTIAL_ID: 'abc' });
    expect(c.auth.method).toBe('password');
    expect(problemsOf({ ...PASSWORD_ENV, OS_AUTH_TYPE: 'v3token' })).toEqual([{ field: 'OS_AUTH_TYPE', message: 'is not an auth type corekube supports' }]);
  });

  it('accepts ids instead of names for the user, the project and their domains', () => {
    const c = parseAuthConfig({ OS_AUTH_URL: 'https://k/v3', OS_PASSWORD: 'p', OS_USER_ID: 'u1', OS_PROJECT_NAME: 'p', OS_PROJECT_DOMAIN_ID: 'd1' });
    expect(c.auth).toMatchObject({ user: { id: 'u1' }, project: { name: 'p', domain: { id: 'd1' } } });
  });

  it('adds /v3 to a bare Keystone URL and refuses a v2.0 one', () => {
    expect(parseAuthConfig({ ...PASSWORD_ENV, OS_AUTH_URL: 'https://keystone.example.com:5000' }).authUrl).toBe('https://keystone.example.com:5000/v3');
    expect(parseAuthConfig({ ...PASSWORD_ENV, OS_AUTH_URL: 'https://cloud.example.com/identity/' }).authUrl).toBe('https://cloud.example.com/identity/v3');
    expect(problemsOf({ ...PASSWORD_ENV, OS_AUTH_URL: 'https://k:5000/v2.0' })).toEqual([{ field: 'OS_AUTH_URL', message: 'points at Keystone v2, which corekube does not speak' }]);
    expect(problemsOf({ ...PASSWORD_ENV, OS_AUTH_URL: 'keystone:5000' })[0]!.field).toBe('OS_AUTH_URL');
  });

  it('reads the old publicURL spelling of OS_INTERFACE and refuses unknown interfaces', () => {
    expect(parseAuthConfig({ ...PASSWORD_ENV, OS_INTERFACE: 'internalURL' }).interface).toBe('internal');
    expect(problemsOf({ ...PASSWORD_ENV, OS_INTERFACE: 'private' })).toEqual([{ field: 'OS_INTERFACE', message: 'is not an endpoint interface' }]);
  });

  it('reports every missing variable at once, each by name', () => {
    expect(problemsOf({}).map((p) => p.field)).toEqual(['OS_AUTH_URL', 'OS_PASSWORD', 'OS_USERNAME', 'OS_PROJECT_NAME']);
    expect(problemsOf({ OS_AUTH_URL: 'https://k/v3', OS_USERNAME: 'a', OS_PASSWORD: 'p', OS_PROJECT_NAME: 'x' }).map((p) => p.field)).toEqual([
      'OS_USER_DOMAIN_NAME',
      'OS_PROJECT_DOMAIN_NAME',
    ]);
    expect(problemsOf({ OS_AUTH_URL: 'https://k/v3', OS_AUTH_TYPE: 'v3applicationcredential' }).map((p) => p.field)).toEqual([
      'OS_APPLICATION_CREDENTIAL_ID',
      'OS_APPLICATION_CREDENTIAL_SECRET',
    ]);
  });

  it('treats blank variables as unset', () => {
    expect(problemsOf({ ...PASSWORD_ENV, OS_USERNAME: '  ' }).map((p) => p.field)).toEqual(['OS_USERNAME']);
  });
});
