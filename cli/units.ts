import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CorekubeError } from '../core/errors.ts';
import { ROLES, type Role } from '../contracts/roles.ts';
import { addressPlan } from '../clusterspec/address-plan.ts';
import { buildUnitContext, PKI_PATHS, renderUnits } from '../units/index.ts';
import { bootstrapEnv } from '../contracts/etcd-members.ts';
import type { Command } from './command.ts';
import { parseSpecArgs, specUsage } from './spec-options.ts';

const usage = `Usage: corekube units render --role master|minion -o DIR [--ip IP] [--hostname NAME] [--machine-id ID]
                             [--master-ips A,B,…] [spec options]

Writes every file a machine of that role gets from the overlord — systemd units, config files, the
download script and its release manifest — under DIR, at their paths on the machine (DIR/etc/systemd/…); for a
master also the etcd bootstrap file the overlord writes before its first start (the initial cluster of --master-ips).
Prints the files, the start order and the units hash.

  --role ROLE          master or minion (required)
  -o, --output DIR     directory to write into (required)
  --ip IP              the machine's private IP (default: the first DHCP address of the private network)
  --hostname NAME      the machine's hostname (default: <cluster>-<role>-0)
  --machine-id ID      32 hex digits (default: all zeros)
  --master-ips A,B     IPs of the deployed masters (default: a master's own IP; for a minion, required)

${specUsage()}`;

export const unitsRenderCommand: Command = {
  path: ['units', 'render'],
  summary: 'write the systemd units and config files one master or minion gets',
  usage,
  async run(argv) {
    const { spec, values } = parseSpecArgs(
      argv,
      {
        role: { type: 'string' },
        output: { type: 'string', short: 'o' },
        ip: { type: 'string' },
        hostname: { type: 'string' },
        'machine-id': { type: 'string' },
        'master-ips': { type: 'string' },
      },
      usage,
    );
    const role = values.role;
    if (role === undefined || !(ROLES as readonly string[]).includes(role)) {
      throw new CorekubeError('E_USAGE', `--role must be one of ${ROLES.join(', ')} (got ${JSON.stringify(role ?? null)})`, { hint: 'for example --role minion' });
    }
    if (values.output === undefined) throw new CorekubeError('E_USAGE', '-o DIR is required', { hint: 'for example -o ./rendered' });
    const ip = values.ip ?? addressPlan(spec).dhcpStart;
    const masterIps = values['master-ips'] !== undefined ? values['master-ips'].split(',').map((s) => s.trim()).filter(Boolean) : role === 'master' ? [ip] : [];
    if (masterIps.length === 0) throw new CorekubeError('E_USAGE', 'a minion needs --master-ips', { hint: 'for example --master-ips 10.240.0.32' });

    const ctx = buildUnitContext(
      spec,
      { id: values['machine-id'] ?? '0'.repeat(32), role: role as Role, ip, hostname: values.hostname ?? `${spec.name}-${role}-0` },
      { masterIps },
      PKI_PATHS,
    );
    const rendered = renderUnits(ctx);
    const out = path.resolve(values.output);
    // a master also gets what the overlord writes before its etcd first starts: here, the initial cluster of --master-ips
    const member = rendered.etcdMember;
    const bootstrap = member ? [{ path: member.bootstrapEnv, content: bootstrapEnv('new', member.initialCluster), mode: '0644' }] : [];
    for (const f of [...rendered.files, ...bootstrap]) {
      const target = path.join(out, f.path);
      await mkdir(path.dirname(target), { recursive: true });
      await writeFile(target, f.content);
      await chmod(target, parseInt(f.mode, 8));
    }
    const lines = [
      ...[...rendered.files, ...bootstrap].map((f) => `${f.mode} ${path.join(out, f.path)}`),
      `start: ${rendered.start.map((s) => `${s.unit} (${s.until})`).join(' → ')}`,
      `hash: ${rendered.hash}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  },
};
