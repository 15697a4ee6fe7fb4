import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_PORTS, startLocalHeat, stopLocalHeat } from './local-heat.ts';

/**
 * A person's handle on the local Heat service (tests use test/harness/local-heat.ts instead):
 *   npx tsx localcloud/heat/cli.ts start --state-dir DIR [--bind-address 10.200.x.1] [--detach]
 *       starts Keystone + heat-all and prints phase timings; then runs until Ctrl-C/SIGTERM and stops them.
 *       `. DIR/admin-openrc` for the openstack CLI or corekube up/down/stack status.
 *       --detach returns at once and leaves them running (stop them with `stop`). Where PID 1 does not reap
 *       orphans (this kind of VM), their entries linger as zombies after the stop: harmless, but the
 *       foreground mode avoids them.
 *   npx tsx localcloud/heat/cli.ts stop --state-dir DIR [--purge]
 *       stops exactly what the start in DIR started (idempotent); --purge also removes DIR
 */
const usage = 'usage: cli.ts start|stop --state-dir DIR [--bind-address ADDR] [--detach] [--purge]';

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { 'state-dir': { type: 'string' }, 'bind-address': { type: 'string' }, detach: { type: 'boolean' }, purge: { type: 'boolean' } },
  });
  const stateDir = values['state-dir'];
  const [verb] = positionals;
  if (!stateDir || (verb !== 'start' && verb !== 'stop')) {
    process.stderr.write(`${usage}\n`);
    return 2;
  }
  if (verb === 'stop') {
    await stopLocalHeat(stateDir);
    if (values.purge) rmSync(stateDir, { recursive: true, force: true });
    return 0;
  }
  const heat = await startLocalHeat({
    stateDir,
    bindAddress: values['bind-address'],
    ports: DEFAULT_PORTS,
    onPhase: (phase, ms) => process.stderr.write(`local-heat: ${phase} ${(ms / 1000).toFixed(1)} s\n`),
  });
  process.stderr.write(`local-heat: ready in ${((heat.timings.total ?? 0) / 1000).toFixed(1)} s; credentials: . ${stateDir}/admin-openrc\n`);
  if (values.detach) return 0;
  process.stderr.write('local-heat: running; Ctrl-C stops it\n');
  await new Promise<void>((resolve) => {
    // The services are unref'd children: without a timer Node would exit here and orphan them.
    const keepAlive = setInterval(() => {}, 1 << 30);
    const done = () => {
      clearInterval(keepAlive);
      resolve();
    };
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
  });
  await heat.stop();
  process.stderr.write('local-heat: stopped\n');
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`local-heat: ${err?.describe?.() ?? err?.stack ?? err}\n`);
    process.exit(1);
  },
);
