import type { KubernetesObject } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { clusterKeys } from '../../../contracts/keys.ts';
import { AddonApplier, readAddonRecords } from '../../../overlord/kubernetes/addon-applier.ts';
import type { Addon } from '../../../overlord/kubernetes/addons.ts';
import type { DeploymentView, KubernetesApi } from '../../../overlord/kubernetes/api.ts';
import { silentLogger } from '../../../overlord/edges/log.ts';
import { FakeClock, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const addon = (name: string): Addon => ({
  name,
  objects: [{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'kube-system' } }],
  hash: `h-${name}`,
  deployment: { namespace: 'kube-system', name },
});

/** An API that applies and reports every Deployment available. */
function fakeApi() {
  const applied: string[] = [];
  const api: KubernetesApi = {
    ready: async () => true,
    apply: async (objects: readonly KubernetesObject[]) => void applied.push(...objects.map((o) => o.metadata!.name!)),
    node: async () => undefined,
    listNodes: async () => [],
    patchNode: async () => {
      throw new Error('not here');
    },
    deployment: async (): Promise<DeploymentView> => ({ desired: 1, available: 1, updated: 1 }) as DeploymentView,
    podsOnNode: async () => [],
    evict: async () => 'gone' as const,
    deleteNode: async () => false,
    server: 'https://10.240.0.20:6443',
  };
  return { api, applied };
}

describe('the add-on applier', () => {
  it('applies the add-ons known later (the cloud provider\'s, once its credentials come) after the others, and counts them in availability', async () => {
    const { api, applied } = fakeApi();
    const store = new MemoryStore();
    let release: (a: readonly Addon[]) => void = () => {};
    const later = new Promise<readonly Addon[]>((r) => (release = r));
    const applier = new AddonApplier({ api, store, keys, clock: new FakeClock(), log: silentLogger() }, [addon('coredns')], {}, () => later);
    const signal = new AbortController().signal;
    const done = applier.applied(signal);
    await new Promise((r) => setTimeout(r, 10));
    expect(applied).toEqual(['coredns']);
    release([addon('openstack-cloud-controller-manager'), addon('cinder-csi')]);
    await done;
    expect(applied).toEqual(['coredns', 'openstack-cloud-controller-manager', 'cinder-csi']);
    expect([...(await readAddonRecords(store, keys)).keys()].sort()).toEqual(['cinder-csi', 'coredns', 'openstack-cloud-controller-manager']);
    expect(await applier.available(signal, 1_000)).toEqual([]);
  });

  it('is not available while a later add-on\'s Deployment is not', async () => {
    const { api } = fakeApi();
    const slow: KubernetesApi = { ...api, deployment: async (_ns, name) => ({ desired: 2, available: name === 'cinder-csi' ? 0 : 2, updated: 2 }) as DeploymentView };
    const applier = new AddonApplier({ api: slow, store: new MemoryStore(), keys, clock: new FakeClock(), log: silentLogger() }, [addon('coredns')], {}, async () => [addon('cinder-csi')]);
    const signal = new AbortController().signal;
    await applier.applied(signal);
    expect(await applier.available(signal, 0)).toEqual(['cinder-csi: 0/2 available']);
  });
});
