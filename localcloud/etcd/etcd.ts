/**
 * A real etcd (the pinned one, built from its Go module; scripts/setup installs it into /usr/local/bin) for tests: one member on 127.0.0.1 (plus, optionally, addresses
 * on a harness bridge so machines can reach it), free ports, a temporary data dir, optional TLS with
 * client-cert auth. It can be stopped, killed and started again on the same ports with the same data.
 * Everything it starts is removed on `destroy()` or, failing that, when the process exits.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { openSync, closeSync, rmSync } from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import type { IOptions } from 'etcd3';
import { onExit } from '../cleanup.ts';
import { freePort } from '../ports.ts';

const run = promisify(execFile);

/** PEM material of a TLS etcd: the CA, and a client cert/key (CN `root` unless issued otherwise). */
export interface EtcdTls {
  readonly dir: string;
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface StartEtcdOptions {
  /** addresses to listen on besides 127.0.0.1, e.g. a harness bridge's `.1` so machines can reach etcd */
  readonly listenOn?: readonly string[];
  /** serve https with client-cert auth; the server cert's SANs cover 127.0.0.1, localhost and `listenOn` */
  readonly tls?: boolean;
  /** how long to wait for /health (default 15 s) */
  readonly readyTimeoutMs?: number;
}

export interface EtcdServer {
  readonly name: string;
  readonly dir: string;
  readonly clientPort: number;
  readonly peerPort: number;
  /** client URLs, 127.0.0.1 first */
  readonly endpoints: readonly string[];
  readonly tls: EtcdTls | undefined;
  /** pid of the running etcd, undefined while stopped */
  readonly pid: number | undefined;
  /** options for the `etcd3` client (hosts + credentials) */
  clientOptions(): IOptions;
  /** issues another client certificate (for etcd users authenticated by CN) signed by this etcd's CA */
  issueClientCert(commonName: string): Promise<{ cert: string; key: string; certFile: string; keyFile: string }>;
  /** SIGTERM, waits for the exit; data kept */
  stop(): Promise<void>;
  /** SIGKILL, waits for the exit; data kept */
  kill(): Promise<void>;
  /** starts again on the same ports with the same data and waits until healthy */
  start(): Promise<void>;
  restart(): Promise<void>;
  /** kills etcd and deletes its directory */
  destroy(): Promise<void>;
}

/** Why etcd cannot run here, or undefined when it can. */
export function etcdMissing(): string | undefined {
  const r = spawnSync('etcd', ['--version'], { stdio: 'ignore' });
  return r.status === 0 ? undefined : 'etcd is not installed (bash scripts/setup builds the pinned one and installs it into /usr/local/bin)';
}

export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdServer> {
  const hosts = ['127.0.0.1', ...(options.listenOn ?? [])];
  const dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-etcd-'));
  const tls = options.tls ? await makeTls(dir, hosts) : undefined;
  const etcd = new LocalEtcd(dir, hosts, tls, options.readyTimeoutMs ?? 15_000);
  await etcd.firstStart();
  return etcd;
}

/** One etcd member on this machine: its process, its ports and data directory kept across stops. */
class LocalEtcd implements EtcdServer {
  readonly name = `ck-${randomBytes(4).toString('hex')}`;
  clientPort = 0;
  peerPort = 0;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private readonly scheme: 'http' | 'https';
  private readonly unregister: () => void;

