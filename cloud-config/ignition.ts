import type { BootFile, BootPlan } from './boot-plan.ts';
import { PLACEHOLDERS } from './placeholders.ts';

/**
 * The `flatcar` envelope: an Ignition config (spec 3.3.0, what Butane's `variant: flatcar` produces), the way
 * Flatcar Container Linux documents booting on OpenStack. Ignition applies it once, at first boot, before
 * systemd starts the system: files are written, units written and enabled — systemd then starts them in its
 * own order, so nothing needs a runcmd — and the user created. Flatcar keeps the Nova key pair for `core`
 * (Afterburn) and ships Docker.
 *
 * The config is JSON with the PLACEHOLDERS tokens still in it, for Heat's str_replace (or fillPlaceholders): a
 * file's content is a data URL, which a raw value could break, so a file whose content holds a token is written
 * as its literal parts (base64 data URLs) with each token in a data URL of its own (`data:,<token>`, appended in
 * order) — every token's alphabet (placeholders.ts) is safe in a data URL and in a JSON string. A file that *is*
 * a base64 token (the overlord's SSH key, discovery's CA: cloud-config's `encoding: b64`) is `data:;base64,<token>`:
 * Ignition decodes it, as cloud-init does.
 *
 * Flatcar's update strategy: downloaded, never a reboot by itself (`REBOOT_STRATEGY=off`): a machine of a running
 * cluster, above all the single discovery etcd, reboots when its operator says so.
 */
export const IGNITION_VERSION = '3.3.0';

export interface IgnitionFile {
  readonly path: string;
  readonly mode: number;
  readonly overwrite: true;
  readonly contents: { readonly source: string };
  readonly append?: readonly { readonly source: string }[];
}

export interface IgnitionConfig {
  readonly ignition: { readonly version: string };
  readonly passwd: { readonly users: readonly { readonly name: string; readonly gecos: string }[] };
  readonly storage: { readonly files: readonly IgnitionFile[] };
  readonly systemd: { readonly units: readonly { readonly name: string; readonly enabled?: boolean; readonly contents: string }[] };
}

export const FLATCAR_UPDATE_CONF = '/etc/flatcar/update.conf';

export function ignitionConfig(plan: BootPlan): IgnitionConfig {
  const update: BootFile = { path: FLATCAR_UPDATE_CONF, content: 'REBOOT_STRATEGY=off\n', mode: '0644' };
  return {
    ignition: { version: IGNITION_VERSION },
    passwd: { users: [{ name: plan.user.name, gecos: plan.user.gecos }] },
    storage: { files: [update, ...plan.files].map(ignitionFile) },
    systemd: {
      // units another unit starts (atBoot false) are written but not enabled
      units: plan.units.map((u) => (u.atBoot === false ? { name: u.name, contents: u.content } : { name: u.name, enabled: true, contents: u.content })),
    },
  };
}

/** The user_data text: the config as JSON (one line, no trailing newline, as Butane writes it). */
export function ignitionUserData(plan: BootPlan): string {
  return JSON.stringify(ignitionConfig(plan));
}

function ignitionFile(f: BootFile): IgnitionFile {
  const mode = parseInt(f.mode, 8);
  if (f.base64) {
    // a base64 token alone (with its line end): Ignition decodes the data URL
    return { path: f.path, mode, overwrite: true, contents: { source: `data:;base64,${f.content.trim()}` } };
  }
  const [first = '', ...rest] = segments(f.content);
  return { path: f.path, mode, overwrite: true, contents: { source: first }, ...(rest.length > 0 ? { append: rest.map((source) => ({ source })) } : {}) };
}

/** A content as data URLs: literal runs base64, each placeholder token raw in its own. */
export function segments(content: string): string[] {
  const out: string[] = [];
  let at = 0;
  for (const m of content.matchAll(TOKENS)) {
    if (m.index > at) out.push(literal(content.slice(at, m.index)));
    out.push(`data:,${m[0]}`);
    at = m.index + m[0].length;
  }
  if (at < content.length || out.length === 0) out.push(literal(content.slice(at)));
  return out;
}

const literal = (text: string) => `data:;base64,${Buffer.from(text, 'utf8').toString('base64')}`;

const TOKENS = new RegExp(Object.values(PLACEHOLDERS).map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
