import type { ChildProcess } from 'node:child_process';

/**
 * Kills every child still running and resolves once each has exited. SIGKILL by default: a test's etcd members hold
 * throw-away data, and a member's SIGTERM waits seconds on its peers.
 */
export async function killAll(children: readonly (ChildProcess | undefined)[], signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  await Promise.all(
    children.map(async (child) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
    }),
  );
}
