import { describe, expect, it } from 'vitest';
import { fillPlaceholders, renderUserData } from '../../../cloud-config/index.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { PLACEHOLDERS } from '../../../cloud-config/placeholders.ts';
import { renderCloudTemplate, type AnnounceUnitContext } from '../../../cloud-config/templates.ts';
import { CorekubeError } from '../../../core/errors.ts';
import { specFor } from './fixtures.ts';

describe('cloud-config templates', () => {
  it('fail to render when the context lacks a value (strict), naming the template', () => {
    const partial = { role: 'minion', binDir: '/opt/corekube/bin', runtimeDirectory: 'corekube/announce' } as unknown as AnnounceUnitContext;
    let error: unknown;
    try {
      renderCloudTemplate('corekube-announce.service', partial);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(CorekubeError);
    expect((error as CorekubeError).code).toBe('E_TEMPLATE');
    expect((error as CorekubeError).message).toMatch(/corekube-announce\.service\.hbs.*discoveryIp/);
  });

  it('refuse a value a unit file or a script would misread (quotes, spaces, % specifiers)', () => {
    for (const bad of ["10.0.0.1'; rm -rf /", '10.0.0.1 x', '%n']) {
      expect(() => renderCloudTemplate('corekube-announce.service', { role: 'minion', discoveryIp: bad, binDir: '/opt/corekube/bin', runtimeDirectory: 'a' }))
        .toThrow(/cannot take/);
    }
  });
});

describe('fillPlaceholders', () => {
  it('replaces every occurrence, and unfilled tokens with nothing', () => {
    const text = `a ${PLACEHOLDERS.joinToken} b ${PLACEHOLDERS.joinToken} c ${PLACEHOLDERS.readyUrl}|`;
    expect(fillPlaceholders(text, { joinToken: 'T' })).toBe('a T b T c |');
  });

  it('refuses a multi-line value, which would break the YAML block it lands in', () => {
    expect(() => fillPlaceholders(PLACEHOLDERS.discoveryCa, { discoveryCa: 'a\nb' })).toThrow(/one line/);
  });
});

describe('discovery\'s etcd download', () => {
  const installScript = (flags: Record<string, unknown>) => {
    const text = renderUserData('discovery', parseClusterSpec({ flags: { name: 'demo', os: 'ubuntu', ...flags } }));
    return text.slice(text.indexOf('corekube-install-etcd: installs etcd'));
  };

  it('takes etcd from its GitHub release, checked against its SHA256SUMS, by default', () => {
    const script = installScript({ 'etcd-version': 'v3.6.17' });
    expect(script).toContain("tarball_url='https://github.com/etcd-io/etcd/releases/download/v3.6.17/etcd-v3.6.17-linux-amd64.tar.gz'");
    expect(script).toContain("check='https://github.com/etcd-io/etcd/releases/download/v3.6.17/SHA256SUMS'");
    expect(script).toContain("member_dir='etcd-v3.6.17-linux-amd64'");
  });

  it('takes etcd from a mirror with the digest of its manifest pinned in the script', () => {
    const digest = 'ab'.repeat(32);
    const script = installScript({
      'etcd-version': 'v3.6.17',
      'release-base-url': 'http://10.200.0.1:8080/mirror',
      'release-digests': { 'etcd/v3.6.17/etcd-v3.6.17-linux-amd64.tar.gz': digest },
    });
    expect(script).toContain("tarball_url='http://10.200.0.1:8080/mirror/etcd/v3.6.17/etcd-v3.6.17-linux-amd64.tar.gz'");
    expect(script).toContain(`check='sha256:${digest}'`);
  });

  it('refuses a mirror without the digest of discovery\'s etcd, naming the artifact and the fix', () => {
    expect(() => installScript({ 'release-base-url': 'http://10.200.0.1:8080/mirror' })).toThrow(/releaseDigests.*etcd\/v3\.6\.17\/etcd-v3\.6\.17-linux-amd64\.tar\.gz.*corekube mirror build/s);
  });
});
