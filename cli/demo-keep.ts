import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CorekubeError } from '../core/errors.ts';
import type { LocalCloud, LocalCloudTraces } from '../localcloud/cloud.ts';
import type { DemoOptions } from './demo-options.ts';

/** `corekube demo --keep` and `--down`: a detached keeper serves the cloud, and tears it down when told. */
/** Where `--keep` keeps what `--down` needs: the keeper's pid, its log, the kubeconfig and openrc. */
export function keptDir(net: number): string {
  return path.join(os.tmpdir(), `corekube-demo-${net}`);
}

interface KeptState {
  readonly pid: number;
  readonly net: number;
  readonly kubeconfig: string;
  readonly openrc: string;
  readonly kubectl: string;
  readonly traces: LocalCloudTraces;
}

/**
 * `--keep`, in the keeper: prints where everything is (the lines `KUBECONFIG=`, `OPENRC=`, `kubectl:` and
 * `down:`, then KEPT_MARKER for the process that started it), records the keeper's pid for `--down`, and
 * serves the cloud — Nova boots what a stack update asks for — until SIGTERM/SIGINT, then returns (the
 * caller tears down).
 */
export async function keep(cloud: LocalCloud, kubeconfig: string, options: DemoOptions, say: (t: string) => void): Promise<void> {
  const dir = keptDir(options.net);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const openrc = path.join(dir, 'openrc');
  await writeFile(openrc, `# corekube demo --keep: the local Keystone and Heat of net ${options.net} (source it for the openstack CLI)\n${Object.entries(cloud.heatService.env).map(([k, v]) => `export ${k}=${shellQuote(v)}`).join('\n')}\n`, { mode: 0o600 });
  const state: KeptState = { pid: process.pid, net: options.net, kubeconfig, openrc, kubectl: cloud.kubectl, traces: cloud.traces };
  await writeFile(path.join(dir, 'state.json'), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/corekube.js');
  say(`\n[cloud]     kept running (Heat, Keystone, the machines, the cluster); this process (pid ${process.pid}) serves it`);
  say(`KUBECONFIG=${kubeconfig}`);
  say(`OPENRC=${openrc}`);
  say(`kubectl: ${cloud.kubectl}`);
  say(`down: ${process.execPath} ${bin} demo --down --net ${options.net}`);
  say(`[cloud]     try: ${cloud.kubectl} --kubeconfig ${kubeconfig} get nodes -o wide`);
  say(`[cloud]     and: . ${openrc} && openstack stack update --existing --parameter minion_count=${options.minions + 1} --wait demo`);
  say(KEPT_MARKER);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

export const KEPT_MARKER = '[cloud]     keeper ready';

/**
 * `--keep` in the process a person started: runs the demo in a detached keeper process (this command with
 * --keeper-log), relays its log until the keeper says it keeps the cloud (exit 0) or ends (its exit status).
 */
export async function keepInBackground(options: DemoOptions, argv: readonly string[]): Promise<number> {
  const dir = keptDir(options.net);
  const existing = await readKept(options.net);
  if (existing && alive(existing.pid)) {
    throw new CorekubeError('E_USAGE', `a kept demo already runs on net ${options.net} (pid ${existing.pid})`, { hint: `tear it down first: corekube demo --down --net ${options.net}` });
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const log = path.join(dir, 'demo.log');
  const fd = openSync(log, 'w', 0o600);
  const bin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/corekube.js');
  const child = spawn(process.execPath, [...process.execArgv, bin, 'demo', ...argv, '--keeper-log', log], { detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  child.unref();
  let exited: number | undefined;
  child.on('exit', (code) => (exited = code ?? 1));
  let offset = 0;
  let carry = '';
  for (;;) {
    const text = await readFile(log, 'utf8').catch(() => '');
    const fresh = text.slice(offset);
    offset = text.length;
    const lines = (carry + fresh).split('\n');
    carry = lines.pop() ?? '';
    for (const line of lines) {
      if (line === KEPT_MARKER) return 0;
      const stdoutLine = options.json ? /^\{/.test(line) : true;
      (stdoutLine ? process.stdout : process.stderr).write(`${line}\n`);
    }
    if (exited !== undefined) {
      if (carry) process.stdout.write(`${carry}\n`);
      return exited;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** `--down`: stops the keeper (which tears the cloud down) and waits; cleans up after a keeper that was killed. */
export async function tearDownKept(net: number): Promise<number> {
  const state = await readKept(net);
  const say = (t: string) => void process.stdout.write(`${t}\n`);
  if (state && alive(state.pid)) {
    say(`[cloud]     stopping the kept demo on net ${net} (pid ${state.pid}): it tears everything down`);
    process.kill(state.pid, 'SIGTERM');
    const deadline = Date.now() + 180_000;
    while (alive(state.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
  }
  // the keeper's process group (its registry and overlord process), should it or they have survived
  if (state) {
    try {
      process.kill(-state.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  // whatever a killed keeper left: machines, bridge, Heat, the Docker engine, the registry
  const { cleanupLocalCloud } = await import('../localcloud/local-cloud.ts');
  const left = await cleanupLocalCloud(net, state?.traces);
  await rm(keptDir(net), { recursive: true, force: true });
  say(left.length > 0 ? `[cloud]     removed what was left: ${left.join(', ')}` : `[cloud]     nothing of the demo on net ${net} is left`);
  return 0;
}

async function readKept(net: number): Promise<KeptState | undefined> {
  try {
    return JSON.parse(await readFile(path.join(keptDir(net), 'state.json'), 'utf8')) as KeptState;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function shellQuote(v: string): string {
  return `'${v.replace(/'/g, `'\\''`)}'`;
}
