import type { Command } from './command.ts';
import { DEMO_USAGE as usage, parseDemoArgs } from './demo-options.ts';
import { keepInBackground, tearDownKept } from './demo-keep.ts';
import { runDemo } from './demo-run.ts';

/*
 * `corekube demo`: the local cloud (localcloud/) — a real Heat creating corekube's generated template,
 * machines booted by a real cloud-init and systemd, the overlord building the cluster — followed as a
 * person would follow `docker logs overlord`, then the final status, how long each machine took, an optional
 * scale-up through a Heat stack update, and a teardown that leaves nothing behind (also on Ctrl-C).
 * localcloud/ is imported lazily: the overlord image carries no local cloud.
 */
export const demoCommand: Command = {
  path: ['demo'],
  summary: 'a local cloud with a real Heat and a real Kubernetes cluster on it: boot, deploy, check with kubectl',
  usage,
  async run(argv) {
    const options = parseDemoArgs(argv);
    if (options.down) return tearDownKept(options.net);
    if (options.keep && options.keeperLog === undefined) return keepInBackground(options, argv);
    return runDemo(options);
  },
};

