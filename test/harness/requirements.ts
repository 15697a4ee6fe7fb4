import { spawnSync } from 'node:child_process';

/**
 * Integration tests skip cleanly when a real part is missing on a developer's machine, and fail loudly in CI
 * (where `CI` is set), so a CI image that lost a package never turns into a green run that tested nothing.
 *
 *   const skip = missingParts(etcdMissing(), machinesMissing());
 *   describe.skipIf(skip)('…', () => { … });
 */
export function missingParts(...reasons: (string | undefined)[]): string | false {
  const missing = reasons.filter((r): r is string => r !== undefined);
  if (missing.length === 0) return false;
  const text = missing.join('; ');
  if (process.env.CI) throw new Error(`CI is set but a required part is missing: ${text}`);
  process.stderr.write(`skipping: ${text}\n`);
  return text;
}

/** Why the real etcd and etcdctl cannot be run here, or undefined when they can (scripts/setup installs the pinned ones). */
export function etcdMissing(): string | undefined {
  const has = (bin: string, ...args: string[]) => spawnSync(bin, args, { stdio: 'ignore' }).status === 0;
  if (!has('etcd', '--version')) return 'etcd is not installed (bash scripts/setup builds the pinned one and installs it into /usr/local/bin)';
  if (!has('etcdctl', 'version')) return 'etcdctl is not installed (bash scripts/setup installs the pinned one into /usr/local/bin)';
  return undefined;
}
