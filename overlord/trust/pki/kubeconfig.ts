import { toYaml } from '../../../core/yaml.ts';

/**
 * Kubeconfigs as objects (pure), serialised once by core/yaml.ts. Two kinds:
 * - embedded: the CA, cert and key inline as base64 (`*-data`), for a person's kubectl (`corekube kubeconfig`);
 *   it is a credential — write it mode 0600 and never log it;
 * - by file: paths to the files the PKI delivered, for the components on a machine (no secret inside).
 */
export interface Kubeconfig {
  readonly apiVersion: 'v1';
  readonly kind: 'Config';
  readonly clusters: readonly { readonly name: string; readonly cluster: Readonly<Record<string, string>> }[];
  readonly users: readonly { readonly name: string; readonly user: Readonly<Record<string, string>> }[];
  readonly contexts: readonly { readonly name: string; readonly context: { readonly cluster: string; readonly user: string } }[];
  readonly 'current-context': string;
  readonly preferences: Readonly<Record<string, never>>;
}

export interface EmbeddedKubeconfigInput {
  /** cluster name (the kubeconfig's cluster entry) */
  readonly cluster: string;
  /** https URL of the API server */
  readonly server: string;
  /** user name in the kubeconfig (the cert's CN decides who the API server sees) */
  readonly user: string;
  readonly caCert: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

export interface FileKubeconfigInput {
  readonly cluster: string;
  readonly server: string;
  readonly user: string;
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

const b64 = (pem: string) => Buffer.from(pem, 'utf8').toString('base64');

export function embeddedKubeconfig(input: EmbeddedKubeconfigInput): Kubeconfig {
  return build(input.cluster, input.user, { server: input.server, 'certificate-authority-data': b64(input.caCert) }, {
    'client-certificate-data': b64(input.clientCert),
    'client-key-data': b64(input.clientKey),
  });
}

export function fileKubeconfig(input: FileKubeconfigInput): Kubeconfig {
  return build(input.cluster, input.user, { server: input.server, 'certificate-authority': input.caFile }, {
    'client-certificate': input.certFile,
    'client-key': input.keyFile,
  });
}

export function renderKubeconfig(config: Kubeconfig): string {
  return toYaml(config);
}

function build(cluster: string, user: string, clusterFields: Record<string, string>, userFields: Record<string, string>): Kubeconfig {
  const context = `${user}@${cluster}`;
  return Object.freeze({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: cluster, cluster: clusterFields }],
    users: [{ name: user, user: userFields }],
    contexts: [{ name: context, context: { cluster, user } }],
    'current-context': context,
    preferences: {},
  });
}
