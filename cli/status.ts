import { readFileSync } from 'node:fs';
import path from 'node:path';
import { CA_NAMES } from '../overlord/trust/pki/catalog.ts';
import { ROOT_PASSWORD_NAME, ROOT_USER } from '../overlord/trust/discovery-auth.ts';
import { CorekubeError } from '../core/errors.ts';
import { createEtcdStore, type EtcdStoreOptions } from '../overlord/edges/etcd-store.ts';
import { clusterKeys } from '../contracts/keys.ts';
import { formatStatusTable, readStatus } from '../overlord/status.ts';
import type { Store } from '../overlord/edges/store.ts';
import { parseOptions, type Command } from './command.ts';

/** The etcd connection flags `corekube status` and `corekube overlord` share. */
export const ETCD_OPTIONS = {
  'etcd-endpoints': { type: 'string' },
  'etcd-ca': { type: 'string' },
  'etcd-cert': { type: 'string' },
  'etcd-key': { type: 'string' },
} as const;

export const ETCD_USAGE = `  --etcd-endpoints URLS  discovery etcd client URLs, comma-separated (https://10.240.0.10:2379) (required)
  --etcd-ca FILE         CA certificate (PEM) that signed etcd's serving certificate
  --etcd-cert FILE       client certificate (PEM) for etcd's client-cert auth
  --etcd-key FILE        its private key (PEM)`;

/** ETCD_USAGE and --state-dir, for an operator's commands. */
export const OPERATOR_ETCD_USAGE = `${ETCD_USAGE}
  --state-dir DIR        the overlord's state directory (/var/lib/corekube on the overlord server, also in its
                         container): discovery's CA and its root credentials are read from DIR/pki, instead of
                         the --etcd-* files — e.g. docker exec overlord corekube … --state-dir /var/lib/corekube`;

type EtcdFlags = { 'etcd-endpoints'?: string; 'etcd-ca'?: string; 'etcd-cert'?: string; 'etcd-key'?: string };

/**
 * What an operator's commands (`status`, `node remove`, `pki rotate-ca`) connect with besides ETCD_OPTIONS: the
 * overlord's state directory, from which discovery's CA and its root credentials are read — discovery authenticates
 * by user and password (it cannot require client certificates), and root's password lives only there.
 */
export const OPERATOR_ETCD_OPTIONS = { ...ETCD_OPTIONS, 'state-dir': { type: 'string' } } as const;

/** Opens the etcd store the flags describe (an operator's command: --state-dir may give root's credentials). */
export function openEtcdStore(values: EtcdFlags & { 'state-dir'?: string }): Store {
  return createEtcdStore(operatorStoreOptions(values));
}

/**
 * The connection of an operator's command: the flags' endpoints, and with --state-dir discovery's CA and root's
 * password from DIR/pki (the overlord's state directory: /var/lib/corekube on the overlord server, also inside
 * its container). Reads the files here, at the edge; never prints the password.
 */
export function operatorStoreOptions(values: EtcdFlags & { 'state-dir'?: string }): EtcdStoreOptions {
  const dir = values['state-dir'];
  if (dir === undefined) return etcdStoreOptions(values);
  const given = (['etcd-ca', 'etcd-cert', 'etcd-key'] as const).filter((f) => values[f] !== undefined);
  if (given.length > 0) throw new CorekubeError('E_USAGE', `--state-dir ${dir} gives discovery's CA and root credentials: leave out ${given.map((f) => `--${f}`).join(', ')}`, { hint: 'give --state-dir alone, or the --etcd-* files alone' });
  const { endpoints } = etcdStoreOptions({ 'etcd-endpoints': values['etcd-endpoints'] });
  const file = (name: string) => {
    const p = path.join(dir, 'pki', name);
    try {
      return readFileSync(p);
    } catch (err) {
      throw new CorekubeError('E_USAGE', `--state-dir ${dir}: ${p} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { hint: "give the overlord's state directory (/var/lib/corekube on the overlord server: docker exec overlord corekube …), as root" });
    }
  };
  return { endpoints, tls: { ca: file(`${CA_NAMES.discovery}.crt`) }, auth: { username: ROOT_USER, password: file(ROOT_PASSWORD_NAME).toString('utf8').trim() } };
}

/** The etcd connection the flags describe (the store's and the election's); reads the TLS files here, at the edge. */
export function etcdStoreOptions(values: EtcdFlags): EtcdStoreOptions {
  const endpoints = (values['etcd-endpoints'] ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (endpoints.length === 0) throw new CorekubeError('E_USAGE', '--etcd-endpoints is required', { hint: 'for example --etcd-endpoints https://10.240.0.10:2379' });
  for (const e of endpoints) {
    if (!/^https?:\/\/[^\s/]+(:\d+)?\/?$/.test(e)) throw new CorekubeError('E_USAGE', `--etcd-endpoints: ${JSON.stringify(e)} is not an http(s)://HOST:PORT URL`, { hint: 'for example https://10.240.0.10:2379' });
  }
  const read = (flag: string, path: string | undefined) => {
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new CorekubeError('E_USAGE', `--${flag} ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { hint: `give the path of a readable PEM file to --${flag}` });
    }
  };
  const ca = read('etcd-ca', values['etcd-ca']);
  const cert = read('etcd-cert', values['etcd-cert']);
  const key = read('etcd-key', values['etcd-key']);
  if ((cert === undefined) !== (key === undefined)) throw new CorekubeError('E_USAGE', '--etcd-cert and --etcd-key go together', { hint: 'give both, or neither' });
  if (cert !== undefined && ca === undefined) throw new CorekubeError('E_USAGE', '--etcd-cert needs --etcd-ca', { hint: 'give the CA that signed etcd\'s certificate with --etcd-ca' });
  return { endpoints, ...(ca ? { tls: { ca, ...(cert ? { cert } : {}), ...(key ? { key } : {}) } } : {}) };
}

const usage = `Usage: corekube status --etcd-endpoints URLS [--etcd-ca FILE --etcd-cert FILE --etcd-key FILE | --state-dir DIR] [--cluster NAME] [--json]

Shows every machine of a cluster — role, IP, state (pending, deploying, deployed, failed, unreachable,
removing), the current
step and the last error — read from the discovery etcd (machine records and the overlord's ledger),
and which overlord leads.

${OPERATOR_ETCD_USAGE}
  --cluster NAME         cluster name, the etcd key prefix /corekube/NAME/ (default corekube)
  --json                 print one JSON object: {"machines":[{"id","role","ip","state","step","error","subnet"}…],"leader":"ID"}
                         ("leader" is absent while no overlord leads; "rotation": a CA rotation, corekube pki rotate-ca)`;

export const statusCommand: Command = {
  path: ['status'],
  summary: 'show every machine of a cluster: role, IP, state, current step, last error',
  usage,
  async run(argv) {
    const { values } = parseOptions(argv, { ...OPERATOR_ETCD_OPTIONS, cluster: { type: 'string' }, json: { type: 'boolean' } }, usage);
    const cluster = values.cluster ?? 'corekube';
    if (!/^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$/.test(cluster)) throw new CorekubeError('E_USAGE', `--cluster ${JSON.stringify(cluster)} is not a cluster name`, { hint: 'the name given to corekube heat generate --name' });
    const store = openEtcdStore(values);
    try {
      const report = await readStatus(store, clusterKeys(cluster));
      process.stdout.write(values.json ? `${JSON.stringify(report)}\n` : formatStatusTable(report));
      return 0;
    } finally {
      await store.close();
    }
  },
};
