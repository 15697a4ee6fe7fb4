/**
 * `scripts/machines`: a thin CLI over localcloud/machines/machines.ts for looking at what the tests do.
 *   up N [--net K] [--key FILE.pub]  boots N machines, prints how to reach them, tears down on Ctrl-C/SIGTERM
 *   down [--net K | --all]          removes the traces of a killed run (processes, mounts, netns, bridge, cgroups)
 *   list                            nets with traces on this host
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { cleanupNow } from '../cleanup.ts';
import { bootMachines, cleanupNet, machinesMissing, netFromEnv, netsInUse } from './machines.ts';

const USAGE = `usage: scripts/machines up N [--net K] [--key FILE.pub] | down [--net K | --all] | list`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { net: { type: 'string' }, key: { type: 'string' }, all: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  const [command, count] = positionals;
  if (values.help || command === undefined) {
    process.stdout.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  const net = values.net === undefined ? netFromEnv() : Number(values.net);

  if (command === 'list') {
    for (const k of netsInUse()) process.stdout.write(`net ${k}: bridge ckbr${k}, 10.200.${k}.0/24\n`);
    return 0;
  }
  if (command === 'down') {
    const nets = values.all ? netsInUse() : [net];
    for (const k of nets) {
      cleanupNet(k);
      process.stdout.write(`net ${k}: removed\n`);
    }
    return 0;
  }
  if (command !== 'up') {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }

  const n = Number(count ?? '1');
  if (!Number.isInteger(n) || n < 1 || n > 150) {
    process.stderr.write(`N must be 1..150, got ${count}\n`);
    return 2;
  }
  const missing = machinesMissing();
  if (missing) {
    process.stderr.write(`cannot boot machines: ${missing}\n`);
    return 1;
  }
  let keyFile = values.key;
  let tempKeyDir: string | undefined;
  if (keyFile === undefined) {
    tempKeyDir = mkdtempSync(path.join(os.tmpdir(), 'corekube-machines-key-'));
    keyFile = path.join(tempKeyDir, 'id_ed25519.pub');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'scripts/machines', '-f', keyFile.replace(/\.pub$/, '')]);
  }
  if (!existsSync(keyFile)) {
    process.stderr.write(`--key ${keyFile} does not exist\n`);
    return 2;
  }
  const started = Date.now();
  const fleet = await bootMachines(
    Array.from({ length: n }, () => ({})),
    { net, authorizedKey: readFileSync(keyFile, 'utf8') },
  );
  process.stdout.write(`${n} machines up on ${fleet.bridge} in ${Date.now() - started} ms\n`);
  for (const m of fleet.machines) {
    process.stdout.write(`  ${m.hostname.padEnd(6)} ${m.ip.padEnd(15)} id=${m.id} pid=${m.pid}\n`);
  }
  const sample = fleet.machines[0]!;
  process.stdout.write(
    `\nssh:    ssh -i ${keyFile.replace(/\.pub$/, '')} -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no corekube@${sample.ip}\n` +
      `enter:  nsenter -t ${sample.pid} -a bash\nCtrl-C tears everything down.\n`,
  );
  // nothing else holds the event loop (the machines are detached): keep it alive until a signal
  const alive = setInterval(() => undefined, 60_000);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  clearInterval(alive);
  await fleet.teardown();
  if (tempKeyDir) rmSync(tempKeyDir, { recursive: true, force: true });
  process.stdout.write('torn down\n');
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    cleanupNow();
    process.stderr.write(`scripts/machines: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
