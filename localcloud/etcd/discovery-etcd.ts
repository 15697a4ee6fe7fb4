import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { bootPlan } from '../../cloud-config/index.ts';
import { DISCOVERY_TLS_FILES } from '../../cloud-config/machine-paths.ts';
import { discoveryClientOptions, discoveryRbac, ensureDiscoveryAuth, ensureDiscoveryPasswords, pingDiscovery, ROOT_USER, type DiscoveryConnection } from '../../overlord/trust/discovery-auth.ts';
import type { EtcdStoreOptions } from '../../overlord/edges/etcd-store.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import { CertificateAuthority, type DiscoveryPki } from '../../overlord/trust/pki/authority.ts';
import { DirectoryPkiStore } from '../../overlord/trust/pki/store.ts';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { freePort } from '../ports.ts';
import { until } from '../until.ts';

/**
 * The flags of the discovery-etcd.service cloud-config renders (its ExecStart) that decide how it
 * authenticates clients — TLS files (moved to `dir`) and password hashing — and what it accepts (request size,
 * quota): a test's etcd then authenticates clients and bounds what they write exactly as discovery's will.
 */
export function discoveryAuthFlags(spec: ClusterSpec, dir: string): string[] {
  const unit = bootPlan('discovery', spec).units.find((u) => u.name === 'discovery-etcd.service')!.content;
  const exec = /^ExecStart=([\s\S]*?)(?:\n(?![ \t])|$)/m.exec(unit.replace(/\\\n\s*/g, ' '))![1]!;
  const authFlag = /^--(cert-file|key-file|trusted-ca-file|client-cert-auth|auto-tls|client-crl-file|bcrypt-cost|auth-token|auth-token-ttl|max-request-bytes|quota-backend-bytes)(=|$)/;
  return exec
    .split(/\s+/)
    .filter((a) => authFlag.test(a))
    .map((a) => a.replace(/=(\/\S+)$/, (_, file: string) => `=${path.join(dir, path.basename(file))}`));
}

export interface DiscoveryEtcd {
  readonly proc: ChildProcess;
  /** https://<host>:<port> */
  readonly endpoint: string;
  readonly port: number;
  /** the flags it runs with, from the rendered unit */
  readonly tlsFlags: readonly string[];
}

/**
 * A real etcd run the way discovery runs it: the overlord's discovery certificate (`pki`) pushed into
 * `<dir>/tls` as the overlord pushes it, the unit's TLS flags, data and log (`etcd.log`) under `dir`. The
 * caller waits for it to answer and kills it (it is the caller's to clean up).
 */
export async function startDiscoveryEtcd(options: { spec: ClusterSpec; dir: string; pki: DiscoveryPki; host?: string; port?: number }): Promise<DiscoveryEtcd> {
  const { dir, pki } = options;
  const tls = path.join(dir, 'tls');
  await mkdir(tls, { recursive: true, mode: 0o700 });
  await writeFile(path.join(tls, DISCOVERY_TLS_FILES.ca), pki.ca);
  await writeFile(path.join(tls, DISCOVERY_TLS_FILES.cert), pki.server.cert);
  await writeFile(path.join(tls, DISCOVERY_TLS_FILES.key), pki.server.key, { mode: 0o600 });
  const tlsFlags = discoveryAuthFlags(options.spec, tls);
  const port = options.port ?? (await freePort());
  const peerPort = await freePort(['127.0.0.1'], [port]);
  const endpoint = `https://${options.host ?? '127.0.0.1'}:${port}`;
  const log = openSync(path.join(dir, 'etcd.log'), 'a');
  const proc = spawn('etcd', [
    '--name', 'discovery', '--data-dir', path.join(dir, 'data'),
    '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
    '--initial-cluster', `discovery=http://127.0.0.1:${peerPort}`, '--initial-cluster-state', 'new',
    '--log-level', 'warn', '--logger', 'zap', ...tlsFlags,
  ], { stdio: ['ignore', log, log] });
  closeSync(log);
  return { proc, endpoint, port, tlsFlags };
}

export interface AuthedDiscovery {
  readonly etcd: DiscoveryEtcd;
  readonly pki: DiscoveryPki;
  readonly passwords: { readonly root: string; readonly machines: string };
  readonly joinToken: string;
  readonly conn: DiscoveryConnection;
  /** the overlord's store options: TLS with the discovery CA, as `root` */
  readonly rootStore: EtcdStoreOptions;
  /** an etcd3 client of discovery as `username` (root, joiner, machine-<id>), closed by `close()` */
  client(auth: { username: string; password: string }): Etcd3;
  /** kills etcd (its directory is the caller's) and closes the clients */
  close(): void;
}

/**
 * Discovery as the overlord leaves it once booted: startDiscoveryEtcd with a PKI made in `<dir>/state/pki`, then
 * auth set up by the overlord's own code (root, joiner with `joinToken`) — waits until it answers.
 */
export async function startAuthedDiscovery(options: { spec: ClusterSpec; dir: string; joinToken: string; host?: string; port?: number }): Promise<AuthedDiscovery> {
  const pkiStore = new DirectoryPkiStore(path.join(options.dir, 'state', 'pki'));
  const pki = await new CertificateAuthority({ store: pkiStore, clock: { now: () => Date.now() }, cluster: options.spec.name }).ensureDiscovery(options.spec);
  const passwords = await ensureDiscoveryPasswords(pkiStore);
  const etcd = await startDiscoveryEtcd({ spec: options.spec, dir: options.dir, pki, ...(options.host ? { host: options.host } : {}), ...(options.port ? { port: options.port } : {}) });
  const clients: Etcd3[] = [];
  const close = () => {
    for (const c of clients) c.close();
    if (etcd.proc.exitCode === null && etcd.proc.signalCode === null) etcd.proc.kill('SIGKILL');
  };
  try {
    const conn: DiscoveryConnection = { endpoints: [etcd.endpoint], ca: pki.ca, callTimeoutMs: 5_000 };
    await until('discovery etcd to answer', 20_000, async () => {
      if (etcd.proc.exitCode !== null) throw new Error(`etcd exited: ${await readFile(path.join(options.dir, 'etcd.log'), 'utf8')}`);
      return pingDiscovery(conn).then(() => true, () => undefined);
    });
    await ensureDiscoveryAuth(conn, discoveryRbac(clusterKeys(options.spec.name), { root: passwords.root, joiner: options.joinToken }));
    return {
      etcd,
      pki,
      passwords,
      joinToken: options.joinToken,
      conn,
      rootStore: Object.freeze({ endpoints: [etcd.endpoint], tls: { ca: Buffer.from(pki.ca) }, auth: { username: ROOT_USER, password: passwords.root } }),
      client: (auth) => {
        const c = new Etcd3(discoveryClientOptions(conn, auth));
        clients.push(c);
        return c;
      },
      close,
    };
  } catch (err) {
    close();
    throw err;
  }
}
