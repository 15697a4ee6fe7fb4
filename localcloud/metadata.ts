/**
 * A stand-in for Nova's metadata service at 169.254.169.254 on the local cloud's bridge: an HTTP server on
 * that address answering every path with a fixed body. It exists so the cluster's guard can be seen working:
 * a node (host network) reaches it, a pod is refused (units/scripts/corekube-metadata-guard). It serves no
 * user_data (the machines take theirs from a NoCloud seed) and no secret.
 */
import http from 'node:http';
import { spawnSync } from 'node:child_process';
import { CorekubeError } from '../core/errors.ts';
import { onExit } from './cleanup.ts';

export const METADATA_IP = '169.254.169.254';
export const METADATA_BODY = 'corekube local cloud: metadata service stand-in\n';

export interface MetadataStandIn {
  readonly url: string;
  close(): Promise<void>;
}

export async function startMetadataStandIn(bridge: string): Promise<MetadataStandIn> {
  const add = spawnSync('ip', ['addr', 'add', `${METADATA_IP}/32`, 'dev', bridge], { encoding: 'utf8' });
  if (add.status !== 0) {
    throw new CorekubeError('E_IO', `cannot put ${METADATA_IP} on ${bridge}: ${add.stderr.trim()}`, {
      hint: 'another local cloud holds it (one local cloud at a time): tear it down first',
    });
  }
  const removeAddress = () => spawnSync('ip', ['addr', 'del', `${METADATA_IP}/32`, 'dev', bridge], { stdio: 'ignore' });
  const server = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(METADATA_BODY));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: METADATA_IP, port: 80, exclusive: true }, () => resolve());
    });
  } catch (err) {
    removeAddress();
    throw new CorekubeError('E_IO', `cannot serve the metadata stand-in on ${METADATA_IP}:80: ${(err as Error).message}`, { hint: 'another process listens there' });
  }
  const unregister = onExit(`metadata stand-in on ${bridge}`, () => {
    server.closeAllConnections();
    removeAddress();
  });
  return {
    url: `http://${METADATA_IP}`,
    close: async () => {
      unregister();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      removeAddress();
    },
  };
}
