import path from 'node:path';
import { CorekubeError } from '../core/errors.ts';
import { CertificateAuthority, type Clock } from '../overlord/trust/pki/authority.ts';
import { embeddedKubeconfig, renderKubeconfig } from '../overlord/trust/pki/kubeconfig.ts';
import { DEFAULT_PKI_DIR, DirectoryPkiStore } from '../overlord/trust/pki/store.ts';
import { writeFileAtomic } from '../core/private-files.ts';
import { parseOptions, type Command } from './command.ts';

const usage = `Usage: corekube kubeconfig --server https://HOST:6443 [--pki-dir DIR] [--name CLUSTER] [-o FILE]

Writes an admin kubeconfig (user admin in system:masters, certificates embedded) for the cluster whose PKI
is in DIR — the overlord's PKI directory. The admin certificate is issued by the cluster CA found there
(once; re-issued only when it expires within 30 days); a missing CA is an error, never made anew.

The kubeconfig holds the admin's private key: with -o it is written to FILE with mode 0600; without -o it
goes to stdout, which must not be a terminal (redirect or pipe it, e.g. from the overlord server:
  docker exec overlord corekube kubeconfig --server https://203.0.113.7:6443 > admin.conf).

  --server URL       https URL of the Kubernetes API (required)
  --pki-dir DIR      the overlord's PKI directory (default ${DEFAULT_PKI_DIR})
  --name CLUSTER     cluster name in the kubeconfig (default corekube)
  -o, --output FILE  write the kubeconfig to FILE (mode 0600) instead of stdout`;

/** The process edges the command uses, passed in so tests can give a terminal-like stdout and a clock. */
export interface KubeconfigIo {
  readonly stdout: { readonly isTTY?: boolean; write(text: string): unknown };
  readonly stderr: { write(text: string): unknown };
  readonly clock: Clock;
}

const processIo: KubeconfigIo = { stdout: process.stdout, stderr: process.stderr, clock: { now: () => Date.now() } };

const NAME = /^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/;

export async function runKubeconfig(argv: readonly string[], io: KubeconfigIo = processIo): Promise<number> {
  const { values } = parseOptions(
    argv,
    {
      server: { type: 'string' },
      'pki-dir': { type: 'string' },
      name: { type: 'string' },
      output: { type: 'string', short: 'o' },
    },
    usage,
  );
  const server = parseServer(values.server);
  const name = values.name ?? 'corekube';
  if (!NAME.test(name)) throw new CorekubeError('E_USAGE', `--name ${JSON.stringify(name)} is not a valid cluster name`, { hint: 'use lowercase letters, digits, dots and dashes, e.g. --name prod-k8s' });
  const output = values.output;
  // Decided: a kubeconfig is a credential; a terminal keeps it in scrollback and screen shares show it.
  if (output === undefined && io.stdout.isTTY === true) {
    throw new CorekubeError('E_USAGE', 'refusing to print a kubeconfig (it holds the admin private key) to a terminal', {
      hint: 'write it to a file with -o FILE (mode 0600), or redirect stdout: corekube kubeconfig … > admin.conf',
    });
  }

  const pkiDir = path.resolve(values['pki-dir'] ?? DEFAULT_PKI_DIR);
  const authority = new CertificateAuthority({ store: new DirectoryPkiStore(pkiDir), clock: io.clock, cluster: name, createCas: false });
  const admin = await authority.ensureAdmin();
  const text = renderKubeconfig(
    embeddedKubeconfig({ cluster: name, server, user: 'admin', caCert: admin.ca, clientCert: admin.client.cert, clientKey: admin.client.key }),
  );

  if (output === undefined) {
    io.stdout.write(text);
    return 0;
  }
  const file = path.resolve(output);
  await writeFileAtomic(file, text);
  io.stderr.write(`wrote the admin kubeconfig to ${file} (mode 0600); try: kubectl --kubeconfig ${file} get nodes\n`);
  return 0;
}

function parseServer(value: string | undefined): string {
  const example = 'for example --server https://203.0.113.7:6443';
  if (value === undefined) throw new CorekubeError('E_USAGE', '--server is required', { hint: example });
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CorekubeError('E_USAGE', `--server ${JSON.stringify(value)} is not a URL`, { hint: example });
  }
  if (url.protocol !== 'https:' || url.hostname === '' || url.username !== '' || url.password !== '' || (url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    throw new CorekubeError('E_USAGE', `--server ${JSON.stringify(value)} must be https://HOST[:PORT] (the API server speaks TLS only)`, { hint: example });
  }
  return `https://${url.host}`;
}

export const kubeconfigCommand: Command = {
  path: ['kubeconfig'],
  summary: "write an admin kubeconfig (mode 0600) from the overlord's PKI",
  usage,
  run: (argv) => runKubeconfig(argv),
};
