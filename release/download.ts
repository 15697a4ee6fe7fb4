/**
 * Fetches an artifact from its upstream home and checks it against the checksum upstream publishes
 * (catalog.ts): a digest file next to it, or the line naming it in a `sha256sum` list. A mismatch refuses the
 * file (nothing is kept); an artifact upstream publishes no checksum for is kept and reported as unverified.
 * `rewrite` maps each URL before it is fetched (tests serve an upstream of their own; a proxy can sit there).
 */
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CorekubeError } from '../core/errors.ts';
import type { Artifact } from './catalog.ts';
import { sha256File } from './package.ts';

export interface DownloadOptions {
  readonly rewrite?: (url: string) => string;
  readonly signal?: AbortSignal;
}

export interface Downloaded {
  readonly sha256: string;
  /** how it was checked, for the mirror manifest */
  readonly provenance: string;
  readonly verified: boolean;
}

export async function downloadArtifact(artifact: Artifact, dest: string, options: DownloadOptions = {}): Promise<Downloaded> {
  if (!artifact.upstream) {
    throw new CorekubeError('E_USAGE', `${artifact.name} ${artifact.version} has no upstream download`, { hint: 'build the mirror with --from-source' });
  }
  const { url, checksum } = artifact.upstream;
  const map = options.rewrite ?? ((u: string) => u);
  const tmp = `${dest}.download-${process.pid}`;
  await mkdir(path.dirname(dest), { recursive: true });
  try {
    await fetchTo(map(url), tmp, options.signal);
    const actual = await sha256File(tmp);
    if (checksum.kind === 'none') {
      await rename(tmp, dest);
      return { sha256: actual, provenance: `unverified: ${checksum.why}; the digest is of the file downloaded from ${url}`, verified: false };
    }
    const listing = await fetchText(map(checksum.url), options.signal);
    const expected = digestFor(listing, artifact.fileName);
    if (!expected) {
      throw new CorekubeError('E_IO', `${checksum.url} holds no sha256 for ${artifact.fileName}`, { hint: 'the upstream release is incomplete or its checksum format changed: retry later, or build with --from-source' });
    }
    if (expected !== actual) {
      throw new CorekubeError('E_IO', `sha256 mismatch for ${url}: ${checksum.url} says ${expected}, the download is ${actual}; refused`, {
        hint: 'the download was corrupted or tampered with on the way: retry; if it persists, report it to the project',
      });
    }
    await rename(tmp, dest);
    return { sha256: actual, provenance: `upstream sha256 from ${checksum.url}`, verified: true };
  } finally {
    await rm(tmp, { force: true });
  }
}

/**
 * The digest of `fileName` in a checksum file: a bare digest (dl.k8s.io's `.sha256`), or the line of a
 * `sha256sum` list naming it (`<hex>  name`, `<hex> *name`, `<hex>  ./name`). undefined when absent.
 */
export function digestFor(listing: string, fileName: string): string | undefined {
  const lines = listing.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  for (const line of lines) {
    const [hex, name] = line.split(/\s+/);
    if (name !== undefined && name.replace(/^\*/, '').replace(/^\.\//, '') === fileName && /^[0-9a-fA-F]{64}$/.test(hex!)) return hex!.toLowerCase();
  }
  if (lines.length === 1 && /^[0-9a-fA-F]{64}$/.test(lines[0]!)) return lines[0]!.toLowerCase();
  return undefined;
}

async function fetchTo(url: string, dest: string, signal: AbortSignal | undefined): Promise<void> {
  const res = await request(url, signal);
  await pipeline(Readable.fromWeb(res.body! as import('node:stream/web').ReadableStream), createWriteStream(dest));
}

async function fetchText(url: string, signal: AbortSignal | undefined): Promise<string> {
  return (await request(url, signal)).text();
}

async function request(url: string, signal: AbortSignal | undefined): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow', ...(signal ? { signal } : {}) });
  } catch (err) {
    throw new CorekubeError('E_IO', `cannot download ${url}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`, {
      hint: 'this machine must reach dl.k8s.io and github.com; without them, build the mirror with --from-source (needs Go and the Go module proxy)',
      retryable: true,
    });
  }
  if (!res.ok || !res.body) throw new CorekubeError('E_IO', `cannot download ${url}: HTTP ${res.status}`, { hint: 'check the version exists upstream', retryable: res.status >= 500 });
  return res;
}
