import { DISCOVERY_MAX_REQUEST_BYTES, DISCOVERY_QUOTA_BYTES } from '../contracts/discovery-limits.ts';
import { addressPlan, ETCD_CLIENT_PORT } from '../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { overlordAccess, placeholderFile, plan, script, type BootPlan } from './boot-plan.ts';
import { resolveRelease, verificationField } from '../release/sources.ts';
import { CONFIG_DIR, CONFIG_FILES, configPath, DISCOVERY_TLS_FILES, MACHINE_PATHS } from './machine-paths.ts';
import { PLACEHOLDERS } from './placeholders.ts';
import { renderCloudTemplate } from './templates.ts';

/**
 * The discovery server: a single-member etcd v3 on the address plan's discovery IP, https on :2379,
 * peer traffic on loopback only. It starts once the overlord has installed its TLS files over SSH
 * (discovery-etcd.path), then signals discovery_ready. The etcd binary is downloaded on both OS profiles from
 * where the spec's release comes from (release/sources.ts), so both run the very same units.
 */
export const DISCOVERY_ETCD_PEER_URL = 'http://127.0.0.1:2380';

export function discoveryPlan(spec: ClusterSpec): BootPlan {
  const addresses = addressPlan(spec);
  const bin = MACHINE_PATHS.binDir;
  const tlsDir = `${CONFIG_DIR}/${CONFIG_FILES.discoveryPkiDir}`;
  const tls = {
    caFile: `${tlsDir}/${DISCOVERY_TLS_FILES.ca}`,
    certFile: `${tlsDir}/${DISCOVERY_TLS_FILES.cert}`,
    keyFile: `${tlsDir}/${DISCOVERY_TLS_FILES.key}`,
  };
  const etcd = resolveRelease(spec, 'discovery').find((r) => r.artifact.project === 'etcd');
  if (!etcd) throw new Error('release/catalog.ts lists no etcd for discovery');
  const release = {
    version: etcd.artifact.version,
    tarballUrl: etcd.url,
    check: verificationField(etcd.verify),
    memberDir: etcd.artifact.members[0]!.member.split('/')[0]!,
  };
  const clientUrl = `https://${addresses.discovery}:${ETCD_CLIENT_PORT}`;
  const access = overlordAccess();
  return plan('discovery', {
    files: [
      ...access.files,
      placeholderFile(configPath('readyUrl'), PLACEHOLDERS.readyUrl, '0644'),
      placeholderFile(configPath('readyHeader'), `X-Auth-Token: ${PLACEHOLDERS.readyToken}`, '0600'),
      script('corekube-install-etcd', renderCloudTemplate('corekube-install-etcd', { ...release, binDir: bin })),
      script('corekube-heat-signal', renderCloudTemplate('corekube-heat-signal', { configDir: CONFIG_DIR })),
      script('corekube-discovery-ready', renderCloudTemplate('corekube-discovery-ready', { endpoint: clientUrl, caFile: tls.caFile, binDir: bin })),
    ],
    units: [
      ...access.units,
      {
        name: 'discovery-etcd.service',
        content: renderCloudTemplate('discovery-etcd.service', {
          cluster: spec.name,
          version: release.version,
          binDir: bin,
          tlsDir,
          ...tls,
          dataDir: MACHINE_PATHS.discoveryEtcdData,
          stateDirectory: MACHINE_PATHS.discoveryEtcdData.replace(/^\/var\/lib\//, ''),
          clientUrl,
          peerUrl: DISCOVERY_ETCD_PEER_URL,
          maxRequestBytes: DISCOVERY_MAX_REQUEST_BYTES,
          quotaBytes: DISCOVERY_QUOTA_BYTES,
        }),
        // started by discovery-etcd.path only: started directly it would fail until the certificate is there
        atBoot: false,
      },
      { name: 'discovery-etcd.path', content: renderCloudTemplate('discovery-etcd.path', { keyFile: tls.keyFile }) },
      { name: 'corekube-discovery-ready.service', content: renderCloudTemplate('corekube-discovery-ready.service', { binDir: bin }) },
    ],
  });
}
