import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { renderUserData } from '../../cloud-config/index.ts';
import { renderClusterTemplate } from '../../heat/cluster-template.ts';
import { renderNodeTemplate } from '../../heat/node-template.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';

/** the OpenStack cloud provider's parameters (on by default): Keystone's URL and an application credential */
const CLOUD = ['-P', 'openstack_auth_url=https://keystone.example:5000/v3', '-P', 'application_credential_id=0123abcd', '-P', 'application_credential_secret=s3cret-Val_ue'];

/**
 * OpenStack Heat's own engine (Debian python3-heat, Zed) validates the generated templates offline through
 * ../shared/tools/heat-validate, found beside the repository. Missing tool or engine: skipped, except in CI.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const TOOL = resolve(repoRoot, '../shared/tools/heat-validate');
const ENGINE = '/usr/lib/python3/dist-packages/heat/engine';
const missing = [TOOL, ENGINE].filter((p) => !existsSync(p));
const run = promisify(execFile);

async function validate(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run(TOOL, ['--strict-nested', '--require-params', ...args], { timeout: 120_000 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

describe.skipIf(missing.length > 0 && !process.env.CI)(`Heat's engine (missing here: ${missing.join(', ') || 'nothing'})`, () => {
  const dir = mkdtempSync(join(tmpdir(), 'corekube-heat-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('accepts the cluster template for 1 and 3 masters, 0 and 50 minions, on flatcar and ubuntu', async () => {
    expect(missing, 'heat-validate and python3-heat must be installed in CI (scripts/setup)').toEqual([]);
    const files: string[] = [];
    for (const masters of ['1', '3']) {
      for (const minions of ['0', '50']) {
        for (const os of ['flatcar', 'ubuntu']) {
          const file = join(dir, `cluster-${masters}m-${minions}n-${os}.yaml`);
          writeFileSync(file, renderClusterTemplate(parseClusterSpec({ flags: { masters, minions, os } }), renderUserData));
          files.push(file);
        }
      }
    }
    const { code, out } = await validate(['-P', 'key_name=k', '-P', 'image=img', '-P', 'external_network=public', ...CLOUD, ...files]);
    expect(out).not.toMatch(/ERROR|INVALID/);
    for (const f of files) expect(out).toContain(`${f}: OK`);
    expect(code).toBe(0);
  });

  it('accepts the cluster template with 1 and 3 overlords (0 and 2 standbys checked as members), on flatcar and ubuntu, and overlord_count 5 at stack create', async () => {
    expect(missing).toEqual([]);
    const files: string[] = [];
    for (const overlords of ['1', '3']) {
      for (const os of ['flatcar', 'ubuntu']) {
        const file = join(dir, `cluster-${overlords}o-${os}.yaml`);
        writeFileSync(file, renderClusterTemplate(parseClusterSpec({ flags: { overlords, os } }), renderUserData));
        files.push(file);
      }
    }
    const params = ['-P', 'key_name=k', '-P', 'image=img', '-P', 'external_network=public', ...CLOUD];
    const { code, out } = await validate([...params, ...files]);
    expect(out).not.toMatch(/ERROR|INVALID/);
    for (const f of files) expect(out).toContain(`${f}: OK`);
    expect(code).toBe(0);
    const five = await validate([...params, '-P', 'overlord_count=5', files[0]!]);
    expect(five.out.trim()).toBe('OK'); // one template: no file name
    expect(five.code).toBe(0);
  });

  it('accepts the node template for a master and a minion, on flatcar and ubuntu', async () => {
    expect(missing).toEqual([]);
    const files = (['flatcar', 'ubuntu'] as const).flatMap((os) =>
      (['master', 'minion'] as const).map((role) => {
        const file = join(dir, `node-${role}-${os}.yaml`);
        writeFileSync(file, renderNodeTemplate(parseClusterSpec({ flags: { os } }), role, renderUserData));
        return file;
      }),
    );
    const { code, out } = await validate([
      '-P', 'key_name=k', '-P', 'image=img', '-P', 'network=private', '-P', 'subnet=private-subnet', '-P', 'security_groups=cluster,minion',
      '-P', `join_token=${'a1'.repeat(24)}`, '-P', `overlord_ssh_key=${Buffer.from('ssh-ed25519 AAAAC3Nza overlord').toString('base64')}`,
      '-P', `discovery_ca=${Buffer.from('-----BEGIN CERTIFICATE-----\n').toString('base64')}`,
      ...files,
    ]);
    expect(out).not.toMatch(/ERROR|INVALID/);
    for (const f of files) expect(out).toContain(`${f}: OK`);
    expect(code).toBe(0);
  });

  it('rejects a 0.0.0.0/0 admin CIDR, a minion count over 500 and an overlord count of 0 or 6 given at stack create', async () => {
    const file = join(dir, 'cluster-defaults.yaml');
    writeFileSync(file, renderClusterTemplate(parseClusterSpec({}), renderUserData));
    const { code, out } = await validate(['-P', 'key_name=k', '-P', 'image=img', '-P', 'external_network=public', ...CLOUD, '-P', 'admin_cidr=0.0.0.0/0', '-P', 'minion_count=501', '-P', 'overlord_count=6', file]);
    expect(code).toBe(1);
    expect(out).toMatch(/admin_cidr/);
    expect(out).toMatch(/minion_count/);
    expect(out).toMatch(/overlord_count/);
    const zero = await validate(['-P', 'key_name=k', '-P', 'image=img', '-P', 'external_network=public', ...CLOUD, '-P', 'overlord_count=0', file]);
    expect(zero.code).toBe(1);
    expect(zero.out).toMatch(/overlord_count/);
  });
});
