/**
 * The overlord image as a user builds and runs it: `docker build -f overlord/Dockerfile .` on a real Docker
 * engine (Debian's docker.io, private to this test; the base image made locally since there is no
 * registry), then `docker run --name overlord …` of that image — its help, and the overlord itself on the
 * host network against a real etcd holding one machine whose SSH port is closed: `docker logs overlord`
 * tells the story (start, discovery, the SSH failure retried), the HEALTHCHECK turns healthy, and
 * `docker stop` ends it with exit code 0 within seconds (SIGTERM handled by the overlord as PID 1).
 */
import { execFile, spawnSync } from 'node:child_process';
import { chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clusterKeys } from '../../contracts/keys.ts';
import { buildOverlordImage, dockerMissing, ensureNodeBaseImage, startDockerEngine, type BuiltImage, type DockerEngine } from '../harness/docker.ts';
import { etcdMissing, startEtcd, type EtcdServer } from '../../localcloud/etcd/etcd.ts';
import { freePort } from '../harness/ports.ts';
import { missingParts } from '../harness/requirements.ts';
import { makeRecord } from '../unit/overlord/fakes.ts';

const run = promisify(execFile);
/** the image's user (overlord/Dockerfile): files it reads through a bind mount must be readable by it */
const IMAGE_UID = 10001;
const sshKeygenMissing = () => (spawnSync('ssh-keygen', ['-?'], { stdio: 'ignore' }).error ? 'ssh-keygen is not installed (Debian package openssh-client)' : undefined);
const skip = missingParts(dockerMissing(), etcdMissing(), sshKeygenMissing());

