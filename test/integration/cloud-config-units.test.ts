/**
 * What cloud-config writes, checked by real tools as shipped (taken from the rendered user_data of every
 * role on both OS profiles): `systemd-analyze verify` on every unit, under --root with the role's files
 * written and stand-ins for the binaries the OS provides (docker, test) or a script downloads (etcd),
 * failing on ANY output since warnings exit 0; `bash -n` and shellcheck on every script; Ignition's own
 * ignition-validate (built from its Go module at the pinned version) on every Flatcar config.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOOT_ROLES, fillPlaceholders, renderUserData } from '../../cloud-config/index.ts';
import { ensureTools } from '../../release/build.ts';
import { MACHINE_PATHS } from '../../cloud-config/machine-paths.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import type { OsProfile } from '../../clusterspec/fields.ts';
import { missingParts } from '../harness/requirements.ts';
import { machineView } from '../harness/user-data-view.ts';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const SYSTEM_UNIT_DIR = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((d) => existsSync(path.join(d, 'multi-user.target')));

interface Shipped {
  units: { name: string; content: string }[];
  files: { path: string; content: string; permissions: string }[];
}

/** The units and files exactly as the user_data carries them (read as cloud-init or Ignition reads them). */
function shipped(role: (typeof BOOT_ROLES)[number], os: OsProfile): Shipped {
  const view = machineView(renderUserData(role, parseClusterSpec({ flags: { name: 'verify', os } })));
  return { units: view.units, files: view.files };
}

const CASES = BOOT_ROLES.flatMap((role) => (['flatcar', 'ubuntu'] as const).map((os) => ({ role, os })));

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function runFile(file: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}`.trim() });
    });
  });
}

const STUB = '#!/bin/sh\n# stand-in for a binary the OS provides or a script downloads\nexit 0\n';

const verifySkip = missingParts(
  has('systemd-analyze') ? undefined : 'systemd-analyze is not installed (Debian package systemd)',
  SYSTEM_UNIT_DIR ? undefined : 'no systemd unit directory with multi-user.target',
);

describe.skipIf(verifySkip)('systemd-analyze verify on every unit cloud-config writes', () => {
  it.each(CASES)('$role on $os: every unit verifies without a single line of output', async ({ role, os: profile }) => {
    const root = await mkdtemp(path.join(os.tmpdir(), `corekube-ccverify-${role}-`));
    dirs.push(root);
    await cp(SYSTEM_UNIT_DIR!, path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
    const { units, files } = shipped(role, profile);
    for (const f of files) {
      const target = path.join(root, f.path);
      await mkdir(path.dirname(target), { recursive: true });
      await writeFile(target, f.content);
      await chmod(target, parseInt(f.permissions, 8));
    }
    // what the OS images ship (docker on the overlord; coreutils' test) and what corekube-install-etcd fetches
    for (const bin of ['/usr/bin/docker', '/usr/bin/test', `${MACHINE_PATHS.binDir}/etcd`]) {
      await mkdir(path.join(root, path.dirname(bin)), { recursive: true });
      await writeFile(path.join(root, bin), STUB, { mode: 0o755 });
    }
    await mkdir(path.join(root, 'usr/lib/systemd/system'), { recursive: true });
    await writeFile(path.join(root, 'usr/lib/systemd/system/docker.service'), '[Unit]\nDescription=stand-in for the OS docker.service\n\n[Service]\nExecStart=/usr/bin/docker\n');
    await mkdir(path.join(root, 'etc/systemd/system'), { recursive: true });
    for (const u of units) await writeFile(path.join(root, 'etc/systemd/system', u.name), u.content);

    expect(units.length).toBeGreaterThan(0);
    for (const u of units) {
      const r = await runFile('systemd-analyze', ['verify', '--man=no', `--root=${root}`, `/etc/systemd/system/${u.name}`]);
      expect(`${u.name}: ${r.out}${r.code ? ` (exit ${r.code})` : ''}`).toBe(`${u.name}: `);
    }
  });
});

const shellSkip = missingParts(
  has('bash') ? undefined : 'bash is not installed',
  has('shellcheck') ? undefined : 'shellcheck is not installed (Debian package shellcheck)',
);

describe.skipIf(shellSkip)('the scripts cloud-config writes', () => {
  it.each(CASES)('$role on $os: every script parses (bash -n) and shellcheck finds nothing', async ({ role, os: profile }) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), `corekube-ccscripts-${role}-`));
    dirs.push(dir);
    const scripts = shipped(role, profile).files.filter((f) => f.permissions === '0755');
    if (role !== 'overlord' && role !== 'overlord-standby') expect(scripts.length).toBeGreaterThan(0);
    for (const s of scripts) {
      const file = path.join(dir, path.basename(s.path));
      await writeFile(file, s.content, { mode: 0o755 });
      expect(s.content.startsWith('#!/bin/bash\n'), s.path).toBe(true);
      expect(await runFile('bash', ['-n', file]), s.path).toEqual({ code: 0, out: '' });
      expect(await runFile('shellcheck', ['--shell=bash', '--severity=info', file]), s.path).toEqual({ code: 0, out: '' });
    }
  });
});

const goSkip = missingParts(has('go') ? undefined : 'go is not installed (Go 1.26 builds ignition-validate)');

describe.skipIf(goSkip)("Ignition's own validator", () => {
  let validate = '';
  beforeAll(async () => {
    validate = (await ensureTools()).get('ignition')!.programs.get('ignition-validate')!;
  }, 900_000);

  const check = async (name: string, text: string) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-ign-'));
    dirs.push(dir);
    const file = path.join(dir, `${name}.ign`);
    await writeFile(file, text);
    return runFile(validate, [file]);
  };

  // the tokens themselves are no valid data (they are never shipped: Heat's str_replace fills every one)
  it.each(BOOT_ROLES)('accepts the %s config as Heat fills it, and with every value empty (booted by hand, no Heat)', async (role) => {
    const text = renderUserData(role, parseClusterSpec({ flags: { name: 'verify', os: 'flatcar' } }));
    expect(await check(`${role}-empty`, fillPlaceholders(text, {}))).toEqual({ code: 0, out: '' });
    const filled = fillPlaceholders(text, {
      joinToken: 'Ab3dEfGh1jKlMn0pQrStUvWxYz0123456789',
      overlordSecret: 'Zy9xWv8uTs7rQp6oNm5lKj4iHg3fEd2cBa1ZYXWVUTSRQPONMLKJ',
      overlordSshKey: Buffer.from('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOb+Zz/9Tq0c2m overlord@verify').toString('base64'),
      discoveryCa: Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n').toString('base64'),
      readyUrl: 'https://heat.example:8004/v1/abc/stacks/verify/5678/resources/overlord_ready_handle/signal?a=%3A#frag',
      readyToken: 'gAAAAABn-fake_Fernet-token==',
      clusterReadyUrl: 'https://heat.example:8004/v1/abc/stacks/verify/5678/resources/cluster_ready_handle/signal',
      clusterReadyToken: 'gAAAAABn-other_token==',
      masterCount: '3',
      minionCount: '50',
    });
    expect(await check(`${role}-filled`, filled)).toEqual({ code: 0, out: '' });
  });

  it('rejects what Ignition cannot apply (the validator is not a rubber stamp)', async () => {
    const r = await check('bad', JSON.stringify({ ignition: { version: '3.3.0' }, storage: { files: [{ path: 'relative/path', contents: { source: 'data:,x' } }] } }));
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/path not absolute/);
  });
});
