/**
 * `corekube overlord` as an operator runs it (the real CLI process, real etcd, the real SSH runner): it
 * logs JSON events, finds an announced machine, reports SSH failures with the reason and the next retry,
 * records them in the ledger (`corekube status` shows them), never logs its private key, and stops
 * cleanly on SIGTERM with exit code 0. The machine's SSH port is closed on purpose: deploying over SSH
 * into real machines is the e2e tests' job.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterKeys } from '../../contracts/keys.ts';
import { etcdMissing, startEtcd, type EtcdServer } from '../../localcloud/etcd/etcd.ts';
import { freePort } from '../harness/ports.ts';
import { missingParts } from '../harness/requirements.ts';
import { makeRecord } from '../unit/overlord/fakes.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
/** ssh-keygen makes the overlord's key pair here; `-?` prints usage and exits non-zero, ENOENT means absent */
const sshKeygenMissing = () => (spawnSync('ssh-keygen', ['-?'], { stdio: 'ignore' }).error ? 'ssh-keygen is not installed (Debian package openssh-client)' : undefined);
const skip = missingParts(etcdMissing(), sshKeygenMissing());

describe.skipIf(skip)('corekube overlord (the CLI process)', () => {
  let etcd: EtcdServer;
  let dir: string;
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    etcd = await startEtcd();
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-overlord-cli-'));
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'corekube-test', '-f', path.join(dir, 'id_ed25519')]);
  });

  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await etcd?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('logs JSON events, records an unreachable machine in the ledger, keeps its key secret and stops on SIGTERM', async () => {
    const cluster = 'cli';
    const master = makeRecord(1, 'master', { ip: '127.0.0.1', hostname: 'master-cli' });
    const client = new Etcd3(etcd.clientOptions());
    await client.put(clusterKeys(cluster).machine(master.id)).value(JSON.stringify(master));
    client.close();

    const closedPort = await freePort();
    child = spawn(
      process.execPath,
      [path.join(root, 'bin/corekube.js'), 'overlord', '--etcd-endpoints', etcd.endpoints[0]!, '--ssh-key', path.join(dir, 'id_ed25519'),
        '--ssh-port', String(closedPort), '--cluster', cluster, '--masters', '1', '--minions', '0', '--log-format', 'json'],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));

    const deadline = Date.now() + 30_000;
    while (!stdout.includes('"event":"step.retry"')) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`no step.retry event; stdout:\n${stdout}\nstderr:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }

    const status = JSON.parse((await run(process.execPath, [path.join(root, 'bin/corekube.js'), 'status', '--etcd-endpoints', etcd.endpoints[0]!, '--cluster', cluster, '--json'], { cwd: root })).stdout) as {
      machines: { id: string; state: string; step: string; error: string }[];
    };
    expect(status.machines).toEqual([expect.objectContaining({ id: master.id, state: 'deploying', step: 'write-units', error: expect.stringContaining('E_SSH') })]);

    child.kill('SIGTERM');
    expect(await exited).toBe(0);

    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const events = lines.map((l) => l.event);
    expect(events).toContain('overlord.start');
    expect(lines).toContainEqual(expect.objectContaining({ event: 'machine.discovered', machine: master.id, hostname: 'master-cli', role: 'master' }));
    expect(lines).toContainEqual(expect.objectContaining({ event: 'step.retry', hostname: 'master-cli', step: 'write-units', code: 'E_SSH', nextRetryMs: expect.any(Number) }));
    // it stops its overlord, then gives up the lead at once (a standby need not wait for the lease TTL)
    expect(events.slice(-3)).toEqual(['overlord.stopped', 'leader.stepped-down', 'leader.resigned']);

    const key = await readFile(path.join(dir, 'id_ed25519'), 'utf8');
    const body = key.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
    for (const text of [stdout, stderr]) {
      expect(text).not.toContain('PRIVATE KEY');
      for (let i = 0; i + 24 <= body.length; i += 24) expect(text).not.toContain(body.slice(i, i + 24));
    }
  });
});
