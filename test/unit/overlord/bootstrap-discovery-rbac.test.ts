/**
 * The discovery etcd's users and roles (overlord/trust/discovery-auth.ts discoveryRbac): least privilege, written
 * down as data. What etcd does with them is tested against a real etcd in
 * test/integration/discovery-trust.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { discoveryRbac, ensureDiscoveryPasswords, MACHINE_SECRET_NAME, ROOT_PASSWORD_NAME } from '../../../overlord/trust/discovery-auth.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { MemoryPkiStore } from '../../../overlord/trust/pki/store.ts';

const keys = clusterKeys('demo');

describe('the discovery RBAC', () => {
  it('gives joiner write on join/ and read of the overlord key only, root everything; no shared flannel user', () => {
    const rbac = discoveryRbac(keys, { root: 'r'.repeat(64), joiner: 'join-token-0123456789' });
    expect(rbac.roles).toEqual([
      {
        name: 'joiner',
        permissions: [
          { permission: 'Write', key: '/corekube/demo/join/', prefix: true },
          { permission: 'Read', key: '/corekube/demo/ssh/overlord.pub', prefix: false },
        ],
      },
    ]);
    expect(rbac.users.map((u) => ({ name: u.name, roles: u.roles }))).toEqual([
      { name: 'root', roles: ['root'] },
      { name: 'joiner', roles: ['joiner'] },
    ]);
    expect(rbac.users.find((u) => u.name === 'joiner')?.password).toBe('join-token-0123456789');
  });
});

describe('the discovery passwords', () => {
  it('are made once (64 hex digits), stored, and the same on every later call', async () => {
    const store = new MemoryPkiStore();
    const first = await ensureDiscoveryPasswords(store);
    expect(first.root).toMatch(/^[0-9a-f]{64}$/);
    expect(first.machines).toMatch(/^[0-9a-f]{64}$/);
    expect(first.root).not.toBe(first.machines);
    expect(store.names()).toEqual([MACHINE_SECRET_NAME, ROOT_PASSWORD_NAME]);
    expect(await ensureDiscoveryPasswords(store)).toEqual(first);
  });
});
