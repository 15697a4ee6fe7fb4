import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdMissing, startEtcd, type EtcdServer } from '../../localcloud/etcd/etcd.ts';
import { missingParts } from '../harness/requirements.ts';
import { CorekubeError } from '../../core/errors.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { createEtcdStore } from '../../overlord/edges/etcd-store.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import type { Store } from '../../overlord/edges/store.ts';
import { ensureNetworkConfig, flannelConfig, reserveSubnet, subnetsByMachine, type FlannelConfig } from '../../overlord/pod-network/flannel.ts';

const skip = missingParts(etcdMissing());

const machineId = (i: number) => i.toString(16).padStart(32, '0');
const machineIp = (i: number) => `10.240.${Math.floor(i / 250)}.${(i % 250) + 2}`;

describe.skipIf(skip)('flannel subnets in a real etcd with TLS and client-cert auth', () => {
  let etcd: EtcdServer;
  const stores: Store[] = [];
  const connect = () => {
    const tls = etcd.tls!;
    const store = createEtcdStore({ endpoints: [etcd.endpoints[0]!], tls: { ca: Buffer.from(tls.ca), cert: Buffer.from(tls.cert), key: Buffer.from(tls.key) } });
    stores.push(store);
    return store;
  };

  beforeAll(async () => {
    etcd = await startEtcd({ tls: true });
  });
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await etcd?.destroy();
  });

  it('writes the network config once, accepts the same spec again, and refuses a changed pod network', async () => {
    const store = connect();
    const keys = clusterKeys('cfg');
    const spec = parseClusterSpec({ flags: { name: 'cfg' } });
    const first = await ensureNetworkConfig(store, keys, flannelConfig(spec));
    const stored = await store.get(`${keys.network}config`);
    expect(JSON.parse(stored!.value)).toEqual({ Network: '10.244.0.0/14', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } });
    expect(await ensureNetworkConfig(connect(), keys, flannelConfig(spec))).toEqual(first);
    expect((await store.get(`${keys.network}config`))!.modRevision).toBe(stored!.modRevision);

    const changed = parseClusterSpec({ flags: { name: 'cfg', 'pod-cidr': '10.32.0.0/16' } });
    const err = await ensureNetworkConfig(store, keys, flannelConfig(changed)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorekubeError);
    expect((err as CorekubeError).code).toBe('E_NETWORK_CONFIG_CHANGED');
    expect((err as CorekubeError).message).toContain('10.244.0.0/14');
    expect((err as CorekubeError).hint).toContain('podCidr=10.244.0.0/14');
    expect(JSON.parse((await store.get(`${keys.network}config`))!.value).Network).toBe('10.244.0.0/14');
  });

  it('gives 200 machines registering at once through two racing allocators 200 distinct subnets', async () => {
    const keys = clusterKeys('race');
    const spec = parseClusterSpec({ flags: { name: 'race', 'pod-cidr': '10.32.0.0/16', minions: '199' } });
    const [a, b] = [connect(), connect()];
    const config = await ensureNetworkConfig(a, keys, flannelConfig(spec));
    const machines = Array.from({ length: 200 }, (_, i) => ({ id: machineId(i), ip: machineIp(i) }));
    // every machine is allocated by both allocators at once: both must agree on one subnet
    const results = await Promise.all(machines.flatMap((m) => [reserveSubnet(a, keys, config, m), reserveSubnet(b, keys, config, m)]));
    for (let i = 0; i < machines.length; i++) expect(results[2 * i]).toBe(results[2 * i + 1]);
    const held = await subnetsByMachine(a, keys);
    expect(held.size).toBe(200);
    expect(new Set(held.values()).size).toBe(200);
    // each reservation is a TTL-less flannel lease naming the machine's IP
    const leases = await a.list(`${keys.network}subnets/`);
    expect(leases.kvs).toHaveLength(200);
    const byIp = new Map(leases.kvs.map((kv) => [JSON.parse(kv.value).PublicIP as string, kv.key.split('/').pop()!.replace('-', '/')]));
    for (const m of machines) expect(byIp.get(m.ip)).toBe(held.get(m.id));
  });

  it('gives a machine that comes back its subnet again, without writing, and follows a new IP', async () => {
    const store = connect();
    const keys = clusterKeys('back');
    const config: FlannelConfig = await ensureNetworkConfig(store, keys, flannelConfig(parseClusterSpec({ flags: { name: 'back' } })));
    const m = { id: machineId(7), ip: '10.240.0.77' };
    const first = await reserveSubnet(store, keys, config, m);
    const before = (await store.list(keys.prefix)).revision;
    expect(await reserveSubnet(store, keys, config, m)).toBe(first);
    expect((await store.list(keys.prefix)).revision).toBe(before);
    expect(await reserveSubnet(store, keys, config, { ...m, ip: '10.240.0.78' })).toBe(first);
    const lease = await store.get(`${keys.network}subnets/${first.replace('/', '-')}`);
    expect(JSON.parse(lease!.value).PublicIP).toBe('10.240.0.78');
  });

  it('reports exhaustion naming the network and the count, and reserves nothing more', async () => {
    const store = connect();
    const keys = clusterKeys('full');
    const config: FlannelConfig = { Network: '10.50.0.0/22', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } };
    for (let i = 0; i < 4; i++) await reserveSubnet(store, keys, config, { id: machineId(i), ip: machineIp(i) });
    const err = await reserveSubnet(store, keys, config, { id: machineId(99), ip: machineIp(99) }).catch((e: unknown) => e);
    expect((err as CorekubeError).code).toBe('E_SUBNET_EXHAUSTED');
    expect((err as CorekubeError).message).toBe('the pod network 10.50.0.0/22 has no free /24 subnet: all 4 are reserved');
    expect((await subnetsByMachine(store, keys)).size).toBe(4);
  });
});
