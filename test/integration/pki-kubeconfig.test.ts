import { execFile, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKubeconfig } from '../../cli/kubeconfig.ts';
import { findSecrets } from '../../core/secrets.ts';
import { parseYaml } from '../../core/yaml.ts';
import { CertificateAuthority } from '../../overlord/trust/pki/authority.ts';
import { ADMIN_NAME } from '../../overlord/trust/pki/catalog.ts';
import { DirectoryPkiStore } from '../../overlord/trust/pki/store.ts';
import { onExit } from '../harness/cleanup.ts';
import { missingParts } from '../harness/requirements.ts';

/**
 * `corekube kubeconfig`, run as a user runs it (bin/corekube.js in a child process) against a PKI directory
 * the overlord made: the file is 0600, parses as YAML, and its embedded admin cert verifies against the
 * cluster CA and matches its key. Nothing secret reaches stderr.
 */
const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const skip = missingParts(spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0 ? undefined : 'openssl is not installed (Debian package openssl)');

async function corekube(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [path.join(root, 'bin/corekube.js'), ...args], { cwd: root });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe.skipIf(skip)('corekube kubeconfig', () => {
  let dir: string;
  let pkiDir: string;
  let clusterCa: string;
  let unregister: () => void;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-kubeconfig-'));
    unregister = onExit(`kubeconfig dir ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    pkiDir = path.join(dir, 'pki');
    // the overlord made the cluster CA at its first boot
    clusterCa = (await new CertificateAuthority({ store: new DirectoryPkiStore(pkiDir), clock: { now: () => Date.now() }, cluster: 'demo' }).ensureCa('cluster')).cert;
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
    unregister();
  });

  it('writes a 0600 admin kubeconfig whose embedded cert verifies against the cluster CA and matches its key', async () => {
    const out = path.join(dir, 'admin.conf');
    // an older copy, world-readable, is replaced by a private one
    await writeFile(out, 'old', { mode: 0o644 });
    const r = await corekube('kubeconfig', '--pki-dir', pkiDir, '--server', 'https://203.0.113.7:6443', '--name', 'demo', '-o', out);
    expect(r).toMatchObject({ code: 0, stdout: '' });
    expect(r.stderr).toMatch(/wrote the admin kubeconfig to .*admin\.conf \(mode 0600\)/);
    expect(findSecrets(r.stderr)).toEqual([]);
    expect(((await stat(out)).mode & 0o777).toString(8)).toBe('600');

    const doc = parseYaml(await readFile(out, 'utf8')) as Record<string, any>;
    expect(doc.clusters[0].cluster.server).toBe('https://203.0.113.7:6443');
    expect(doc['current-context']).toBe('admin@demo');
    const user = doc.users[0].user as Record<string, string>;
    const decode = (k: string) => Buffer.from(user[k]!, 'base64').toString();
    expect(decode('client-key-data')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(Buffer.from(doc.clusters[0].cluster['certificate-authority-data'], 'base64').toString()).toBe(clusterCa);

    const ca = path.join(dir, 'ca.crt');
    const cert = path.join(dir, 'admin.crt');
    const key = path.join(dir, 'admin.key');
    await writeFile(ca, clusterCa);
    await writeFile(cert, decode('client-certificate-data'));
    await writeFile(key, decode('client-key-data'), { mode: 0o600 });
    const verify = await run('openssl', ['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', ca, cert]);
    expect(verify.stdout).toMatch(/: OK/);
    const subject = await run('openssl', ['x509', '-noout', '-subject', '-in', cert]);
    expect(subject.stdout).toMatch(/O\s*=\s*system:masters, CN\s*=\s*admin/);
    const fromKey = await run('openssl', ['pkey', '-pubout', '-in', key]);
    const fromCert = await run('openssl', ['x509', '-noout', '-pubkey', '-in', cert]);
    expect(fromKey.stdout).toBe(fromCert.stdout);
  });

  it('reuses the admin cert on the next run and prints to stdout when it is not a terminal', async () => {
    const stored = await readFile(path.join(pkiDir, `${ADMIN_NAME}.crt`), 'utf8');
    const r = await corekube('kubeconfig', '--pki-dir', pkiDir, '--server', 'https://10.240.0.32:6443');
    expect(r.code).toBe(0);
    const doc = parseYaml(r.stdout) as Record<string, any>;
    expect(Buffer.from(doc.users[0].user['client-certificate-data'], 'base64').toString()).toBe(stored);
    expect(doc.clusters[0].name).toBe('corekube');
  });

  it('refuses to print the kubeconfig to a terminal', async () => {
    const written: string[] = [];
    const tty = { isTTY: true, write: (t: string) => written.push(t) };
    await expect(runKubeconfig(['--pki-dir', pkiDir, '--server', 'https://10.240.0.32:6443'], { stdout: tty, stderr: tty, clock: { now: () => Date.now() } }))
      .rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringMatching(/refusing to print a kubeconfig/) });
    expect(written).toEqual([]);
  });

  it('fails, making nothing, when the directory holds no cluster CA', async () => {
    const empty = path.join(dir, 'empty');
    const r = await corekube('kubeconfig', '--pki-dir', empty, '--server', 'https://10.240.0.32:6443', '-o', path.join(dir, 'never.conf'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_PKI: there is no cluster CA in the PKI store — point --pki-dir at the overlord's PKI directory/);
    await expect(stat(path.join(dir, 'never.conf'))).rejects.toThrow(/ENOENT/);
    await expect(stat(empty)).rejects.toThrow(/ENOENT/);
  });

  it('rejects a server that is not https://HOST[:PORT] as a usage error', async () => {
    for (const server of ['http://10.0.0.1:6443', '10.0.0.1:6443', 'https://10.0.0.1:6443/api']) {
      const r = await corekube('kubeconfig', '--pki-dir', pkiDir, '--server', server);
      expect({ server, code: r.code }).toEqual({ server, code: 2 });
      expect(r.stderr).toMatch(/--server/);
    }
  });

  it('after a rotation of the cluster CA reaches phase sign, issues the admin certificate by the next CA and embeds both CAs', async () => {
    const authority = new CertificateAuthority({ store: new DirectoryPkiStore(pkiDir), clock: { now: () => Date.now() }, cluster: 'demo' });
    await authority.rotate('cluster', 'trust');
    await authority.rotate('cluster', 'sign');
    const r = await corekube('kubeconfig', '--pki-dir', pkiDir, '--server', 'https://203.0.113.7:6443', '--name', 'demo');
    expect(r.code).toBe(0);
    const doc = parseYaml(r.stdout) as Record<string, any>;
    const bundle = Buffer.from(doc.clusters[0].cluster['certificate-authority-data'], 'base64').toString();
    const [old, next] = bundle.split(/(?<=-----END CERTIFICATE-----\n)/);
    expect(old).toBe(clusterCa);
    expect(next).toMatch(/^-----BEGIN CERTIFICATE-----/);
    const cert = path.join(dir, 'admin-next.crt');
    await writeFile(cert, Buffer.from(doc.users[0].user['client-certificate-data'], 'base64').toString());
    const files = { old: path.join(dir, 'old-ca.crt'), next: path.join(dir, 'next-ca.crt'), bundle: path.join(dir, 'bundle.crt') };
    await writeFile(files.old, old!);
    await writeFile(files.next, next!);
    await writeFile(files.bundle, bundle);
    const verify = (caFile: string) => run('openssl', ['verify', '-x509_strict', '-purpose', 'sslclient', '-CAfile', caFile, cert]).then((o) => o.stdout, (e: { stdout?: string; stderr?: string }) => `${e.stdout ?? ''}${e.stderr ?? ''}`);
    expect(await verify(files.next)).toMatch(/: OK/);
    expect(await verify(files.bundle)).toMatch(/: OK/);
    expect(await verify(files.old)).not.toMatch(/: OK/);
  });
});
