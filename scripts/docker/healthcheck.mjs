// The overlord image's HEALTHCHECK (overlord/Dockerfile): GET /healthz of the running `corekube overlord`.
// Plain JavaScript on purpose: Docker runs it every interval, and it must start in milliseconds without tsx.
//
// The port and address are read from the overlord's own command line (/proc/<pid>/cmdline: --health-port N,
// --health-address A, also in the --flag=value form), so the check follows whatever the operator chose.
// Exit 0 = healthy: /healthz answered 200, or the overlord was started without --health-port (no endpoint:
// nothing to probe beyond the process running, which Docker already knows). Exit 1 = unhealthy: any other
// status (503 = etcd unreachable longer than the retry budget), no answer within 3 s, or no overlord process.
// What it prints lands in `docker inspect`'s .State.Health.Log.
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';

function flagValue(argv, name) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) return argv[i + 1];
    if (argv[i].startsWith(`${name}=`)) return argv[i].slice(name.length + 1);
  }
  return undefined;
}

/** the argv of the `corekube overlord` process in this container, or undefined */
function overlordArgv() {
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    let argv;
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
    } catch {
      continue; // gone meanwhile
    }
    const command = argv.findIndex((a) => a.endsWith('/corekube') || a.endsWith('/corekube.js') || a === 'corekube');
    if (command >= 0 && argv[command + 1] === 'overlord') return argv.slice(command + 2);
  }
  return undefined;
}

function probeAddress(address) {
  if (address === undefined || address === '0.0.0.0') return '127.0.0.1';
  if (address === '::') return '::1';
  return address;
}

const argv = overlordArgv();
if (argv === undefined) {
  console.log('no `corekube overlord` process in this container');
  process.exit(1);
}
const port = flagValue(argv, '--health-port');
if (port === undefined) {
  console.log('the overlord runs without --health-port: no endpoint to probe');
  process.exit(0);
}
const host = probeAddress(flagValue(argv, '--health-address'));
const req = http.get({ host, port: Number(port), path: '/healthz', timeout: 3000 }, (res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (chunk) => (body += chunk));
  res.on('end', () => {
    console.log(`GET /healthz on ${host}:${port}: ${res.statusCode} ${body.trim()}`);
    process.exit(res.statusCode === 200 ? 0 : 1);
  });
});
req.on('timeout', () => req.destroy(new Error('no answer within 3 s')));
req.on('error', (err) => {
  console.log(`GET /healthz on ${host}:${port}: ${err.message}`);
  process.exit(1);
});
