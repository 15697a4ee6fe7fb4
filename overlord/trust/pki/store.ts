import { lstat, readFile } from 'node:fs/promises';
import path from 'node:path';
import { CorekubeError } from '../../../core/errors.ts';
import { writeFileAtomic } from '../../../core/private-files.ts';

/**
 * Where the overlord keeps its PKI: every CA key and certificate, every issued pair, the service-account key.
 * Only the overlord reads it — it is deliberately not etcd, which every node can reach: a CA key must never
 * be readable by a node. A restarted overlord finds its CAs here and reuses them.
 *
 * Names are relative slash paths of lowercase letters, digits, dots and dashes (`ca/cluster.key`).
 */
export interface PkiStore {
  /** the stored text, or undefined when there is none */
  read(name: string): Promise<string | undefined>;
  /** stores `content` under `name`, replacing any previous value atomically */
  write(name: string, content: string): Promise<void>;
}

/** The overlord's default store directory (a volume of the overlord container). */
export const DEFAULT_PKI_DIR = '/var/lib/corekube/pki';

const NAME = /^[a-z0-9][a-z0-9.-]*(\/[a-z0-9][a-z0-9.-]*)*$/;

function checkName(name: string): void {
  if (!NAME.test(name)) throw new CorekubeError('E_INTERNAL', `invalid PKI store name ${JSON.stringify(name)}`);
}

/**
 * A store over a local directory: one file per name, mode 0600 in directories of mode 0700, each written to
 * a temporary file, fsync'ed and renamed over the old one (then the directory fsync'ed), so a crash leaves
 * either the old or the new content, never half a key. A file readable by group or others is refused on
 * read: the operator must fix its mode rather than corekube widening who can read a key.
 */
export class DirectoryPkiStore implements PkiStore {
  readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  async read(name: string): Promise<string | undefined> {
    checkName(name);
    const file = path.join(this.root, name);
    let st;
    try {
      st = await lstat(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw ioError(`cannot read ${file}`, err);
    }
    if (!st.isFile()) throw new CorekubeError('E_PKI', `${file} is not a regular file`, { hint: 'remove it: corekube stores PKI material as plain files' });
    if ((st.mode & 0o077) !== 0) {
      throw new CorekubeError('E_PKI', `${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)})`, {
        hint: `run 'chmod -R go= ${this.root}': PKI files must be readable by their owner only`,
      });
    }
    try {
      return await readFile(file, 'utf8');
    } catch (err) {
      throw ioError(`cannot read ${file}`, err);
    }
  }

  async write(name: string, content: string): Promise<void> {
    checkName(name);
    await writeFileAtomic(path.join(this.root, name), content, { root: this.root });
  }
}

function ioError(message: string, cause: unknown): CorekubeError {
  const code = (cause as NodeJS.ErrnoException).code;
  return new CorekubeError('E_IO', `${message}${code ? ` (${code})` : ''}`, {
    hint: 'check that the PKI directory exists, is owned by the user corekube runs as, and is on a writable volume',
    cause,
  });
}

/** A store in memory, for tests and for one-shot tools that keep nothing. */
export class MemoryPkiStore implements PkiStore {
  private readonly files = new Map<string, string>();

  async read(name: string): Promise<string | undefined> {
    checkName(name);
    return this.files.get(name);
  }

  async write(name: string, content: string): Promise<void> {
    checkName(name);
    this.files.set(name, content);
  }

  /** every stored name, sorted (tests) */
  names(): string[] {
    return [...this.files.keys()].sort();
  }
}