type LogLine = Record<string, unknown> & { event?: string };
const parseLogs = (text: string): LogLine[] =>
  text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, context: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs} ms:\n${await context()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.skipIf(skip)('the overlord image (overlord/Dockerfile on a real Docker engine)', () => {
  let engine: DockerEngine | undefined;
  let image: BuiltImage;
  let etcd: EtcdServer | undefined;
  let dir: string | undefined;

  beforeAll(async () => {
    engine = await startDockerEngine();
    const base = await ensureNodeBaseImage(engine);
    image = await buildOverlordImage(engine);
    process.stderr.write(
      `overlord image: ${base}; built ${image.tag} in ${(image.buildMs / 1000).toFixed(1)} s, ${(image.sizeBytes / 1e6).toFixed(0)} MB ` +
        `(${((image.sizeBytes - image.baseSizeBytes) / 1e6).toFixed(0)} MB over its base; storage driver ${engine.storageDriver})\n`,
    );
    // a container left by a killed run in the persistent data root would hold the name
    await engine.docker(['rm', '--force', 'overlord']);
    etcd = await startEtcd();
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-overlord-image-'));
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'corekube-test', '-f', path.join(dir, 'id_ed25519')]);
    // mounted at /keys: the image's user must be able to enter the directory and read the key
    await chown(dir, IMAGE_UID, IMAGE_UID);
    await chown(path.join(dir, 'id_ed25519'), IMAGE_UID, IMAGE_UID);
  });

  afterAll(async () => {
    await engine?.docker(['rm', '--force', 'overlord']);
    await engine?.stop();
    await etcd?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('is a small image that runs corekube as the unprivileged user 10001, with a healthcheck', async () => {
    const [config] = JSON.parse(await engine!.dockerOk(['image', 'inspect', image.tag])) as { Config: { User: string; Entrypoint: string[]; Healthcheck?: { Test: string[] } } }[];
    expect(config!.Config.User).toBe(`${IMAGE_UID}:${IMAGE_UID}`);
    expect(config!.Config.Entrypoint).toEqual(['corekube']);
    expect(config!.Config.Healthcheck?.Test).toEqual(['CMD', 'node', '/app/scripts/docker/healthcheck.mjs']);
    // the dependencies and sources add tens of MB to the base, not hundreds (no dev dependencies, no tests)
    expect(image.sizeBytes - image.baseSizeBytes).toBeLessThan(80e6);
    const inside = await engine!.dockerOk(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', image.tag, '-c',
      'id -u; stat -c "%u:%g %a" /var/lib/corekube; test -e /app/node_modules/vitest && echo dev-deps; test -e /app/test && echo tests; true']);
    expect(inside.trim().split('\n')).toEqual([String(IMAGE_UID), `${IMAGE_UID}:${IMAGE_UID} 700`]);
    // the health probe needs a running overlord to ask
    const probe = await engine!.docker(['run', '--rm', '--network', 'none', '--entrypoint', 'node', image.tag, '/app/scripts/docker/healthcheck.mjs']);
    expect({ code: probe.code, out: probe.stdout.trim() }).toEqual({ code: 1, out: 'no `corekube overlord` process in this container' });
  });

  it('prints the CLI usage with `docker run --name overlord IMAGE --help`', async () => {
    const r = await engine!.docker(['run', '--name', 'overlord', '--network', 'none', image.tag, '--help']);
    await engine!.docker(['rm', '--force', 'overlord']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: corekube <command>');
    expect(r.stdout).toMatch(/^ {2}overlord +run the overlord/m);
    const overlordHelp = await engine!.dockerOk(['run', '--rm', '--network', 'none', image.tag, 'overlord', '--help']);
    expect(overlordHelp).toMatch(/^Usage: corekube overlord /);
    expect(overlordHelp).toContain('--etcd-endpoints URLS');
  });

  /** `docker run -d --name overlord --network host IMAGE overlord …` against the test etcd; returns the health port */
  async function runOverlord(cluster: string, extra: readonly string[] = []): Promise<number> {
    const closedSshPort = await freePort();
    const healthPort = await freePort(['127.0.0.1'], [closedSshPort]);
    await engine!.dockerOk([
      'run', '-d', '--name', 'overlord', '--network', 'host',
      '--health-interval', '1s', '--health-timeout', '3s', '--health-retries', '1', '--health-start-period', '30s',
      '-v', `${dir}:/keys:ro`,
      image.tag, 'overlord',
      '--etcd-endpoints', `http://127.0.0.1:${etcd!.clientPort}`, '--ssh-key', '/keys/id_ed25519', '--ssh-port', String(closedSshPort),
      '--cluster', cluster, '--masters', '1', '--minions', '0', '--log-format', 'json', '--health-port', String(healthPort), ...extra,
    ]);
    return healthPort;
  }

  const logs = async () => {
    const r = await engine!.docker(['logs', 'overlord']);
    return `${r.stdout}${r.stderr}`;
  };

  const healthState = async () =>
    JSON.parse(await engine!.dockerOk(['inspect', '--format', '{{json .State.Health}}', 'overlord'])) as { Status: string; Log: { Output: string }[] };

  const healthIs = (status: 'healthy' | 'unhealthy') =>
    until(`the container did not turn ${status}`, async () => ((await healthState()).Status === status ? await healthState() : undefined), 30_000,
      async () => `${JSON.stringify(await healthState())}\n${await logs()}`);

  async function putMachine(cluster: string, hostname: string) {
    const record = makeRecord(1, 'master', { ip: '127.0.0.1', hostname });
    const client = new Etcd3(etcd!.clientOptions());
    await client.put(clusterKeys(cluster).machine(record.id)).value(JSON.stringify(record));
    client.close();
    return record;
  }

  it('runs the overlord against etcd: discovers a machine, retries its SSH failure, turns healthy, stops cleanly on docker stop', async () => {
    const master = await putMachine('t', 'master-image');
    const healthPort = await runOverlord('t');

    await until(
      'no step.retry in `docker logs overlord`',
      async () => {
        if ((await logs()).includes('"event":"step.retry"')) return true;
        const running = (await engine!.dockerOk(['inspect', '--format', '{{.State.Running}}', 'overlord'])).trim();
        if (running !== 'true') throw new Error(`the overlord container exited:\n${await logs()}`);
        return undefined;
      },
      45_000,
      logs,
    );
    expect((await healthIs('healthy')).Log.at(-1)?.Output).toContain(`GET /healthz on 127.0.0.1:${healthPort}: 200`);

    const stopStarted = Date.now();
    await engine!.dockerOk(['stop', '--time', '20', 'overlord']);
    const stopMs = Date.now() - stopStarted;
    const state = JSON.parse(await engine!.dockerOk(['inspect', '--format', '{{json .State}}', 'overlord'])) as { ExitCode: number };
    expect(state.ExitCode).toBe(0);
    expect(stopMs).toBeLessThan(5_000);

    const text = await logs();
    await engine!.dockerOk(['rm', 'overlord']);
    const lines = parseLogs(text);
    const events = lines.map((l) => l.event);
    expect(events).toContain('overlord.start');
    expect(lines).toContainEqual(expect.objectContaining({ event: 'machine.discovered', machine: master.id, hostname: 'master-image', role: 'master' }));
    expect(lines).toContainEqual(expect.objectContaining({ event: 'step.retry', hostname: 'master-image', code: 'E_SSH', nextRetryMs: expect.any(Number) }));
    expect(lines).toContainEqual(expect.objectContaining({ event: 'overlord.signal', signal: 'SIGTERM' }));
    // stopped because of the signal (the leader's resignation may be logged after it)
    expect(events.indexOf('overlord.stopped')).toBeGreaterThan(events.indexOf('overlord.signal'));

    const key = await readFile(path.join(dir!, 'id_ed25519'), 'utf8');
    const body = key.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
    expect(text).not.toContain('PRIVATE KEY');
    for (let i = 0; i + 24 <= body.length; i += 24) expect(text).not.toContain(body.slice(i, i + 24));
  });

  it('reports unhealthy once etcd has been unreachable longer than --etcd-retry-budget (its /healthz answers 503)', async () => {
    await runOverlord('h', ['--etcd-retry-budget', '1']);
    try {
      await healthIs('healthy');
      await etcd!.stop();
      expect((await healthIs('unhealthy')).Log.at(-1)?.Output).toMatch(/GET \/healthz on 127\.0\.0\.1:\d+: 503 .*"etcd":"down"/);
    } finally {
      await engine!.docker(['rm', '--force', 'overlord']);
      await etcd!.start();
    }
  });
});
