import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { CorekubeError } from './errors.ts';

/**
 * Private files on this machine: what the overlord keeps (its state, its PKI, its markers) and what the CLI writes
 * (a kubeconfig) is written whole or not at all, readable only by its owner.
 */

/**
 * Writes `content` to `file` with mode 0600 atomically (temporary file in the same directory, fsync, rename,
 * fsync of the directory). Missing directories are made with mode 0700; with `root`, only those under it.
 * Also used by `corekube kubeconfig -o FILE`.
 */
export async function writeFileAtomic(file: string, content: string, options: { root?: string } = {}): Promise<void> {
  const dir = path.dirname(file);
  try {
    if (options.root === undefined) await mkdir(dir, { recursive: true, mode: 0o700 });
    else await mkdirPrivate(options.root, dir);
  } catch (err) {
    throw ioError(`cannot create the directory ${dir}`, err);
  }
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const handle = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      // the umask may only narrow 0600, but make the mode explicit anyway
      await handle.chmod(0o600);
      await handle.writeFile(content, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
    const d = await open(dir, constants.O_RDONLY);
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw ioError(`cannot write ${file}`, err);
  }
}

/** mkdir -p of `dir` under `root`, every directory it creates (the root too) mode 0700. */
async function mkdirPrivate(root: string, dir: string): Promise<void> {
  const rel = path.relative(root, dir);
  if (rel.startsWith('..') || path.isAbsolute(rel)) throw new Error(`${dir} is outside ${root}`);
  const made = await mkdir(root, { recursive: true, mode: 0o700 });
  if (made !== undefined) await chmod(root, 0o700);
  let current = root;
  for (const part of rel === '' ? [] : rel.split(path.sep)) {
    current = path.join(current, part);
    try {
      await mkdir(current, { mode: 0o700 });
      await chmod(current, 0o700);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

function ioError(message: string, cause: unknown): CorekubeError {
  const code = (cause as NodeJS.ErrnoException).code;
  return new CorekubeError('E_IO', `${message}${code ? ` (${code})` : ''}`, {
    hint: 'check that the directory exists, is owned by the user corekube runs as, and is on a writable volume',
    cause,
  });
}
