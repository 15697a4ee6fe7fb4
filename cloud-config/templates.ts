import { readFileSync } from 'node:fs';
import { CorekubeError } from '../core/errors.ts';
import { renderTemplate } from '../core/template.ts';

/**
 * The handlebars templates under cloud-config/templates/ and the typed context of each. Units end in
 * `.service.hbs`/`.path.hbs`; the others are bash scripts installed without extension. Rendered only
 * through core/template.ts (strict: a missing value throws). Every value put into a unit or a script is a
 * "safe word" (checked here): values come from the validated spec, but a unit file reads `%` as a
 * specifier and a script reads quotes, so anything outside the set fails rendering instead of shipping.
 */
export interface AnnounceContext {
  role: 'master' | 'minion';
  machinesPrefix: string;
  joinPrefix: string;
  joinerUser: string;
  discoveryIp: string;
  discoveryPort: number;
  leaseTtl: number;
  keepaliveInterval: number;
  configDir: string;
  runDir: string;
  /** the join nonce's file name in runDir */
  nonceName: string;
  files: { discoveryCa: string; joinToken: string; discoveryCredentials: string };
}

export interface AnnounceUnitContext {
  role: 'master' | 'minion';
  discoveryIp: string;
  binDir: string;
  /** relative to /run: RuntimeDirectory= */
  runtimeDirectory: string;
}

export interface AuthorizeOverlordContext {
  user: string;
  keyFile: string;
  binDir: string;
}

export interface HeatSignalContext {
  configDir: string;
}

export interface DiscoveryReadyContext {
  endpoint: string;
  caFile: string;
  binDir: string;
}

export interface InstallEtcdContext {
  version: string;
  tarballUrl: string;
  /** `sha256:<hex>` (pinned), a checksum file's URL, or `none` (units/release.ts releaseManifest's check) */
  check: string;
  /** the directory of etcd and etcdctl inside the tarball */
  memberDir: string;
  binDir: string;
}

export interface DiscoveryEtcdContext {
  cluster: string;
  version: string;
  binDir: string;
  tlsDir: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  dataDir: string;
  /** relative to /var/lib: StateDirectory= */
  stateDirectory: string;
  clientUrl: string;
  peerUrl: string;
  /** --max-request-bytes and --quota-backend-bytes (contracts/discovery-limits.ts) */
  maxRequestBytes: number;
  quotaBytes: number;
}

export interface DiscoveryEtcdPathContext {
  keyFile: string;
}

export interface BinDirContext {
  binDir: string;
}

export interface OverlordUnitContext {
  cluster: string;
  image: string;
  configDir: string;
  configFile: string;
  stateDir: string;
  /** the image's user (overlord/Dockerfile): `uid:gid`, and each alone */
  imageUser: string;
  imageUid: number;
  imageGid: number;
  /** the 0600 files under configDir the container reads: given to the image's user before each start */
  secretFiles: string[];
  healthPort: number;
  /** a standby server: the container fetches the state (`--standby`) */
  standby: boolean;
}

/** Template file name (without `.hbs`) → its context. */
export interface TemplateContexts {
  'corekube-announce': AnnounceContext;
  'corekube-announce.service': AnnounceUnitContext;
  'corekube-authorize-overlord': AuthorizeOverlordContext;
  'corekube-authorize-overlord.service': AuthorizeOverlordContext;
  'corekube-heat-signal': HeatSignalContext;
  'corekube-discovery-ready': DiscoveryReadyContext;
  'corekube-discovery-ready.service': BinDirContext;
  'corekube-install-etcd': InstallEtcdContext;
  'discovery-etcd.service': DiscoveryEtcdContext;
  'discovery-etcd.path': DiscoveryEtcdPathContext;
  'overlord.service': OverlordUnitContext;
}

export type TemplateName = keyof TemplateContexts;

const TEMPLATE_DIR = new URL('./templates/', import.meta.url);
const sources = new Map<string, string>();

/** Characters a rendered value may hold: no quotes, no whitespace, no `%` (systemd specifiers), no `$`. */
const SAFE_WORD = /^[A-Za-z0-9._:/@+=,-]+$/;

export function renderCloudTemplate<N extends TemplateName>(name: N, context: TemplateContexts[N]): string {
  assertSafe(name, context, '');
  return renderTemplate(templateSource(name), context, `cloud-config/templates/${name}.hbs`);
}

export function templateSource(name: string): string {
  let s = sources.get(name);
  if (s === undefined) {
    s = readFileSync(new URL(`${name}.hbs`, TEMPLATE_DIR), 'utf8');
    sources.set(name, s);
  }
  return s;
}

function assertSafe(name: string, value: unknown, path: string): void {
  if (typeof value === 'number') return;
  if (typeof value === 'string') {
    if (!SAFE_WORD.test(value)) {
      throw new CorekubeError('E_TEMPLATE', `value ${path} of cloud-config template ${name} holds characters a unit file or script cannot take: ${JSON.stringify(value)}`, {
        hint: 'values rendered into units and scripts may only hold letters, digits and . _ : / @ + = , -',
      });
    }
    return;
  }
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) assertSafe(name, v, path ? `${path}.${k}` : k);
  }
}
