import YAML from 'yaml';

/**
 * What a rendered user_data gives a machine, read back the way its consumer reads it — cloud-init for a
 * #cloud-config, Ignition for a JSON config — so tests assert on the files, units and users a machine gets,
 * whatever the dialect.
 */
export interface WrittenFile {
  path: string;
  permissions: string;
  /** what lands on disk: cloud-init's `encoding: b64` and Ignition's data URLs decoded; a placeholder token kept as it is */
  content: string;
}

/** What a user_data gives a machine, whatever its dialect: the users, the files, the units. */
export interface MachineView {
  users: unknown[];
  files: WrittenFile[];
  units: { name: string; content: string; enabled: boolean }[];
}

const TOKEN_ONLY = /^%%COREKUBE_[A-Z_]+%%\n?$/;
const UNIT_DIR = '/etc/systemd/system/';

/** Reads a #cloud-config (Ubuntu) or an Ignition config (Flatcar) into one view. */
export function machineView(text: string): MachineView {
  if (text.startsWith('{')) return ignitionView(JSON.parse(text) as IgnitionDoc);
  const doc = YAML.parse(text, { strict: true, uniqueKeys: true }) as Record<string, unknown>;
  const all = (doc.write_files as { path: string; permissions: string; encoding?: string; content: string }[]).map((f) => ({
    path: f.path,
    permissions: f.permissions,
    content: f.encoding !== 'b64' ? f.content : TOKEN_ONLY.test(f.content) ? f.content.trim() : Buffer.from(f.content, 'base64').toString('utf8'),
  }));
  const enabled = ((doc.runcmd as string[][] | undefined) ?? []).find((c) => c[1] === 'enable')?.slice(2) ?? [];
  return {
    users: doc.users as unknown[],
    files: all.filter((f) => !f.path.startsWith(UNIT_DIR)),
    units: all.filter((f) => f.path.startsWith(UNIT_DIR)).map((f) => ({ name: f.path.slice(UNIT_DIR.length), content: f.content, enabled: enabled.includes(f.path.slice(UNIT_DIR.length)) })),
  };
}

export interface IgnitionDoc {
  ignition: { version: string };
  passwd: { users: unknown[] };
  storage: { files: { path: string; mode: number; overwrite: boolean; contents: { source: string }; append?: { source: string }[] }[] };
  systemd: { units: { name: string; enabled?: boolean; contents: string }[] };
}

function ignitionView(doc: IgnitionDoc): MachineView {
  return {
    users: doc.passwd.users,
    files: doc.storage.files.map((f) => ({
      path: f.path,
      permissions: `0${f.mode.toString(8)}`,
      content: [f.contents, ...(f.append ?? [])].map((c) => dataUrlText(c.source)).join(''),
    })),
    units: doc.systemd.units.map((u) => ({ name: u.name, content: u.contents, enabled: u.enabled === true })),
  };
}

/** A data URL's data as Ignition reads it (base64 decoded, or percent-unescaped); a placeholder token kept. */
export function dataUrlText(source: string): string {
  const m = /^data:([^,]*),(.*)$/s.exec(source);
  if (!m) throw new Error(`not a data URL: ${source.slice(0, 40)}`);
  const [, params, data] = m as unknown as [string, string, string];
  if (TOKEN_ONLY.test(data)) return data;
  return params.endsWith(';base64') ? Buffer.from(data, 'base64').toString('utf8') : decodeURIComponent(data);
}

export function fileAt(view: MachineView, path: string): WrittenFile {
  const f = view.files.find((x) => x.path === path);
  if (!f) throw new Error(`no file written at ${path}`);
  return f;
}

