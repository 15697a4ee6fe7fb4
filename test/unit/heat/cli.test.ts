import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../../cli/main.ts';
import { parseYaml } from '../../../core/yaml.ts';

/** `corekube heat generate|node` through the real CLI entry, with stdout/stderr captured. */
const dir = mkdtempSync(join(tmpdir(), 'corekube-heat-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let stdout = '';
let stderr = '';
beforeEach(() => {
  stdout = '';
  stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
});
afterEach(() => vi.restoreAllMocks());

type Hot = { parameters: Record<string, { default?: unknown }>; resources: Record<string, unknown> };

describe('corekube heat generate', () => {
  it('prints the template on stdout with the counts given as flags', async () => {
    expect(await main(['heat', 'generate', '--masters', '3', '--minions', '7', '--os', 'ubuntu'])).toBe(0);
    const t = parseYaml(stdout) as Hot;
    expect(t.parameters.master_count!.default).toBe(3);
    expect(t.parameters.minion_count!.default).toBe(7);
    expect(stderr).toBe('');
  });

  it('reads the spec from a YAML file and writes the template to -o', async () => {
    const spec = join(dir, 'cluster.yaml');
    writeFileSync(spec, 'name: prod\nminions: 12\nopenstack:\n  keyName: ops\n');
    const out = join(dir, 'prod.yaml');
    expect(await main(['heat', 'generate', '-c', spec, '-o', out])).toBe(0);
    expect(stdout).toBe('');
    const t = parseYaml(readFileSync(out, 'utf8')) as Hot;
    expect(t.parameters.minion_count!.default).toBe(12);
    expect(t.parameters.key_name!.default).toBe('ops');
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('exits 2 listing every problem and writes nothing on invalid input', async () => {
    const out = join(dir, 'never.yaml');
    expect(await main(['heat', 'generate', '--masters', '2', '--minions', '900', '--os', 'windows', '-o', out])).toBe(2);
    expect(stderr).toMatch(/--masters/);
    expect(stderr).toMatch(/--minions/);
    expect(stderr).toMatch(/--os/);
    expect(existsSync(out)).toBe(false);
    expect(stdout).toBe('');
  });

  it('exits 2 on an unknown option', async () => {
    expect(await main(['heat', 'generate', '--minionz', '3'])).toBe(2);
    expect(stderr).toMatch(/minionz/);
  });

  it('fails with E_IO when the output directory does not exist', async () => {
    expect(await main(['heat', 'generate', '-o', join(dir, 'no-such-dir', 't.yaml')])).toBe(1);
    expect(stderr).toMatch(/E_IO/);
  });

  it('documents its options and the spec flags in --help', async () => {
    expect(await main(['heat', 'generate', '--help'])).toBe(0);
    expect(stdout).toMatch(/--minions N/);
    expect(stdout).toMatch(/COREKUBE_ADMIN_CIDR/);
    expect(stdout).toMatch(/-o, --output FILE/);
  });
});

describe('corekube heat node', () => {
  it('prints a node template for the role given', async () => {
    expect(await main(['heat', 'node', '--role', 'master'])).toBe(0);
    const t = parseYaml(stdout) as Hot;
    expect(t.parameters.role!.default).toBe('master');
    expect(Object.keys(t.resources)).toEqual(['server']);
  });

  it('exits 2 on an unknown role', async () => {
    expect(await main(['heat', 'node', '--role', 'overlord'])).toBe(2);
    expect(stderr).toMatch(/--role must be master or minion/);
  });
});
