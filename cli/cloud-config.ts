import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { BOOT_ROLES, fillPlaceholders, renderUserData, type BootRole, type PlaceholderName } from '../cloud-config/index.ts';
import { CorekubeError, InvalidInputError, type FieldProblem } from '../core/errors.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { Command } from './command.ts';
import { parseSpecArgs, processInputs, specUsage, type SpecInputs } from './spec-options.ts';

/**
 * `corekube cloud-config render`: the user_data of one role, with the placeholders Heat would fill taken
 * from files instead (booting a machine by hand, e.g. one more minion pointed at an existing discovery).
 * Placeholders without a value render empty: no Heat wait condition to signal. The output holds the join
 * token, so -o writes it with mode 0600 (atomically); no secret is ever printed in a message.
 */
const OPTIONS = {
  role: { type: 'string' },
  'join-token-file': { type: 'string' },
  'overlord-ssh-key-file': { type: 'string' },
  'discovery-ca-file': { type: 'string' },
  'overlord-secret-file': { type: 'string' },
  output: { type: 'string', short: 'o' },
} as const;

const usage = `Usage: corekube cloud-config render --role discovery|overlord|overlord-standby|master|minion [spec options]
         [--join-token-file F] [--overlord-ssh-key-file F] [--discovery-ca-file F] [--overlord-secret-file F] [-o FILE]

Prints the user_data (#cloud-config, for the spec's OS profile) of one machine of the given role, or writes
it to FILE (mode 0600: it holds the join token). Render it from the cluster's own spec (same -c file and
flags): the discovery address and versions are baked in. Then, e.g.:
  openstack server create --image IMAGE --flavor FLAVOR --network NET --user-data FILE minion-extra-1

Options:
  --role ROLE                   discovery, overlord, overlord-standby, master or minion
  --join-token-file F           the cluster's join token (master, minion, overlord, overlord-standby)
  --overlord-ssh-key-file F     the overlord's SSH public key line, or its base64 as in overlord_ready's data
                                (master, minion, discovery)
  --discovery-ca-file F         the discovery CA PEM, or its base64 as in overlord_ready's data (master, minion,
                                overlord-standby)
  --overlord-secret-file F      the overlord secret every overlord of the cluster shares (overlord-standby;
                                optional for overlord: without it no standby can join)
  -o, --output FILE             write to FILE (atomically, mode 0600) instead of stdout
  -h, --help                    this text

${specUsage()}
`;

type InputFlag = 'join-token-file' | 'overlord-ssh-key-file' | 'discovery-ca-file' | 'overlord-secret-file';

/** Which input files each role takes; a role needs every one it takes to be of any use. */
const INPUTS: Readonly<Record<BootRole, readonly InputFlag[]>> = {
  discovery: ['overlord-ssh-key-file'],
  overlord: ['join-token-file'],
  'overlord-standby': ['join-token-file', 'discovery-ca-file', 'overlord-secret-file'],
  master: ['join-token-file', 'overlord-ssh-key-file', 'discovery-ca-file'],
  minion: ['join-token-file', 'overlord-ssh-key-file', 'discovery-ca-file'],
};

/** Inputs a role may take but can do without. */
const OPTIONAL_INPUTS: Readonly<Partial<Record<BootRole, readonly InputFlag[]>>> = { overlord: ['overlord-secret-file'] };
const OVERLORD_SECRET = /^[A-Za-z0-9]{32,256}$/;
const JOIN_TOKEN = /^[A-Za-z0-9._~+/=-]{16,256}$/;
const SSH_KEY_LINE = /^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|ssh-rsa) [A-Za-z0-9+/]+={0,3}( [A-Za-z0-9@._:+-]{1,128})?$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const PEM_CERT = /^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n?$/;

