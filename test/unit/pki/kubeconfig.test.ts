import { describe, expect, it } from 'vitest';
import { findSecrets } from '../../../core/secrets.ts';
import { parseYaml } from '../../../core/yaml.ts';
import { embeddedKubeconfig, fileKubeconfig, renderKubeconfig } from '../../../overlord/trust/pki/kubeconfig.ts';
import { PKI_PATHS } from '../../../units/pki-paths.ts';

// stand-in PEM bodies: the builder only base64-encodes them
const ca = '-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n';
const cert = '-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n';
const key = '-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n';

describe('kubeconfig', () => {
  it('embeds the CA, cert and key as base64 under one context named user@cluster', () => {
    const text = renderKubeconfig(embeddedKubeconfig({ cluster: 'demo', server: 'https://203.0.113.7:6443', user: 'admin', caCert: ca, clientCert: cert, clientKey: key }));
    const doc = parseYaml(text) as Record<string, any>;
    expect(doc).toMatchObject({ apiVersion: 'v1', kind: 'Config', 'current-context': 'admin@demo' });
    expect(doc.clusters).toEqual([{ name: 'demo', cluster: { server: 'https://203.0.113.7:6443', 'certificate-authority-data': Buffer.from(ca).toString('base64') } }]);
    expect(Buffer.from(doc.users[0].user['client-key-data'], 'base64').toString()).toBe(key);
    expect(Buffer.from(doc.users[0].user['client-certificate-data'], 'base64').toString()).toBe(cert);
    expect(doc.contexts).toEqual([{ name: 'admin@demo', context: { cluster: 'demo', user: 'admin' } }]);
  });

  it('is recognised as a secret by the scanner that greps logs and artifacts', () => {
    const text = renderKubeconfig(embeddedKubeconfig({ cluster: 'demo', server: 'https://10.0.0.1:6443', user: 'admin', caCert: ca, clientCert: cert, clientKey: key }));
    expect(findSecrets(text).join('\n')).toMatch(/client-key-data/);
  });

  it('refers to files for components, holding no secret', () => {
    const text = renderKubeconfig(fileKubeconfig({ cluster: 'demo', server: 'https://127.0.0.1:6443', user: 'kubelet', caFile: PKI_PATHS.ca, certFile: PKI_PATHS.kubelet.cert, keyFile: PKI_PATHS.kubelet.key }));
    const doc = parseYaml(text) as Record<string, any>;
    expect(doc.users[0].user).toEqual({ 'client-certificate': PKI_PATHS.kubelet.cert, 'client-key': PKI_PATHS.kubelet.key });
    expect(findSecrets(text)).toEqual([]);
  });

  it('renders the component kubeconfig a reviewer diffs', async () => {
    // (an embedded kubeconfig is a credential: not snapshotted, so repository-wide secret scans stay clean)
    await expect(renderKubeconfig(fileKubeconfig({ cluster: 'demo', server: 'https://127.0.0.1:6443', user: 'system:kube-scheduler', caFile: PKI_PATHS.ca, certFile: PKI_PATHS.scheduler.cert, keyFile: PKI_PATHS.scheduler.key })))
      .toMatchFileSnapshot('__snapshots__/scheduler.kubeconfig.yaml');
  });
});
