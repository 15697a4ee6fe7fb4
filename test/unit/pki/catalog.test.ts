import { describe, expect, it } from 'vitest';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import {
  adminProfile,
  certEntriesOf,
  clusterProfiles,
  discoveryProfiles,
  machineProfiles,
  type CertEntry,
  type CertProfile,
} from '../../../overlord/trust/pki/catalog.ts';
import { PKI_FILES_BY_ROLE } from '../../../units/pki-paths.ts';
import { master1, master2, master3, minion1, minion2, spec } from './fixtures.ts';

const machines = [minion1, master2, master1, master3, minion2];

function entry(profiles: CertProfile[], e: CertEntry): CertProfile {
  const p = profiles.find((x) => x.owner.kind === 'machine' && x.owner.entry === e);
  if (!p) throw new Error(`no ${e}`);
  return p;
}

describe('the certificate catalog', () => {
  it('names every Kubernetes name of the API server, the first service IP, the load balancer VIP, its own address and loopback in the API server cert — no other master\'s', () => {
    const api = entry(machineProfiles(spec, master2), 'apiServer');
    expect(api).toMatchObject({ ca: 'cluster', commonName: 'kube-apiserver', usage: 'server', organizations: [] });
    expect(api.dnsNames).toEqual(['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', 'localhost']);
    expect(api.ipAddresses).toEqual(['10.96.0.1', '10.240.0.12', master2.ip, '127.0.0.1']);
    const direct = parseClusterSpec({ flags: { name: spec.name, masters: '3', 'api-load-balancer': 'none' } });
    expect(entry(machineProfiles(direct, master2), 'apiServer').ipAddresses).not.toContain('10.240.0.12');
  });

  it("carries 127.0.0.1 in every master's API server cert with node-local: the minions' proxy passes TLS through to whichever master it picks", () => {
    const nodeLocal = parseClusterSpec({ flags: { name: spec.name, masters: '3', 'api-load-balancer': 'node-local' } });
    for (const m of [master1, master2, master3]) {
      const api = entry(machineProfiles(nodeLocal, m), 'apiServer');
      expect(api.ipAddresses).toEqual(['10.96.0.1', m.ip, '127.0.0.1']);
    }
  });

  it('adds the API endpoint to the API server SANs as an IP or a DNS name', () => {
    const api = entry(machineProfiles(spec, master1, { apiEndpoints: ['203.0.113.7', 'api.example.org'] }), 'apiServer');
    expect(api.ipAddresses).toContain('203.0.113.7');
    expect(api.dnsNames).toContain('api.example.org');
  });

  it('refuses an API endpoint that cannot be a SAN, saying what to give', () => {
    expect(() => machineProfiles(spec, master1, { apiEndpoints: ['https://api.example.org:6443'] })).toThrow(/cannot be a certificate SAN/);
  });

  it('gives each component the identity Kubernetes authorizes', () => {
    const m = machineProfiles(spec, master1);
    const identity = (e: CertEntry) => {
      const p = entry(m, e);
      return { ca: p.ca, cn: p.commonName, o: p.organizations, usage: p.usage };
    };
    expect(identity('apiServerKubeletClient')).toEqual({ ca: 'cluster', cn: 'kube-apiserver-kubelet-client', o: ['system:masters'], usage: 'client' });
    expect(identity('apiServerEtcdClient')).toEqual({ ca: 'etcd', cn: 'kube-apiserver-etcd-client', o: [], usage: 'client' });
    expect(identity('controllerManager')).toEqual({ ca: 'cluster', cn: 'system:kube-controller-manager', o: [], usage: 'client' });
    expect(identity('scheduler')).toEqual({ ca: 'cluster', cn: 'system:kube-scheduler', o: [], usage: 'client' });
    // the API server's identity towards aggregated API servers: its own CA, the name --requestheader-allowed-names accepts
    expect(identity('frontProxyClient')).toEqual({ ca: 'front-proxy', cn: 'front-proxy-client', o: [], usage: 'client' });
    const n = machineProfiles(spec, minion1);
    expect(entry(n, 'kubeProxy')).toMatchObject({ ca: 'cluster', commonName: 'system:kube-proxy', usage: 'client' });
    expect(adminProfile()).toMatchObject({ ca: 'cluster', commonName: 'admin', organizations: ['system:masters'], usage: 'client' });
  });

  it("issues a kubelet cert in the node's name that also serves the node's IP and hostname", () => {
    const kubelet = entry(machineProfiles(spec, minion2), 'kubelet');
    expect(kubelet).toMatchObject({ ca: 'cluster', commonName: 'system:node:demo-minion-12', organizations: ['system:nodes'], usage: 'peer' });
    expect(kubelet.dnsNames).toEqual(['demo-minion-12']);
    expect(kubelet.ipAddresses).toEqual(['10.240.0.41']);
  });

  it("issues etcd server and peer certs for the master's IP and loopback, by the etcd CA, usable both ways", () => {
    const m = machineProfiles(spec, master3);
    for (const e of ['etcdServer', 'etcdPeer'] as const) {
      expect(entry(m, e)).toMatchObject({ ca: 'etcd', usage: 'peer', ipAddresses: ['10.240.0.34', '127.0.0.1'], dnsNames: ['demo-master-3', 'localhost'] });
    }
  });

  it("gives every machine a client certificate for discovery's etcd in its own name, by discovery's CA (flanneld speaks TLS only with one)", () => {
    for (const m of [master1, minion1, minion2]) {
      expect(entry(machineProfiles(spec, m), 'discoveryClient')).toMatchObject({ ca: 'discovery', commonName: `machine-${m.id}`, organizations: [], usage: 'client', dnsNames: [], ipAddresses: [] });
    }
  });

  it('gives each role exactly the key pairs its units read', () => {
    for (const m of [master1, minion1]) {
      const names = machineProfiles(spec, m).map((p) => (p.owner.kind === 'machine' ? p.owner.entry : ''));
      // CA certificates and the shared service-account key are delivered, not issued per machine
      const wanted = PKI_FILES_BY_ROLE[m.role].filter((e) => !['ca', 'etcdCa', 'frontProxyCa', 'serviceAccount'].includes(e));
      expect(names).toEqual(wanted);
      expect(certEntriesOf(m.role)).toEqual(wanted);
    }
  });

  it("keeps each machine's certificates under its own name", () => {
    const names = clusterProfiles(spec, machines).map((p) => p.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toContain(`machines/${minion1.id}/kubelet`);
    expect(names).toContain(`machines/${master1.id}/api-server-kubelet-client`);
  });

  it("signs discovery's server cert for the discovery IP of the address plan and the overlord's client cert as root", () => {
    const [server, client] = discoveryProfiles(spec);
    expect(server).toMatchObject({ ca: 'discovery', usage: 'peer', ipAddresses: ['10.240.0.10', '127.0.0.1'], dnsNames: ['localhost'] });
    expect(client).toMatchObject({ ca: 'discovery', commonName: 'root', usage: 'client', ipAddresses: [], dnsNames: [] });
  });

  it('is deterministic: a machine\'s profiles depend on the machine alone', () => {
    expect(machineProfiles(spec, { ...master1 })).toEqual(machineProfiles(spec, master1));
  });
});