/** Parses the command line and the input files into the placeholder values; every problem at once. */
export function cloudConfigInputs(argv: readonly string[], inputs: SpecInputs = processInputs): {
  role: BootRole;
  spec: ClusterSpec;
  values: Partial<Record<PlaceholderName, string>>;
  output: string | undefined;
} {
  const { spec, values: opts } = parseSpecArgs(argv, OPTIONS, usage, inputs);
  const problems: FieldProblem[] = [];
  const role = opts.role as BootRole | undefined;
  if (role === undefined || !BOOT_ROLES.includes(role)) {
    problems.push({ field: '--role', value: opts.role, message: `must be one of ${BOOT_ROLES.join(', ')}`, fix: 'for example --role minion' });
    throw new InvalidInputError('the cloud-config inputs are invalid', problems, 'E_USAGE');
  }

  const read = (flag: InputFlag): string | undefined => {
    const file = opts[flag];
    if (file === undefined) {
      if (INPUTS[role].includes(flag)) problems.push({ field: `--${flag}`, value: undefined, message: `is required for a ${role}`, fix: `give the file with --${flag}` });
      return undefined;
    }
    if (!INPUTS[role].includes(flag) && !OPTIONAL_INPUTS[role]?.includes(flag)) {
      problems.push({ field: `--${flag}`, value: file, message: `is not used by a ${role}`, fix: `leave it out; a ${role} takes ${INPUTS[role].map((f) => `--${f}`).join(', ')}` });
      return undefined;
    }
    try {
      return inputs.readFile(file);
    } catch (err) {
      problems.push({ field: `--${flag}`, value: file, message: `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, fix: 'give a readable file' });
      return undefined;
    }
  };

  const values: Partial<Record<PlaceholderName, string>> = {};
  const token = read('join-token-file')?.trim();
  if (token !== undefined) {
    // the value is a secret: problems name the file, never its content
    if (JOIN_TOKEN.test(token)) values.joinToken = token;
    else problems.push({ field: '--join-token-file', value: opts['join-token-file'], message: 'does not hold a join token (16-256 characters of A-Z a-z 0-9 . _ ~ + / = -)', fix: "use the cluster's join token" });
  }
  const secret = read('overlord-secret-file')?.trim();
  if (secret !== undefined) {
    if (OVERLORD_SECRET.test(secret)) values.overlordSecret = secret;
    else problems.push({ field: '--overlord-secret-file', value: opts['overlord-secret-file'], message: 'does not hold an overlord secret (32-256 letters and digits)', fix: "use the stack's overlord_secret value" });
  }
  const key = read('overlord-ssh-key-file')?.trim();
  if (key !== undefined) {
    const line = SSH_KEY_LINE.test(key) ? key : BASE64.test(key) ? Buffer.from(key, 'base64').toString('utf8').trim() : '';
    if (SSH_KEY_LINE.test(line)) values.overlordSshKey = Buffer.from(line).toString('base64');
    else problems.push({ field: '--overlord-ssh-key-file', value: opts['overlord-ssh-key-file'], message: 'holds neither one SSH public key line nor its base64', fix: "use the part before ':' of overlord_ready's data, or the overlord's .pub file" });
  }
  const ca = read('discovery-ca-file')?.trim();
  if (ca !== undefined) {
    const pem = PEM_CERT.test(ca) ? `${ca}\n` : BASE64.test(ca) ? Buffer.from(ca, 'base64').toString('utf8') : '';
    if (PEM_CERT.test(pem)) values.discoveryCa = Buffer.from(pem).toString('base64');
    else problems.push({ field: '--discovery-ca-file', value: opts['discovery-ca-file'], message: 'holds neither a PEM certificate nor its base64', fix: "use the part after ':' of overlord_ready's data" });
  }
  if (problems.length > 0) throw new InvalidInputError('the cloud-config inputs are invalid', problems, 'E_USAGE');
  if (role === 'overlord' || role === 'overlord-standby') {
    values.masterCount = String(spec.masters);
    values.minionCount = String(spec.minions);
  }
  return { role, spec, values, output: opts.output };
}

export const cloudConfigRenderCommand: Command = {
  path: ['cloud-config', 'render'],
  summary: 'print or write the user_data of one machine (boot a node by hand)',
  usage,
  async run(argv) {
    const { role, spec, values, output } = cloudConfigInputs(argv);
    const text = fillPlaceholders(renderUserData(role, spec), values);
    if (output === undefined) process.stdout.write(text);
    else writePrivate(output, text);
    return 0;
  },
};

/** Writes FILE with mode 0600 through a temp file + rename, so a failed write leaves the old file. */
function writePrivate(file: string, text: string): void {
  const tmp = join(dirname(file), `.${basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, file);
  } catch (cause) {
    rmSync(tmp, { force: true });
    throw new CorekubeError('E_IO', `cannot write ${file}: ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}`, {
      hint: 'check that the directory exists and is writable',
      cause,
    });
  }
}
