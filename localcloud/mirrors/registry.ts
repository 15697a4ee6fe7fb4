/**
 * The local cloud's container registry: Debian's `docker-registry` (the CNCF Distribution registry) on the
 * bridge's host address, holding the images its cluster pulls — the pause and CoreDNS images built from source
 * (release/mirror.ts) under their registry.k8s.io paths, which the cluster's containerd reaches through the
 * spec's `registryMirror`, and the test workload's image. Storage in a directory of the local cloud's work dir.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CorekubeError } from '../../core/errors.ts';
import { toYaml } from '../../core/yaml.ts';
import { onExit } from '../cleanup.ts';
import { freePort } from '../ports.ts';

export const REGISTRY_BIN = '/usr/bin/docker-registry';

export interface Registry {
  /** `10.200.<k>.1:<port>` */
  readonly host: string;
  /** `http://10.200.<k>.1:<port>`: the spec's registryMirror */
  readonly url: string;
  close(): Promise<void>;
}

/** Why no registry can run here, or undefined. */
export function registryMissing(): string | undefined {
  if (spawnSync(REGISTRY_BIN, ['--version'], { stdio: 'ignore' }).error) return `${REGISTRY_BIN} is missing (Debian package docker-registry)`;
  if (spawnSync('skopeo', ['--version'], { stdio: 'ignore' }).error) return 'skopeo is missing (Debian package skopeo)';
  return undefined;
}

export async function startRegistry(options: { listenOn: string; dir: string }): Promise<Registry> {
  const port = await freePort([options.listenOn]);
  const host = `${options.listenOn}:${port}`;
  await mkdir(path.join(options.dir, 'storage'), { recursive: true });
  const config = path.join(options.dir, 'config.yml');
  await writeFile(config, toYaml({
    version: 0.1,
    log: { level: 'warn', accesslog: { disabled: true } },
    storage: { filesystem: { rootdirectory: path.join(options.dir, 'storage') }, delete: { enabled: true } },
    http: { addr: host },
  }));
  const child: ChildProcess = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr = `${stderr}${c}`.slice(-4000)));
  const unregister = onExit(`registry on ${host}`, () => child.kill('SIGKILL'));
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new CorekubeError('E_IO', `docker-registry exited (${child.exitCode}): ${stderr.trim()}`);
    const ok = await fetch(`http://${host}/v2/`).then((r) => r.ok).catch(() => false);
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new CorekubeError('E_IO', `docker-registry did not answer on ${host} within 15 s: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host,
    url: `http://${host}`,
    close: async () => {
      unregister();
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    },
  };
}
