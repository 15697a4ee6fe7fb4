/**
 * The discovery etcd's users and roles (overlord/discovery-auth.ts discoveryRbac): least privilege, written
 * down as data. What etcd does with them is tested against a real etcd in
 * test/integration/discovery-trust.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { discoveryRbac, ensureDiscoveryPasswords, FLANNEL_PASSWORD_NAME, ROOT_PASSWORD_NAME } from '../../../overlord/discovery-auth.ts';
import { clusterKeys } from '../../../overlord/keys.ts';
import { MemoryPkiStore } from '../../../overlord/pki/store.ts';

const keys = clusterKeys('demo');

describe('the discovery RBAC', () => {
  it('gives joiner write on machines/ and read of the overlord key only, flannel its network/ only, root everything', () => {
    const rbac = discoveryRbac(keys, { root: 'r'.repeat(64), joiner: 'join-token-0123456789', flannel: 'f'.repeat(64) });
    expect(rbac.roles).toEqual([
      {
        name: 'joiner',
        permissions: [
          { permission: 'Write', key: '/corekube/demo/machines/', prefix: true },
          { permission: 'Read', key: '/corekube/demo/ssh/overlord.pub', prefix: false },
        ],
      },
      { name: 'flannel', permissions: [{ permission: 'Readwrite', key: '/corekube/demo/network/', prefix: true }] },
    ]);
    expect(rbac.users.map((u) => ({ name: u.name, roles: u.roles }))).toEqual([
      { name: 'root', roles: ['root'] },
      { name: 'joiner', roles: ['joiner'] },
      { name: 'flannel', roles: ['flannel'] },
    ]);
    expect(rbac.users.find((u) => u.name === 'joiner')?.password).toBe('join-token-0123456789');
  });
});

describe('the discovery passwords', () => {
  it('are made once (64 hex digits), stored, and the same on every later call', async () => {
    const store = new MemoryPkiStore();
    const first = await ensureDiscoveryPasswords(store);
    expect(first.root).toMatch(/^[0-9a-f]{64}$/);
    expect(first.flannel).toMatch(/^[0-9a-f]{64}$/);
    expect(first.root).not.toBe(first.flannel);
    expect(store.names()).toEqual([FLANNEL_PASSWORD_NAME, ROOT_PASSWORD_NAME]);
    expect(await ensureDiscoveryPasswords(store)).toEqual(first);
  });
});
