import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CONFIG_FILES } from '../../cloud-config/machine-paths.ts';
import { parseAuthConfig } from '../../cloud/auth-config.ts';
import { HeatClient } from '../../cloud/heat-client.ts';
import type { Transport } from '../../cloud/http.ts';
import { KeystoneSession } from '../../cloud/keystone.ts';
import { OVERLORD_CHANNEL } from '../../contracts/overlord-channel.ts';
import { writeFileAtomic } from '../../core/private-files.ts';

/**
 * The overlord's edge to the stack's channel (contracts/overlord-channel.ts, heat/overlord-channel.ts): the stack
 * user of `overlord_channel` — handed to the bootstrap overlord in user_data, kept in the state directory at boot
 * (`cloud/channel-agent.json`, 0600) so that it travels sealed to standbys (trust/shared-state.ts) — and one
 * read of that resource's metadata through corekube's own OpenStack client (cloud/): a Keystone session as the
 * stack user (password, project scope, re-authenticated on 401), then the catalog's public Heat endpoint in its
 * region. Nothing here is logged; the password never leaves this module but to Keystone.
 */
export const CHANNEL_AGENT_FILE = 'cloud/channel-agent.json';

/** The stack user that may read overlord_channel's metadata. */
export interface ChannelAgent {
  readonly authUrl: string;
  readonly userId: string;
  readonly password: string;
  readonly projectId: string;
  /** `<stack name>/<stack id>` */
  readonly stackId: string;
  /** the region of Heat's endpoint in the catalog (undefined: the only one) */
  readonly region: string | undefined;
}

/** The agent from user_data's files in the config dir, or undefined when absent or empty (booted by hand, a standby). */
export async function agentFromConfig(configDir: string): Promise<ChannelAgent | undefined> {
  const read = (file: string) => readFile(path.join(configDir, file), 'utf8').then((t) => t.trim(), () => '');
  const [authUrl, userId, password, projectId, stackId, region] = await Promise.all([
    read(CONFIG_FILES.cloudAuthUrl),
    read(CONFIG_FILES.cloudUserId),
    read(CONFIG_FILES.cloudPassword),
    read(CONFIG_FILES.cloudProjectId),
    read(CONFIG_FILES.cloudStackId),
    read(CONFIG_FILES.cloudRegion),
  ]);
  if (!authUrl || !userId || !password || !projectId || !stackId) return undefined;
  return Object.freeze({ authUrl, userId, password, projectId, stackId, region: region || undefined });
}

/** At boot: the config dir's agent kept in the state dir (written only when it changed); resolves with what is kept. */
export async function keepChannelAgent(configDir: string, stateDir: string): Promise<ChannelAgent | undefined> {
  const given = await agentFromConfig(configDir);
  const kept = await readChannelAgent(stateDir);
  if (given === undefined) return kept;
  const text = `${JSON.stringify(given)}\n`;
  if (kept === undefined || `${JSON.stringify(kept)}\n` !== text) await writeFileAtomic(path.join(stateDir, CHANNEL_AGENT_FILE), text, { root: stateDir });
  return given;
}

/** The kept agent, or undefined (booted by hand: no channel). */
export async function readChannelAgent(stateDir: string): Promise<ChannelAgent | undefined> {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(await readFile(path.join(stateDir, CHANNEL_AGENT_FILE), 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const s = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : '');
  if (!s('authUrl') || !s('userId') || !s('password') || !s('projectId') || !s('stackId')) return undefined;
  return Object.freeze({ authUrl: s('authUrl'), userId: s('userId'), password: s('password'), projectId: s('projectId'), stackId: s('stackId'), region: s('region') || undefined });
}

/** Reads overlord_channel's metadata; one Keystone session for its life (opened again after a failure). */
export class StackChannel {
  private heat: Promise<HeatClient> | undefined;

  constructor(
    private readonly agent: ChannelAgent,
    /** for tests: the HTTP transport to Keystone and Heat, by service */
    private readonly transport?: (service: 'Keystone' | 'Heat') => Transport,
  ) {}

  /** The resource's metadata (every key: the caller parses the one it needs). Throws E_HEAT (retryable when Heat or Keystone may answer later). */
  async metadata(): Promise<Readonly<Record<string, unknown>>> {
    const heat = (this.heat ??= this.open());
    try {
      const body = await (await heat).call<{ metadata?: Record<string, unknown> }>('GET', `/stacks/${this.agent.stackId}/resources/${OVERLORD_CHANNEL}/metadata`, {
        hints: { 403: `the stack user may read ${OVERLORD_CHANNEL}' metadata only: the overlord server must belong to this stack`, 404: `run \`openstack stack resource show <stack> ${OVERLORD_CHANNEL}\` as the project` },
      });
      return body?.metadata ?? {};
    } catch (err) {
      this.heat = undefined;
      throw err;
    }
  }

  private async open(): Promise<HeatClient> {
    const { agent, transport } = this;
    const config = parseAuthConfig({
      OS_AUTH_URL: agent.authUrl,
      OS_USER_ID: agent.userId,
      OS_PASSWORD: agent.password,
      OS_PROJECT_ID: agent.projectId,
      OS_REGION_NAME: agent.region,
      OS_INTERFACE: 'public',
    });
    const session = await KeystoneSession.open(config, ...(transport ? [transport('Keystone')] : []));
    return new HeatClient(session, transport ? { transport: transport('Heat') } : {});
  }
}
