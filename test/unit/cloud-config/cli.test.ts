import { describe, expect, it } from 'vitest';
import { cloudConfigInputs } from '../../../cli/cloud-config.ts';
import { InvalidInputError } from '../../../core/errors.ts';
import { fillPlaceholders, renderUserData } from '../../../cloud-config/index.ts';
import { CA_PEM, FILLED, SSH_KEY_LINE } from './fixtures.ts';

const FILES: Record<string, string> = {
  token: `${FILLED.joinToken}\n`,
  'key.pub': `${SSH_KEY_LINE}\n`,
  'key.b64': Buffer.from(SSH_KEY_LINE).toString('base64'),
  'ca.crt': CA_PEM,
  'ca.b64': Buffer.from(CA_PEM).toString('base64'),
  junk: 'not a key\n',
  secret: `${FILLED.overlordSecret}\n`,
};
const inputs = {
  env: {},
  readFile: (p: string) => {
    if (!(p in FILES)) throw Object.assign(new Error('nope'), { code: 'ENOENT' });
    return FILES[p]!;
  },
};

const problems = (argv: string[]) => {
  try {
    cloudConfigInputs(argv, inputs);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as InvalidInputError).code).toBe('E_USAGE');
    return (err as InvalidInputError).problems.map((p) => `${p.field}: ${p.message}`);
  }
  throw new Error('expected a rejection');
};

describe('corekube cloud-config render', () => {
  it('fills a minion from a plain .pub key and PEM, base64-encoding them as the Heat side does', () => {
    const { role, spec, values } = cloudConfigInputs(['--role', 'minion', '--os', 'ubuntu', '--join-token-file', 'token', '--overlord-ssh-key-file', 'key.pub', '--discovery-ca-file', 'ca.crt'], inputs);
    expect(role).toBe('minion');
    expect(values).toEqual({ joinToken: FILLED.joinToken, overlordSshKey: FILLED.overlordSshKey, discoveryCa: FILLED.discoveryCa });
    const text = fillPlaceholders(renderUserData(role, spec), values);
    expect(text).not.toContain('%%COREKUBE_');
  });

  it("accepts the base64 halves of overlord_ready's data as they are", () => {
    const { values } = cloudConfigInputs(['--role', 'master', '--join-token-file', 'token', '--overlord-ssh-key-file', 'key.b64', '--discovery-ca-file', 'ca.b64'], inputs);
    expect(values.overlordSshKey).toBe(FILLED.overlordSshKey);
    expect(values.discoveryCa).toBe(FILLED.discoveryCa);
  });

  it('fills the overlord counts from the spec', () => {
    const { values } = cloudConfigInputs(['--role', 'overlord', '--masters', '3', '--minions', '9', '--join-token-file', 'token'], inputs);
    expect(values).toEqual({ joinToken: FILLED.joinToken, masterCount: '3', minionCount: '9' });
  });

  it('fills a standby overlord from the join token, the discovery CA and the overlord secret; the bootstrap overlord takes the secret optionally', () => {
    const { values } = cloudConfigInputs(['--role', 'overlord-standby', '--join-token-file', 'token', '--discovery-ca-file', 'ca.crt', '--overlord-secret-file', 'secret'], inputs);
    expect(values).toEqual({ joinToken: FILLED.joinToken, discoveryCa: FILLED.discoveryCa, overlordSecret: FILLED.overlordSecret, masterCount: '1', minionCount: '3' });
    expect(cloudConfigInputs(['--role', 'overlord', '--join-token-file', 'token', '--overlord-secret-file', 'secret'], inputs).values.overlordSecret).toBe(FILLED.overlordSecret);
    expect(problems(['--role', 'overlord-standby', '--join-token-file', 'token', '--discovery-ca-file', 'ca.crt'])).toEqual(['--overlord-secret-file: is required for a overlord-standby']);
    expect(problems(['--role', 'minion', '--join-token-file', 'token', '--overlord-ssh-key-file', 'key.pub', '--discovery-ca-file', 'ca.crt', '--overlord-secret-file', 'secret'])).toEqual([
      '--overlord-secret-file: is not used by a minion',
    ]);
  });

  it('reports every problem at once: missing inputs, inputs the role does not use, unreadable or malformed files', () => {
    expect(problems(['--role', 'minion', '--overlord-ssh-key-file', 'junk', '--discovery-ca-file', 'missing'])).toEqual([
      '--join-token-file: is required for a minion',
      '--overlord-ssh-key-file: holds neither one SSH public key line nor its base64',
      '--discovery-ca-file: cannot be read (ENOENT)',
    ]);
    expect(problems(['--role', 'discovery', '--overlord-ssh-key-file', 'key.pub', '--join-token-file', 'token'])).toEqual([
      '--join-token-file: is not used by a discovery',
    ]);
    expect(problems(['--role', 'boss'])).toEqual(['--role: must be one of discovery, overlord, overlord-standby, master, minion']);
  });

  it('never puts the join token into an error', () => {
    FILES.badtoken = 'secret with spaces "quoted"\n';
    let error: unknown;
    try {
      cloudConfigInputs(['--role', 'overlord', '--join-token-file', 'badtoken'], inputs);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(JSON.stringify((error as InvalidInputError).problems) + (error as Error).message).not.toContain('secret with spaces');
  });
});
