/**
 * Each machine's own discovery user (overlord/trust/machine-credentials.ts), as data: what its role may touch,
 * and a password that differs per machine and per overlord secret. What etcd does with them is tested in
 * test/integration/discovery-trust.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { clusterKeys } from '../../../contracts/keys.ts';
import { credentialsFile, machinePassword, machineRole, machineUser } from '../../../overlord/trust/machine-credentials.ts';
import { flannelGrants } from '../../../overlord/pod-network/flannel.ts';

const keys = clusterKeys('demo');
const ID = 'a'.repeat(32);

describe("a machine's discovery credentials", () => {
  it('may write its own record and read flannel\'s config and leases — nothing else until a subnet is reserved', () => {
    expect(machineRole(keys, ID, flannelGrants(keys))).toEqual({
      name: `machine-${ID}`,
      permissions: [
        { permission: 'Readwrite', key: `/corekube/demo/machines/${ID}`, prefix: false },
        { permission: 'Read', key: '/corekube/demo/network/config', prefix: false },
        { permission: 'Read', key: '/corekube/demo/network/subnets', prefix: true },
      ],
    });
  });

  it('may write exactly its own subnet lease once it holds one', () => {
    expect(machineRole(keys, ID, flannelGrants(keys, '10.244.3.0-24')).permissions.at(-1)).toEqual({ permission: 'Readwrite', key: '/corekube/demo/network/subnets/10.244.3.0-24', prefix: false });
  });

  it('refuses a machine id or subnet name that could widen a grant', () => {
    expect(() => machineUser('a'.repeat(31))).toThrow(/not a machine id/);
    expect(() => machineRole(keys, ID, flannelGrants(keys, '10.244.3.0/24'))).toThrow(/not a flannel subnet lease name/);
    expect(() => machineRole(keys, ID, flannelGrants(keys, ''))).toThrow(/not a flannel subnet lease name/);
  });

  it('derives a password per machine and per overlord secret: 64 hex digits, the same every time', () => {
    const secret = 'ab'.repeat(32);
    const p = machinePassword(secret, ID);
    expect(p).toMatch(/^[0-9a-f]{64}$/);
    expect(machinePassword(secret, ID)).toBe(p);
    expect(machinePassword(secret, 'b'.repeat(32))).not.toBe(p);
    expect(machinePassword('cd'.repeat(32), ID)).not.toBe(p);
    expect(p).not.toContain(secret);
  });

  it('is delivered as an EnvironmentFile flanneld and the announce script both read, mode 0600', () => {
    expect(credentialsFile(ID, 'f'.repeat(64))).toEqual({
      path: '/etc/corekube/pki/discovery-credentials.env',
      content: `FLANNELD_ETCD_USERNAME=machine-${ID}\nFLANNELD_ETCD_PASSWORD=${'f'.repeat(64)}\n`,
      mode: '0600',
    });
  });
});