  constructor(
    readonly dir: string,
    private readonly hosts: readonly string[],
    readonly tls: EtcdTls | undefined,
    private readonly readyTimeoutMs: number,
  ) {
    this.scheme = tls ? 'https' : 'http';
    this.unregister = onExit(`etcd ${this.name}`, () => {
      const child = this.child;
      if (child?.pid && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      rmSync(dir, { recursive: true, force: true });
    });
  }

  get endpoints(): readonly string[] {
    return this.hosts.map((h) => `${this.scheme}://${h}:${this.clientPort}`);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  clientOptions(): IOptions {
    const tls = this.tls;
    return {
      hosts: [`${this.scheme}://127.0.0.1:${this.clientPort}`],
      ...(tls ? { credentials: { rootCertificate: Buffer.from(tls.ca), privateKey: Buffer.from(tls.key), certChain: Buffer.from(tls.cert) } } : {}),
    };
  }

  issueClientCert(cn: string): Promise<{ cert: string; key: string; certFile: string; keyFile: string }> {
    if (!this.tls) throw new Error('issueClientCert needs an etcd started with tls: true');
    return issueCert(this.tls.dir, `client-${cn.replace(/[^A-Za-z0-9_.-]/g, '_')}`, cn, 'extendedKeyUsage=clientAuth\n');
  }

  stop(): Promise<void> {
    return this.signal('SIGTERM');
  }

  kill(): Promise<void> {
    return this.signal('SIGKILL');
  }

  async start(): Promise<void> {
    if (this.child) return;
    await this.waitHealthy(this.spawn());
  }

  async restart(): Promise<void> {
    await this.signal('SIGTERM');
    await this.waitHealthy(this.spawn());
  }

  async destroy(): Promise<void> {
    await this.signal('SIGKILL');
    await rm(this.dir, { recursive: true, force: true });
    this.unregister();
  }

  /** The first start picks ports; a lost race for a port (etcd dies on a busy port) picks new ones. */
  async firstStart(): Promise<void> {
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      this.clientPort = await freePort(this.hosts);
      this.peerPort = await freePort(['127.0.0.1'], [this.clientPort]);
      try {
        await this.waitHealthy(this.spawn());
        return;
      } catch (err) {
        lastError = err;
        await this.signal('SIGKILL');
        await rm(path.join(this.dir, 'data'), { recursive: true, force: true });
      }
    }
    this.unregister();
    await rm(this.dir, { recursive: true, force: true });
    throw lastError;
  }

  private spawn(): ChildProcess {
    const { name, scheme, tls, clientPort, peerPort } = this;
    const urls = (port: number) => this.hosts.map((h) => `${scheme}://${h}:${port}`).join(',');
    const args = [
      '--name', name,
      '--data-dir', path.join(this.dir, 'data'),
      '--listen-client-urls', urls(clientPort),
      '--advertise-client-urls', `${scheme}://127.0.0.1:${clientPort}`,
      '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-cluster', `${name}=http://127.0.0.1:${peerPort}`,
      '--initial-cluster-state', 'new',
      '--log-level', 'warn',
      '--logger', 'zap',
      ...(tls ? ['--cert-file', path.join(tls.dir, 'server.pem'), '--key-file', path.join(tls.dir, 'server-key.pem'),
        '--client-cert-auth', '--trusted-ca-file', tls.caFile] : []),
    ];
    const log = openSync(path.join(this.dir, 'etcd.log'), 'a');
    const proc = spawn('etcd', args, { stdio: ['ignore', log, log] });
    closeSync(log);
    this.child = proc;
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    return proc;
  }

  private async waitHealthy(proc: ChildProcess): Promise<void> {
    const { scheme, clientPort, tls } = this;
    const deadline = Date.now() + this.readyTimeoutMs;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`etcd exited (${proc.exitCode ?? proc.signalCode}) before it was healthy:\n${await tail(path.join(this.dir, 'etcd.log'))}`);
      }
      const health = await request(scheme, clientPort, 'GET', '/health', undefined, tls).catch(() => undefined);
      if (health && /"health":\s*"true"/.test(health)) {
        // the port could belong to another etcd that answers for us: check the member is ours
        const members = await request(scheme, clientPort, 'POST', '/v3/cluster/member/list', '{}', tls).catch(() => '');
        if (members.includes(`"name":"${this.name}"`)) return;
        throw new Error(`port ${clientPort} is answered by another etcd`);
      }
      if (Date.now() > deadline) throw new Error(`etcd not healthy within ${this.readyTimeoutMs} ms:\n${await tail(path.join(this.dir, 'etcd.log'))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const proc = this.child;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill(sig);
      await this.exited;
    }
    this.child = undefined;
  }
}

function request(scheme: 'http' | 'https', port: number, method: string, urlPath: string, body: string | undefined, tls: EtcdTls | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const opts = { host: '127.0.0.1', port, method, path: urlPath, timeout: 1000, ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {}) };
    const req = (scheme === 'https' ? https : http).request(opts, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve(text));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

async function tail(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-20).join('\n');
}

async function makeTls(dir: string, hosts: readonly string[]): Promise<EtcdTls> {
  const tlsDir = path.join(dir, 'tls');
  await mkdir(tlsDir, { mode: 0o700 });
  const caFile = path.join(tlsDir, 'ca.pem');
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', path.join(tlsDir, 'ca-key.pem'), '-out', caFile, '-days', '2', '-subj', '/CN=corekube-test-etcd-ca']);
  const sans = ['DNS:localhost', ...hosts.map((h) => `IP:${h}`)].join(',');
  await issueCert(tlsDir, 'server', 'etcd-server', `subjectAltName=${sans}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  const client = await issueCert(tlsDir, 'client', 'root', 'extendedKeyUsage=clientAuth\n');
  return { dir: tlsDir, caFile, certFile: client.certFile, keyFile: client.keyFile, ca: await readFile(caFile, 'utf8'), cert: client.cert, key: client.key };
}

async function issueCert(tlsDir: string, base: string, cn: string, ext: string) {
  const keyFile = path.join(tlsDir, `${base}-key.pem`);
  const certFile = path.join(tlsDir, `${base}.pem`);
  const csr = path.join(tlsDir, `${base}.csr`);
  const extFile = path.join(tlsDir, `${base}.ext`);
  await writeFile(extFile, ext);
  await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', csr, '-subj', `/CN=${cn}`]);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', path.join(tlsDir, 'ca.pem'), '-CAkey', path.join(tlsDir, 'ca-key.pem'),
    '-CAcreateserial', '-out', certFile, '-days', '2', '-extfile', extFile]);
  return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8'), certFile, keyFile };
}
