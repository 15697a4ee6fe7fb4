import type { ClusterSpec } from '../spec/cluster-spec.ts';

/**
 * Where discovery downloads etcd from. dl.k8s.io (the default releaseBaseUrl) does not host etcd, so with
 * it discovery takes etcd's GitHub release and its SHA256SUMS; any other releaseBaseUrl is a mirror laid
 * out as units/release.ts describes: `<base>/etcd/<v>/etcd-<v>-linux-amd64.tar.gz` with `<that>.sha256`
 * next to it. Pure.
 */
export const DEFAULT_RELEASE_BASE_URL = 'https://dl.k8s.io';
export const ETCD_GITHUB_RELEASES = 'https://github.com/etcd-io/etcd/releases/download';

export interface EtcdRelease {
  readonly version: string;
  readonly tarballUrl: string;
  /** a sha256sum-style list (GitHub's SHA256SUMS) or a single digest (a mirror's `.sha256`) */
  readonly checksumUrl: string;
}

export function etcdRelease(spec: ClusterSpec): EtcdRelease {
  const v = spec.versions.etcd;
  const file = `etcd-${v}-linux-amd64.tar.gz`;
  if (spec.releaseBaseUrl === DEFAULT_RELEASE_BASE_URL) {
    return Object.freeze({ version: v, tarballUrl: `${ETCD_GITHUB_RELEASES}/${v}/${file}`, checksumUrl: `${ETCD_GITHUB_RELEASES}/${v}/SHA256SUMS` });
  }
  const tarballUrl = `${spec.releaseBaseUrl}/etcd/${v}/${file}`;
  return Object.freeze({ version: v, tarballUrl, checksumUrl: `${tarballUrl}.sha256` });
}
