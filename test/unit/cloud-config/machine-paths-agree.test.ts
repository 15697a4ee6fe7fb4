/**
 * The credentials file has one path for two rooms: cloud-config's announce script (CONFIG_FILES, relative to
 * /etc/corekube) and the units' flanneld (DISCOVERY_CLIENT_PATHS). They must name the same file.
 */
import { describe, expect, it } from 'vitest';
import { configPath } from '../../../cloud-config/machine-paths.ts';
import { DISCOVERY_CLIENT_PATHS } from '../../../units/pki-paths.ts';

describe('paths shared by cloud-config and the units', () => {
  it('put the discovery CA and the machine\'s discovery credentials at one path each', () => {
    expect(configPath('discoveryCredentials')).toBe(DISCOVERY_CLIENT_PATHS.credentials);
    expect(configPath('discoveryCa')).toBe(DISCOVERY_CLIENT_PATHS.ca);
  });
});
