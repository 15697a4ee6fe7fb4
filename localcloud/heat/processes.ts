import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { HeatClient } from '../../cloud/heat-client.ts';
import { CorekubeError } from '../../core/errors.ts';

/**
 * The local Heat service's processes: started in process groups of their own, setup commands run to completion,
 * waited for over HTTP, stopped by group (only the members a start recorded), and who holds a port.
 */
export async function stopGroup(pgid: number, marker: string): Promise<void> {
  const signalAll = (sig: NodeJS.Signals) => {
    const members = groupMembers(pgid, marker);
    for (const pid of members) {
      try {
        process.kill(pid, sig);
      } catch {
        /* exited meanwhile */
      }
    }
    return members.length;
  };
  if (signalAll('SIGTERM') === 0) return;
  const until = Date.now() + 10_000;
  while (Date.now() < until) {
    await sleep(100);
    if (groupMembers(pgid, marker).length === 0) return;
  }
  signalAll('SIGKILL');
  for (let i = 0; i < 50 && groupMembers(pgid, marker).length > 0; i++) await sleep(100);
}

/** Live (not zombie) processes of process group `pgid` whose command line contains `marker`. */
export function groupMembers(pgid: number, marker: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) !== pgid || fields[0] === 'Z') continue;
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(marker)) out.push(Number(entry));
    } catch {
      /* the process exited while we looked */
    }
  }
  return out;
}

/** Starts a long-running service in its own process group, output to `<stateDir>/log/<name>.stdout`. */
export function startDaemon(name: string, command: string, args: string[], stateDir: string): ChildProcess {
  const out = openSync(join(stateDir, 'log', `${name}.stdout`), 'a');
  const child = spawn(command, args, { detached: true, stdio: ['ignore', out, out], env: serviceEnv() });
  closeSync(out);
  child.unref();
  if (child.pid === undefined) throw new CorekubeError('E_IO', `could not start ${command}`, { hint: 'is it installed? run scripts/setup' });
  writeFileSync(join(stateDir, 'run', `${name}.pid`), `${child.pid}\n`);
  return child;
}

/** The services' environment: ours without OS_* (an openrc sourced in the shell must not leak into them). */
export function serviceEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('OS_') && !k.startsWith('PYTHON')) env[k] = v;
  return { ...env, ...extra };
}

/** Runs a setup command to completion, output appended to `logFile`; failure → E_IO with the log's tail. */
export function runStep(command: string, args: string[], logFile: string, timeoutMs: number, extraEnv: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = openSync(logFile, 'a');
    const child = spawn(command, args, { stdio: ['ignore', out, out], env: serviceEnv(extraEnv), timeout: timeoutMs, killSignal: 'SIGKILL' });
    closeSync(out);
    child.on('error', (cause) => reject(new CorekubeError('E_IO', `${command} could not run: ${cause.message}`, { cause, hint: 'run scripts/setup' })));
    child.on('exit', (code, signal) => {
      if (code === 0) return resolve();
      reject(new CorekubeError('E_IO', `${command} ${args.filter((a) => !a.startsWith('/')).join(' ')} failed (${signal ?? `exit ${code}`})\n${tail(logFile)}`, {
        hint: `read ${logFile}`,
      }));
    });
  });
}

export async function waitForHttp(url: string, ready: (status: number) => boolean, child: ChildProcess, deadline: number, log: string): Promise<void> {
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new CorekubeError('E_IO', `${child.spawnfile} exited (${child.signalCode ?? child.exitCode}) before serving ${url}\n${tail(log)}`, { hint: `read ${log}` });
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (ready(res.status)) return;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new CorekubeError('E_STEP_TIMEOUT', `${url} did not answer in time`, { hint: `read ${log}` });
    await sleep(100);
  }
}

export async function waitForEngine(heat: HeatClient, child: ChildProcess, deadline: number, log: string): Promise<void> {
  const template = { heat_template_version: '2021-04-16', resources: {} };
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new CorekubeError('E_IO', `heat-all exited (${child.signalCode ?? child.exitCode}) before its engine was ready\n${tail(log)}`, { hint: `read ${log}` });
    }
    try {
      await heat.validate({ template });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new CorekubeError('E_STEP_TIMEOUT', `heat-engine did not answer in time: ${(err as Error).message}`, { hint: `read ${log}`, cause: err });
    }
    await sleep(200);
  }
}

/** Fails fast (naming the holder) when host:port is taken: a health poll would be answered by the old server. */
export async function assertPortFree(host: string, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const server = createServer();
    server.once('error', (cause: NodeJS.ErrnoException) => {
      const holder = portHolder(port);
      reject(new CorekubeError('E_IO', `${host}:${port} is in use${holder ? ` by pid ${holder.pid} (${holder.cmdline})` : ''} (${cause.code})`, {
        hint: holder?.stateDir
          ? `another local Heat runs from ${holder.stateDir}: stop it with npx tsx localcloud/heat/cli.ts stop --state-dir ${holder.stateDir}`
          : 'stop whatever listens there, or start the local Heat with other ports',
        cause,
      }));
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve()));
  });
}

export function portHolder(port: number): { pid: number; cmdline: string; stateDir: string | undefined } | undefined {
  try {
    const inodes = new Set<string>();
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
      for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f.length > 9 && f[3] === '0A' && parseInt(f[1]!.split(':')[1]!, 16) === port) inodes.add(f[9]!);
      }
    }
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      let fds: string[];
      try {
        fds = readdirSync(`/proc/${entry}/fd`);
      } catch {
        continue;
      }
      for (const fd of fds) {
        let link = '';
        try {
          link = readlinkSync(`/proc/${entry}/fd/${fd}`);
        } catch {
          continue;
        }
        const m = /^socket:\[(\d+)\]$/.exec(link);
        if (m && inodes.has(m[1]!)) {
          const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').trim();
          const stateDir = /(\S+)\/etc\/(?:heat\.conf|keystone-uwsgi\.ini)/.exec(cmdline)?.[1];
          return { pid: Number(entry), cmdline, stateDir };
        }
      }
    }
  } catch {
    /* best effort */
  }
  return undefined;
}

export function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).map((l) => `  | ${l}`).join('\n');
  } catch {
    return `  | (no ${file})`;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
