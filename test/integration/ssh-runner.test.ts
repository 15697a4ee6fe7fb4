/**
 * The SSH runner against a real machine (systemd-nspawn, real sshd, real sudo) on the harness's net 41.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorekubeError } from '../../core/errors.ts';
import type { HostRunner, HostTarget } from '../../overlord/edges/host-runner.ts';
import { writeFile } from '../../overlord/edges/remote-commands.ts';
import { createSshRunner, type HostKeyPolicy } from '../../overlord/edges/ssh-runner.ts';
import { bootMachines, machinesMissing, netFromEnv, type Fleet, type Machine } from '../harness/machines.ts';
import { missingParts } from '../harness/requirements.ts';

const skip = missingParts(machinesMissing());
const NET = netFromEnv(41);

/** TOFU store in memory, recording what the runner asked (the overlord's real one lives in etcd). */
function memoryHostKeys(initial: Record<string, string> = {}) {
  const keys = new Map(Object.entries(initial));
  const calls: string[] = [];
  const policy: HostKeyPolicy = {
    expected: async (t) => {
      calls.push(`expected ${t.id}`);
      return keys.get(t.id);
    },
    remember: async (t, key) => {
      calls.push(`remember ${t.id}`);
      keys.set(t.id, key);
    },
  };
  return { policy, keys, calls };
}

function sshKeyPair(dir: string, name: string): { privateKey: string; publicKey: string } {
  const file = path.join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', file]);
  return { privateKey: readFileSync(file, 'utf8'), publicKey: readFileSync(`${file}.pub`, 'utf8') };
}

async function rejection(p: Promise<unknown>): Promise<CorekubeError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CorekubeError);
  return err as CorekubeError;
}

