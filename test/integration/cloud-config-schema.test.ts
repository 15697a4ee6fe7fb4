/**
 * The ubuntu profile against the real cloud-init (Debian package cloud-init): `cloud-init schema
 * --config-file` on every role's user_data, as rendered and with the placeholders filled, failing on any
 * output but the one "Valid cloud-config" line. Debian's 22.4 does not flag unknown top-level keys (newer
 * releases warn, and `cloud-init status` then exits 2), so the keys are also checked against the
 * properties cloud-init's own JSON schema defines.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { BOOT_ROLES, fillPlaceholders, renderUserData } from '../../cloud-config/index.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { missingParts } from '../harness/requirements.ts';
import { FILLED } from '../unit/cloud-config/fixtures.ts';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const SCHEMA_FILE = [
  '/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json',
  '/usr/lib/python3/site-packages/cloudinit/config/schemas/schema-cloud-config-v1.json',
].find((f) => existsSync(f));

const skip = missingParts(
  has('cloud-init') ? undefined : 'cloud-init is not installed (Debian package cloud-init)',
  SCHEMA_FILE ? undefined : "cloud-init's schema-cloud-config-v1.json was not found",
);

/** Every top-level key cloud-init's schema knows: the properties of each module definition it combines. */
function knownTopLevelKeys(file: string): Set<string> {
  const schema = JSON.parse(readFileSync(file, 'utf8')) as { $defs: Record<string, { properties?: Record<string, unknown> }>; allOf: { $ref: string }[] };
  const keys = new Set<string>();
  for (const { $ref } of schema.allOf) {
    const def = schema.$defs[$ref.replace('#/$defs/', '')];
    for (const k of Object.keys(def?.properties ?? {})) keys.add(k);
  }
  return keys;
}

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

function schemaCheck(file: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('cloud-init', ['schema', '--config-file', file], { timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe.skipIf(skip)('the ubuntu profile against cloud-init', () => {
  const spec = parseClusterSpec({ flags: { name: 'schema', os: 'ubuntu' } });
  const cases = BOOT_ROLES.flatMap((role) => [
    { role, filled: false, text: renderUserData(role, spec) },
    { role, filled: true, text: fillPlaceholders(renderUserData(role, spec), FILLED) },
  ]);

  it.each(cases)('$role (placeholders filled: $filled) passes cloud-init schema without a warning', async ({ role, filled, text }) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-ccschema-'));
    dirs.push(dir);
    const file = path.join(dir, `${role}${filled ? '-filled' : ''}.yaml`);
    await writeFile(file, text);
    expect(await schemaCheck(file)).toEqual({ code: 0, stdout: `Valid cloud-config: ${file}\n`, stderr: '' });
  });

  it.each(BOOT_ROLES)('%s uses only top-level keys cloud-init knows', (role) => {
    const known = knownTopLevelKeys(SCHEMA_FILE!);
    expect(known.has('write_files') && known.has('runcmd')).toBe(true);
    const keys = Object.keys(YAML.parse(renderUserData(role, spec)) as object);
    expect(keys.filter((k) => !known.has(k))).toEqual([]);
  });
});
