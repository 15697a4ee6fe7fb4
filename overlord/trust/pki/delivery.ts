import { CorekubeError } from '../../../core/errors.ts';
import { configPath, DISCOVERY_TLS_FILES } from '../../../cloud-config/machine-paths.ts';
import { PKI_FILES_BY_ROLE, PKI_PATHS, type KeyPair, type PkiPaths } from '../../../units/pki-paths.ts';
import type { RemoteFile } from '../../../contracts/step.ts';
import type { DiscoveryPki, IssuedPair, MachinePki } from './authority.ts';
import type { CertEntry } from './catalog.ts';

/**
 * The files that carry a machine's PKI, at the paths its units read (units/pki-paths.ts for masters and
 * minions, cloud-config/machine-paths.ts for discovery): private keys mode 0600, certificates 0644. Pure. A
 * machine receives only what its role's units read (PKI_FILES_BY_ROLE) and never a CA key — the MachinePki it
 * is built from holds none.
 */
export const KEY_MODE = '0600';
export const CERT_MODE = '0644';

export function machinePkiFiles(pki: MachinePki, paths: PkiPaths = PKI_PATHS): RemoteFile[] {
  const files: RemoteFile[] = [];
  const missing = (entry: string) =>
    new CorekubeError('E_INTERNAL', `the PKI of machine ${pki.machineId} (${pki.role}) has no ${entry}`, {
      hint: 'the catalog and PKI_FILES_BY_ROLE disagree: every entry a role reads needs a profile in overlord/trust/pki/catalog.ts',
    });
  for (const entry of PKI_FILES_BY_ROLE[pki.role]) {
    if (entry === 'ca') files.push(cert(paths.ca, pki.clusterCa));
    else if (entry === 'etcdCa') files.push(cert(paths.etcdCa, pki.etcdCa));
    else if (entry === 'frontProxyCa') files.push(cert(paths.frontProxyCa, pki.frontProxyCa));
    else if (entry === 'serviceAccount') {
      if (pki.serviceAccount === undefined) throw missing(entry);
      files.push(cert(paths.serviceAccount.publicKey, pki.serviceAccount.publicKey), key(paths.serviceAccount.privateKey, pki.serviceAccount.privateKey));
    } else {
      const pair = pki.pairs[entry as CertEntry];
      if (pair === undefined) throw missing(entry);
      files.push(...pairFiles(paths[entry as CertEntry], pair));
    }
  }
  return files;
}

/** What the overlord installs on discovery before its etcd may start: the discovery CA and the server pair. */
export function discoveryPkiFiles(pki: DiscoveryPki): RemoteFile[] {
  const dir = configPath('discoveryPkiDir');
  return [
    cert(`${dir}/${DISCOVERY_TLS_FILES.ca}`, pki.ca),
    ...pairFiles({ cert: `${dir}/${DISCOVERY_TLS_FILES.cert}`, key: `${dir}/${DISCOVERY_TLS_FILES.key}` }, pki.server),
  ];
}

function pairFiles(at: KeyPair, pair: IssuedPair): RemoteFile[] {
  return [cert(at.cert, pair.cert), key(at.key, pair.key)];
}

function cert(path: string, content: string): RemoteFile {
  return Object.freeze({ path, content, mode: CERT_MODE });
}

function key(path: string, content: string): RemoteFile {
  return Object.freeze({ path, content, mode: KEY_MODE });
}
