import path from 'node:path';

/**
 * The environment that runs the rendered corekube-announce script on this host instead of a machine: every
 * file it reads under `machineDir` (machine-id, boot_id, hostname, host_key.pub — the test writes them), its
 * config tree at `configDir`, 127.0.0.1:`port` playing the discovery IP, short leases, no waiting for a host
 * key and no backoff. `overrides` replace or add variables (COREKUBE_LEASE_TTL, COREKUBE_REQUEST_TIMEOUT …).
 */
export function announceEnv(machineDir: string, configDir: string, port: number, overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    COREKUBE_CONFIG_DIR: configDir,
    COREKUBE_DISCOVERY_IP: '127.0.0.1',
    COREKUBE_DISCOVERY_PORT: String(port),
    COREKUBE_LEASE_TTL: '3',
    COREKUBE_KEEPALIVE_INTERVAL: '1',
    COREKUBE_STATE_DIR: path.join(machineDir, 'run'),
    COREKUBE_MACHINE_ID_FILE: path.join(machineDir, 'machine-id'),
    COREKUBE_BOOT_ID_FILE: path.join(machineDir, 'boot_id'),
    COREKUBE_HOSTNAME_FILE: path.join(machineDir, 'hostname'),
    COREKUBE_HOST_KEY_FILE: path.join(machineDir, 'host_key.pub'),
    COREKUBE_HOST_KEY_WAIT: '0',
    COREKUBE_BACKOFF_BASE: '0',
    TMPDIR: machineDir,
    ...overrides,
  };
}
