/**
 * The local cloud's apt repository: what the overlord server's cloud-config installs (`packages:
 * [docker.io]`) must come from somewhere its machines can reach, and no machine here reaches Debian's
 * mirrors. The repository holds one package, the Docker stand-in (`docker.io`, version `0~corekube.standin`:
 * localcloud/mirrors/docker-standin/docker and docker.service), so cloud-init really runs `apt-get update` and `apt-get
 * install docker.io`, and the overlord's unit really runs — while the container runs on the host
 * (localcloud/README.md). A flat repository (`deb [trusted=yes] <url> ./`): Packages and an unsigned Release
 * listing it; machines trust it by the source line, which is part of their image (imageFiles below).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The Docker stand-in's two files: /usr/bin/docker and docker.service. */
const STANDIN_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'docker-standin');

const run = promisify(execFile);

/** Where the repository sits under the mirror root (and so under the mirror's URL). */
export const APT_REPO_PATH = 'apt';
export const DOCKER_STANDIN_PACKAGE = Object.freeze({ name: 'docker.io', version: '0~corekube.standin' });

/** Builds the repository under `<mirrorRoot>/apt/`. Needs dpkg-deb (Debian's dpkg). */
export async function buildAptRepo(mirrorRoot: string): Promise<void> {
  const repo = path.join(mirrorRoot, APT_REPO_PATH);
  await mkdir(repo, { recursive: true });
  const { name, version } = DOCKER_STANDIN_PACKAGE;
  const deb = `${name}_${version}_all.deb`;
  const stage = await mkdtemp(path.join(os.tmpdir(), 'corekube-apt-'));
  try {
    await mkdir(path.join(stage, 'DEBIAN'), { recursive: true });
    await mkdir(path.join(stage, 'usr/bin'), { recursive: true });
    await mkdir(path.join(stage, 'lib/systemd/system'), { recursive: true });
    await copyFile(path.join(STANDIN_DIR, 'docker'), path.join(stage, 'usr/bin/docker'));
    await chmod(path.join(stage, 'usr/bin/docker'), 0o755);
    await copyFile(path.join(STANDIN_DIR, 'docker.service'), path.join(stage, 'lib/systemd/system/docker.service'));
    await chmod(path.join(stage, 'lib/systemd/system/docker.service'), 0o644);
    const description = [
      'STAND-IN for Docker (corekube local cloud)',
      ' Not Docker: /usr/bin/docker and docker.service let the overlord server\'s unit run in a',
      ' systemd-nspawn machine; the overlord container runs on the host\'s Docker engine.',
    ].join('\n');
    await writeFile(path.join(stage, 'DEBIAN/control'), [
      `Package: ${name}`, `Version: ${version}`, 'Architecture: all', 'Maintainer: corekube local cloud <noreply@corekube.invalid>',
      'Section: admin', 'Priority: optional', `Description: ${description}`, '',
    ].join('\n'));
    await run('dpkg-deb', ['--root-owner-group', '--build', stage, path.join(repo, deb)]);
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
  const debBytes = await readFile(path.join(repo, deb));
  const installedKb = Math.ceil(((await stat(path.join(STANDIN_DIR, 'docker'))).size + (await stat(path.join(STANDIN_DIR, 'docker.service'))).size) / 1024);
  const packages = [
    `Package: ${name}`, `Version: ${version}`, 'Architecture: all', 'Maintainer: corekube local cloud <noreply@corekube.invalid>',
    `Installed-Size: ${installedKb}`, `Filename: ./${deb}`, `Size: ${debBytes.length}`, `SHA256: ${sha256(debBytes)}`,
    'Section: admin', 'Priority: optional', 'Description: STAND-IN for Docker (corekube local cloud)', '', '',
  ].join('\n');
  await writeFile(path.join(repo, 'Packages'), packages);
  const release = [
    'Origin: corekube local cloud', 'Label: corekube local cloud', `Date: ${new Date().toUTCString()}`,
    'SHA256:', ` ${sha256(Buffer.from(packages))} ${Buffer.byteLength(packages)} Packages`, '',
  ].join('\n');
  await writeFile(path.join(repo, 'Release'), release);
}

/**
 * The image files every local cloud machine boots with, so apt reaches only this repository: the source
 * line, and cloud-init told to keep it (by default it rewrites sources.list to Debian's mirror).
 */
export function aptImageFiles(mirrorUrl: string): { path: string; content: string }[] {
  return [
    { path: '/etc/apt/sources.list', content: `# corekube local cloud: the only apt repository machines here can reach\ndeb [trusted=yes] ${mirrorUrl}/${APT_REPO_PATH} ./\n` },
    { path: '/etc/cloud/cloud.cfg.d/90-corekube-localcloud.cfg', content: '# corekube local cloud: keep the image\'s apt sources (the local repository)\napt:\n  preserve_sources_list: true\n' },
  ];
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
