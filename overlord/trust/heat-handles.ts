import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CONFIG_FILES } from '../../cloud-config/machine-paths.ts';
import type { Clock } from '../../core/clock.ts';
import type { Backoff } from '../../core/retry.ts';
import { signalOnce, type SignalFiles } from '../edges/heat-signal.ts';
import type { Logger } from '../edges/log.ts';
import { writeFileAtomic } from '../../core/private-files.ts';

/**
 * The overlord's two Heat wait conditions, signalled once each (edges/heat-signal.ts: a marker file remembers
 * what was sent): overlord_ready at boot, with the overlord's public key and discovery's CA as data, and
 * cluster_ready once the initial machines are deployed and the cluster is usable.
 */

/** Heat signal marker files under the state dir: what was sent, so a restart does not send it again. */
export const MARKERS = Object.freeze({ overlordReady: 'heat/overlord-ready.sent', clusterReady: 'heat/cluster-ready.sent' });
/**
 * The stack's cluster_ready handle (URL and token), kept in the state directory by the bootstrap overlord so
 * it travels, sealed, to standby overlords (shared-state.ts): whichever overlord leads when the last machine is
 * deployed signals it. (Heat takes a second signal with the same id as the same one.)
 */
export const HANDLE_FILES: SignalFiles = Object.freeze({ url: 'handles/cluster-ready.url', header: 'handles/cluster-ready.header' });
/** the id of the overlord's signals: the key of `data` in the wait condition's data attribute */
export const SIGNAL_ID = 'overlord';

export interface HandleDeps {
  readonly clock: Clock;
  readonly log: Logger;
  readonly stateDir: string;
  readonly configDir: string;
  readonly signal?: AbortSignal;
  /** for tests: the HTTP client of the Heat signals */
  readonly fetch?: typeof fetch;
  readonly backoff?: Backoff;
}

/**
 * overlord_ready, once, with data "<base64 public key line>:<base64 discovery CA PEM>"; and the cluster_ready
 * handle copied into the state directory (0600) for standbys. No URL (booted by hand): nothing to signal.
 */
export async function signalOverlordReady(publicKey: string, discoveryCa: string, deps: HandleDeps): Promise<void> {
  const data = `${Buffer.from(publicKey).toString('base64')}:${Buffer.from(discoveryCa).toString('base64')}`;
  await signalOnce(configFiles(deps.configDir, 'readyUrl', 'readyHeader'), path.join(deps.stateDir, MARKERS.overlordReady), { status: 'SUCCESS', reason: 'overlord key pair and discovery CA made', id: SIGNAL_ID, data }, signalDeps(deps));
  await keepClusterReadyHandle(configFiles(deps.configDir, 'clusterReadyUrl', 'clusterReadyHeader'), deps.stateDir);
}

/**
 * cluster_ready, once: the bootstrap overlord signals the handle of its config directory, a standby the one the
 * bootstrap overlord shared through the state (there is none when it was booted by hand: nothing to signal).
 */
export async function signalClusterReady(summary: string, standby: boolean, deps: HandleDeps): Promise<void> {
  const files = standby
    ? { url: path.join(deps.stateDir, HANDLE_FILES.url), header: path.join(deps.stateDir, HANDLE_FILES.header) }
    : configFiles(deps.configDir, 'clusterReadyUrl', 'clusterReadyHeader');
  if (standby && !(await readFile(files.url, 'utf8').then(() => true, () => false))) {
    deps.log.info({ event: 'heat.no-handle', standby }, 'standby overlord: the bootstrap overlord shared no cluster_ready handle; nothing to signal');
    return;
  }
  await signalOnce(files, path.join(deps.stateDir, MARKERS.clusterReady), { status: 'SUCCESS', reason: summary, id: SIGNAL_ID, data: summary }, signalDeps(deps));
}

/** Copies the cluster_ready handle files into the state directory (0600) when there is a handle and they differ. */
async function keepClusterReadyHandle(files: SignalFiles, stateDir: string): Promise<void> {
  const read = (f: string) => readFile(f, 'utf8').catch(() => '');
  const url = await read(files.url);
  if (url.trim() === '') return;
  for (const [from, to] of [[files.url, HANDLE_FILES.url], [files.header, HANDLE_FILES.header]] as const) {
    const content = await read(from);
    if ((await read(path.join(stateDir, to))) !== content) await writeFileAtomic(path.join(stateDir, to), content, { root: stateDir });
  }
}

function configFiles(configDir: string, url: 'readyUrl' | 'clusterReadyUrl', header: 'readyHeader' | 'clusterReadyHeader'): SignalFiles {
  return { url: path.join(configDir, CONFIG_FILES[url]), header: path.join(configDir, CONFIG_FILES[header]) };
}

function signalDeps(deps: HandleDeps) {
  return {
    clock: deps.clock,
    log: deps.log,
    stateDir: deps.stateDir,
    ...(deps.signal ? { signal: deps.signal } : {}),
    ...(deps.fetch ? { fetch: deps.fetch } : {}),
    ...(deps.backoff ? { backoff: deps.backoff } : {}),
  };
}
