import { mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HeatClient } from '../../cloud/heat-client.ts';
import { KeystoneSession } from '../../cloud/keystone.ts';
import { killLocalHeatNow, missingPrerequisites, startLocalHeat, type LocalHeat, type LocalHeatOptions } from '../../localcloud/heat/local-heat.ts';
import { onExit } from './cleanup.ts';

/**
 * A real Keystone + Heat for a test file: `const heat = await startTestHeat()` in beforeAll, `await
 * heat.teardown()` in afterAll. Start it once per file (it takes ~5–15 s on 2 cores). State under
 * /tmp/corekube-heat-<pid>-<n> (configs, sqlite, logs), removed on teardown unless COREKUBE_KEEP_HEAT is
 * set; processes are killed at process exit even when a hook failed first.
 *
 * Ports are the catalog's fixed ones (Keystone 5000, heat-api 8004, heat-api-cfn 8000), so one test Heat
 * runs at a time on a machine (vitest runs files one at a time). `bindAddress`: also serve on a test
 * bridge's address, for machines that signal wait conditions (Heat's endpoints then carry that address).
 */
export interface TestHeat extends LocalHeat {
  /** A fresh admin session + Heat client (each call authenticates anew). */
  adminClient(): Promise<HeatClient>;
  teardown(): Promise<void>;
}

let started = 0;

/** Why the local Heat cannot run here, or undefined. For missingParts(). */
export function localHeatMissing(): string | undefined {
  const missing = missingPrerequisites();
  return missing.length === 0 ? undefined : `local Heat needs ${missing.join(', ')} (scripts/setup installs keystone heat-api heat-engine)`;
}

export async function startTestHeat(options: Partial<Omit<LocalHeatOptions, 'stateDir'>> = {}): Promise<TestHeat> {
  const stateDir = join(tmpdir(), `corekube-heat-${process.pid}-${started++}`);
  mkdirSync(stateDir, { recursive: true });
  const unregister = onExit(`local Heat in ${stateDir}`, () => {
    killLocalHeatNow(stateDir);
    if (!process.env.COREKUBE_KEEP_HEAT) rmSync(stateDir, { recursive: true, force: true });
  });
  let heat: LocalHeat;
  try {
    heat = await startLocalHeat({ ...options, stateDir });
  } catch (err) {
    killLocalHeatNow(stateDir);
    unregister();
    // keep the logs of a failed start: the error names them
    throw err;
  }
  return {
    ...heat,
    async adminClient() {
      return new HeatClient(await KeystoneSession.open(heat.authConfig));
    },
    async teardown() {
      await heat.stop();
      unregister();
      if (!process.env.COREKUBE_KEEP_HEAT) rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
