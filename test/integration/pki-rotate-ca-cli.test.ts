/**
 * `corekube pki rotate-ca` as an operator runs it (the real CLI process, a real etcd) against a leader's rotation
 * loop (overlord/trust/ca-rotation.ts over the real etcd store, a real authority in memory; every machine reported
 * rolled out): each phase asked for is carried out within the poll, `--wait` returns once it is rolled out,
 * `corekube status --json` shows it, and a phase out of order is refused with the fix (exit 2), nothing written.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterKeys } from '../../contracts/keys.ts';
import { systemClock } from '../../core/clock.ts';
import { etcdMissing, startEtcd, type EtcdServer } from '../../localcloud/etcd/etcd.ts';
import { createEtcdStore } from '../../overlord/edges/etcd-store.ts';
import { silentLogger } from '../../overlord/edges/log.ts';
import type { Store } from '../../overlord/edges/store.ts';
import { CaRotations } from '../../overlord/trust/ca-rotation.ts';
import { CertificateAuthority } from '../../overlord/trust/pki/authority.ts';
import { MemoryPkiStore } from '../../overlord/trust/pki/store.ts';
import { missingParts } from '../harness/requirements.ts';
import { master1, spec } from '../unit/pki/fixtures.ts';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const skip = missingParts(etcdMissing());
const cluster = 'rot';

describe.skipIf(skip)('corekube pki rotate-ca (the CLI process) with a leader carrying it out', () => {
  let etcd: EtcdServer;
  let store: Store;
  const stopping = new AbortController();
  let leader: Promise<void>;
  const authority = new CertificateAuthority({ store: new MemoryPkiStore(), clock: systemClock, cluster: 'demo' });

  const corekube = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const { stdout, stderr } = await run(process.execPath, [path.join(root, 'bin/corekube.js'), ...args, '--etcd-endpoints', etcd.endpoints[0]!, '--cluster', cluster], { cwd: root });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  };

  beforeAll(async () => {
    etcd = await startEtcd();
    store = createEtcdStore({ endpoints: [...etcd.endpoints] });
    await authority.issueFor(spec, master1);
    const rotations = new CaRotations({ authority, pollMs: 300 });
    leader = rotations.run({ store, keys: clusterKeys(cluster), clock: systemClock, log: silentLogger() }, { refresh: async () => undefined, rollout: () => [] }, stopping.signal);
  });

  afterAll(async () => {
    stopping.abort();
    await leader?.catch(() => undefined);
    await store?.close();
    await etcd?.destroy();
  });

  it('refuses finish before any trust, writing nothing', async () => {
    const r = await corekube('pki', 'rotate-ca', '--ca', 'cluster', '--phase', 'finish');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('E_USAGE: --ca cluster --phase finish: no CA rotation was ever started — start with: corekube pki rotate-ca --ca cluster --phase trust');
    expect(await store.get(clusterKeys(cluster).caRotation)).toBeNull();
  });

  it('carries out trust, sign and finish in order, each waited for until rolled out; status shows the rotation', async () => {
    const started = Date.now();
    const trust = await corekube('pki', 'rotate-ca', '--ca', 'cluster', '--phase', 'trust', '--wait', '--timeout', '60');
    expect(trust).toMatchObject({ code: 0, stdout: expect.stringContaining('phase trust of the cluster CA is rolled out to every machine') });
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(await authority.rotation()).toMatchObject({ ca: 'cluster', phase: 'trust' });

    const skipped = await corekube('pki', 'rotate-ca', '--ca', 'cluster', '--phase', 'finish');
    expect(skipped.code).toBe(2);
    expect(skipped.stderr).toContain('phase finish cannot follow phase trust');

    const status = JSON.parse((await corekube('status', '--json')).stdout) as { machines: unknown[]; rotation?: Record<string, unknown> };
    expect(status.rotation).toMatchObject({ ca: 'cluster', phase: 'trust', since: expect.any(String), rolledOut: expect.any(String), waiting: [] });
    expect(status.machines).toEqual([]);

    expect((await corekube('pki', 'rotate-ca', '--ca', 'cluster', '--phase', 'sign', '--wait', '--timeout', '60')).code).toBe(0);
    const finish = await corekube('pki', 'rotate-ca', '--ca', 'cluster', '--phase', 'finish', '--wait', '--timeout', '60');
    expect(finish).toMatchObject({ code: 0, stdout: expect.stringContaining('the rotation is done') });
    expect(await authority.rotation()).toMatchObject({ phase: 'finish', finished: true });
    const table = (await corekube('status')).stdout;
    expect(table).toMatch(/CA rotation: the cluster CA in phase finish since \S+ \(done\), rolled out /);
  }, 120_000);
});
