/**
 * units/: the systemd units, config files and helper scripts each role runs, rendered from typed contexts
 * with strict handlebars templates. Pure; the overlord writes the files over SSH and starts the units.
 */
export { buildUnitContext, etcdMemberName, API_PROXY_RETRY_DELAY, type ApiProxyContext, type UnitContext, type UnitMachine, type UnitClusterView } from './context.ts';
export { renderUnits, hashFiles, unitsOf, UNITS, API_PROXY_UNIT, KERNEL_MODULES, KERNEL_SYSCTLS } from './render.ts';
export { artifactsFor, releaseManifest, type ReleaseArtifact, type ArchiveMember } from './release.ts';
export { PKI_PATHS, PKI_DIR, PKI_FILES_BY_ROLE, type PkiPaths, type KeyPair } from './pki-paths.ts';
export { LAYOUT, PORTS, TIMEOUTS, CLUSTER_DOMAIN, type Layout } from './layout.ts';