describe.skipIf(skip)('ssh runner on a real machine', () => {
  let dir: string;
  let key: { privateKey: string; publicKey: string };
  let fleet: Fleet;
  let machine: Machine;
  let target: HostTarget;
  const runners: HostRunner[] = [];
  const runner = (hostKeys: HostKeyPolicy, privateKey = key.privateKey, connectTimeoutMs = 5000) => {
    const r = createSshRunner({ user: 'corekube', privateKey, connectTimeoutMs, hostKeys });
    runners.push(r);
    return r;
  };
  /** A secret must never reach an error: neither the private key nor any line of it. */
  const expectNoKeyIn = (err: CorekubeError) => {
    const text = `${err.message}\n${err.hint ?? ''}`;
    for (const line of key.privateKey.split('\n').filter((l) => l.length > 20)) expect(text).not.toContain(line);
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'corekube-ssh-test-'));
    key = sshKeyPair(dir, 'overlord');
    fleet = await bootMachines([{ hostname: 'ssh-target' }], { net: NET, authorizedKey: key.publicKey });
    machine = fleet.machines[0]!;
    target = { id: machine.id, ip: machine.ip, hostKey: machine.hostKey };
  });

  afterAll(async () => {
    await Promise.all(runners.map((r) => r.close()));
    await fleet?.teardown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('returns the exit code and both outputs of a command that fails, without rejecting', async () => {
    const r = runner(memoryHostKeys().policy);
    const result = await r.exec(target, ['sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(result).toEqual({ code: 3, stdout: 'out\n', stderr: 'err\n' });
    expect((await r.exec(target, ['true'])).code).toBe(0);
  });

  it('passes hostile arguments through as single words, expanding nothing', async () => {
    const hostile = ['$(touch /pwned)', '`touch /pwned2`', "it's", '"double"', '; touch /pwned3', 'a b  c', '', '*', '\\', 'new\nline', '$HOME', "'"];
    const r = runner(memoryHostKeys().policy);
    const result = await r.exec(target, ['printf', '%s\\0', ...hostile]);
    expect(result.code).toBe(0);
    expect(result.stdout.split('\0').slice(0, -1)).toEqual(hostile);
    // positional arguments of a constant script stay data too
    const viaScript = await r.exec(target, ['sh', '-c', 'printf "%s" "$1"', 'name', '$(touch /pwned4)']);
    expect(viaScript.stdout).toBe('$(touch /pwned4)');
    for (const f of ['pwned', 'pwned2', 'pwned3', 'pwned4']) expect(existsSync(path.join(machine.root, f))).toBe(false);
  });

  it('streams stdin to the command byte for byte, also through sudo', async () => {
    const r = runner(memoryHostKeys().policy);
    const content = `[Unit]\nDescription=ünïcode 'quotes' "and" $(not expanded)\n${'x'.repeat(300_000)}\n`;
    const cmd = writeFile({ user: 'corekube' }, { path: '/etc/systemd/system/corekube-test.service', content, mode: '0640' });
    const result = await r.exec(target, cmd.argv, { stdin: cmd.stdin });
    expect(result.code).toBe(0);
    const file = path.join(machine.root, 'etc/systemd/system/corekube-test.service');
    expect(readFileSync(file, 'utf8')).toBe(content);
    const stat = await machine.exec(['stat', '-c', '%a %U', '/etc/systemd/system/corekube-test.service']);
    expect(stat.stdout.trim()).toBe('640 root');
    expect((await r.exec(target, ['sudo', '-n', 'id', '-un'])).stdout).toBe('root\n');
  });

  it('reuses one connection per machine', async () => {
    const r = runner(memoryHostKeys().policy);
    const first = await r.exec(target, ['sh', '-c', 'echo "$SSH_CONNECTION"']);
    const again = await Promise.all([1, 2, 3].map(() => r.exec(target, ['sh', '-c', 'echo "$SSH_CONNECTION"'])));
    expect(new Set([first, ...again].map((x) => x.stdout)).size).toBe(1);
  });

  it('accepts the host key the target names when none is pinned, and records nothing', async () => {
    const store = memoryHostKeys();
    const r = runner(store.policy);
    expect((await r.exec(target, ['true'])).code).toBe(0);
    expect(store.calls).toEqual([`expected ${machine.id}`]);
  });

  it('refuses, before connecting, a target that names another key than the one pinned for the machine: a record cannot move a machine to another key', async () => {
    const other = sshKeyPair(dir, 'pinned-elsewhere').publicKey.split(' ').slice(0, 2).join(' ');
    const store = memoryHostKeys({ [machine.id]: other });
    const r = runner(store.policy);
    const err = await rejection(r.exec(target, ['touch', '/tmp/should-not-run-either']));
    expect(err.code).toBe('E_SSH_HOSTKEY');
    expect(err.message).toMatch(/is pinned for it/);
    expect(existsSync(path.join(machine.root, 'tmp/should-not-run-either'))).toBe(false);
    expect(store.keys.get(machine.id)).toBe(other);
  });

  it('refuses a machine whose host key is not the pinned one (terminal, names the machine, no key text)', async () => {
    const other = sshKeyPair(dir, 'not-the-host').publicKey.split(' ').slice(0, 2).join(' ');
    const r = runner(memoryHostKeys().policy);
    expect((await r.exec(target, ['true'])).code).toBe(0); // an open connection is not reused for another pin
    const err = await rejection(r.exec({ ...target, hostKey: other }, ['touch', '/tmp/should-not-run']));
    expect(err.code).toBe('E_SSH_HOSTKEY');
    expect(err.retryable).toBe(false);
    expect(err.message).toContain(machine.id);
    expect(err.message).toContain(machine.ip);
    expect(err.message).not.toContain(other.split(' ')[1]);
    expect(existsSync(path.join(machine.root, 'tmp/should-not-run'))).toBe(false);
  });

  it('trusts a new machine on first use, records its key, and refuses a different key afterwards', async () => {
    const unpinned: HostTarget = { id: machine.id, ip: machine.ip };
    const store = memoryHostKeys();
    const first = runner(store.policy);
    expect((await first.exec(unpinned, ['true'])).code).toBe(0);
    expect(store.keys.get(machine.id)).toBe(machine.hostKey);
    expect(store.calls).toEqual([`expected ${machine.id}`, `remember ${machine.id}`]);

    // a restarted overlord finds the recorded key and does not record again
    const restarted = runner(store.policy);
    expect((await restarted.exec(unpinned, ['true'])).code).toBe(0);
    expect(store.calls.filter((c) => c.startsWith('remember'))).toHaveLength(1);

    const other = sshKeyPair(dir, 'impostor').publicKey.split(' ').slice(0, 2).join(' ');
    const poisoned = memoryHostKeys({ [machine.id]: other });
    const err = await rejection(runner(poisoned.policy).exec(unpinned, ['true']));
    expect(err.code).toBe('E_SSH_HOSTKEY');
    expect(poisoned.keys.get(machine.id)).toBe(other);
  });

  it('reports a refused SSH key as a retryable E_SSH that names the machine and never the key', async () => {
    const stranger = sshKeyPair(dir, 'stranger');
    const err = await rejection(runner(memoryHostKeys().policy, stranger.privateKey).exec(target, ['true']));
    expect(err.code).toBe('E_SSH');
    expect(err.retryable).toBe(true);
    expect(err.message).toContain(`machine ${machine.id} (${machine.ip}:22)`);
    expect(err.message).toContain('refused');
    const text = `${err.message}\n${err.hint}`;
    for (const line of stranger.privateKey.split('\n').filter((l) => l.length > 20)) expect(text).not.toContain(line);
  });

  it('reports an unreachable address as a retryable E_SSH within the connect timeout', async () => {
    const started = Date.now();
    const err = await rejection(runner(memoryHostKeys().policy, key.privateKey, 1500).exec({ id: 'f'.repeat(32), ip: `10.200.${NET}.250` }, ['true']));
    expect(err.code).toBe('E_SSH');
    expect(err.retryable).toBe(true);
    expect(err.message).toContain(`10.200.${NET}.250`);
    expect(Date.now() - started).toBeLessThan(6000);
    expectNoKeyIn(err);
  });

  it('gives up on a command that outlives its timeout and kills it on the machine', async () => {
    const r = runner(memoryHostKeys().policy);
    const started = Date.now();
    const err = await rejection(r.exec(target, ['sleep', '4242'], { timeoutMs: 300 }));
    expect(err.code).toBe('E_SSH');
    expect(err.message).toContain('did not finish within 300 ms');
    expect(Date.now() - started).toBeLessThan(3000);
    await expect.poll(async () => (await machine.exec(['pgrep', '-f', 'sleep 4242'])).code, { timeout: 5000 }).toBe(1);
    // the connection stays usable
    expect((await r.exec(target, ['true'])).code).toBe(0);
    const controller = new AbortController();
    const cancelled = r.exec(target, ['sleep', '4243'], { signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    expect((await rejection(cancelled)).message).toContain('was cancelled');
  });

  it('opens a new connection after the machine\'s sshd restarted and dropped the old one', async () => {
    const r = runner(memoryHostKeys().policy);
    const before = (await r.exec(target, ['sh', '-c', 'echo "$SSH_CONNECTION"'])).stdout;
    // stop sshd and cut every session (ours included), as a reboot of sshd would
    expect((await machine.exec(['sh', '-c', 'systemctl stop ssh.service; pkill -KILL -x sshd; true'])).code).toBe(0);
    const down = await rejection(r.exec(target, ['true']));
    expect(down.code).toBe('E_SSH');
    expect(down.retryable).toBe(true);
    expect((await machine.exec(['systemctl', 'start', 'ssh.service'])).code).toBe(0);
    const after = (await r.exec(target, ['sh', '-c', 'echo "$SSH_CONNECTION"'])).stdout;
    expect(after).not.toBe(before); // a new client port: a new connection
  });

  it('closes its connections and opens them again on demand', async () => {
    const r = runner(memoryHostKeys().policy);
    const before = (await r.exec(target, ['sh', '-c', 'echo "$SSH_CONNECTION"'])).stdout;
    await r.close();
    const after = (await r.exec(target, ['sh', '-c', 'echo "$SSH_CONNECTION"'])).stdout;
    expect(after).not.toBe(before);
    await r.close(machine.id);
  });
});
