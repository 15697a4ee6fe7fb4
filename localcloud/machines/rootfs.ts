/**
 * The root filesystem the test machines boot: Debian bookworm minbase with systemd, sshd, sudo, curl and
 * cloud-init, built once per host by scripts/build-rootfs.sh into /var/cache/corekube/rootfs-<hash> and
 * shared read-only by every machine (each gets an overlayfs with its own tmpfs upper layer).
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/build-rootfs.sh');

/** Where the tree for the current package list lives (whether or not it is built yet). */
export function rootfsPath(): string {
  const r = spawnSync(SCRIPT, ['--print'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${SCRIPT} --print failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** Why the rootfs can neither be found nor built here, or undefined. */
export function rootfsMissing(): string | undefined {
  if (existsSync(rootfsPath())) return undefined;
  if (process.getuid?.() !== 0) return 'building the machines\' rootfs needs root';
  if (spawnSync('debootstrap', ['--version'], { stdio: 'ignore' }).error) return 'debootstrap is not installed (Debian package debootstrap)';
  return undefined;
}

/** The rootfs path, built first if needed (~50 s with a nearby Debian mirror; progress on stderr). */
export async function ensureRootfs(): Promise<string> {
  const cached = rootfsPath();
  if (existsSync(cached)) return cached;
  const { stdout } = await run(SCRIPT, [], { maxBuffer: 1 << 20 }).catch((err: { stderr?: string; message: string }) => {
    throw new Error(`building the rootfs failed: ${err.stderr || err.message}`);
  });
  return stdout.trim().split('\n').pop() ?? cached;
}
