import { describe, expect, it } from 'vitest';
import { etcdRelease } from '../../../cloud-config/etcd-release.ts';
import { fillPlaceholders } from '../../../cloud-config/index.ts';
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

describe('etcdRelease', () => {
  it('takes etcd from its GitHub release (with SHA256SUMS) when the release base is dl.k8s.io', () => {
    expect(etcdRelease(specFor('flatcar', { 'etcd-version': 'v3.6.6' }))).toEqual({
      version: 'v3.6.6',
      tarballUrl: 'https://github.com/etcd-io/etcd/releases/download/v3.6.6/etcd-v3.6.6-linux-amd64.tar.gz',
      checksumUrl: 'https://github.com/etcd-io/etcd/releases/download/v3.6.6/SHA256SUMS',
    });
  });

  it('takes etcd from a mirror in the units/release.ts layout otherwise', () => {
    expect(etcdRelease(specFor('ubuntu', { 'etcd-version': 'v3.5.21', 'release-base-url': 'http://10.200.0.1:8080/mirror' }))).toEqual({
      version: 'v3.5.21',
      tarballUrl: 'http://10.200.0.1:8080/mirror/etcd/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz',
      checksumUrl: 'http://10.200.0.1:8080/mirror/etcd/v3.5.21/etcd-v3.5.21-linux-amd64.tar.gz.sha256',
    });
  });
});
