import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { beforeAll, describe, expect, it } from 'vitest';
import type { RotatedCa, RotationPhase } from '../../contracts/ca-rotation.ts';
import { CertificateAuthority, type MachinePki } from '../../overlord/trust/pki/authority.ts';
import { MemoryPkiStore } from '../../overlord/trust/pki/store.ts';
import { manualClock, master1, master2, minion1, spec } from '../unit/pki/fixtures.ts';

/**
 * A CA rotated under real TLS (Node's OpenSSL): at every moment of the rollout, each machine runs either the files
 * of the previous phase or those of the current one — so for every pair of neighbouring phases, a server presenting
 * its certificate and trusting its machine's CA file, and a client doing the same, complete a mutual-TLS handshake
 * whichever of the two phases each one is at. No component loses trust mid-rotation. And the wait matters: a
 * machine two phases ahead of its peer is refused (why `corekube pki rotate-ca` refuses a phase before the previous
 * one is rolled out).
 */
type Snapshot = Readonly<Record<string, MachinePki>>;
type Phase = 'before' | RotationPhase;
const PHASES: readonly Phase[] = ['before', 'trust', 'sign', 'finish'];

interface End {
  readonly cert: string;
  readonly key: string;
  /** the CA file it trusts its peer by */
  readonly ca: string;
}

/** Who talks to whom with which certificate, for each rotated CA (the server's own cert may be another CA's). */
const LINKS: Readonly<Record<RotatedCa, { what: string; server: (s: Snapshot) => End; client: (s: Snapshot) => End }>> = {
  cluster: {
    what: 'a kubelet (minion) calling the API server (master)',
    server: (s) => ({ cert: s.master1!.pairs.apiServer!.cert, key: s.master1!.pairs.apiServer!.key, ca: s.master1!.clusterCa }),
    client: (s) => ({ cert: s.minion1!.pairs.kubelet!.cert, key: s.minion1!.pairs.kubelet!.key, ca: s.minion1!.clusterCa }),
  },
  etcd: {
    what: "an API server (master 2) calling master 1's etcd",
    server: (s) => ({ cert: s.master1!.pairs.etcdServer!.cert, key: s.master1!.pairs.etcdServer!.key, ca: s.master1!.etcdCa }),
    client: (s) => ({ cert: s.master2!.pairs.apiServerEtcdClient!.cert, key: s.master2!.pairs.apiServerEtcdClient!.key, ca: s.master2!.etcdCa }),
  },
  'front-proxy': {
    what: "an API server's front-proxy client (master 2) calling an aggregated API that trusts the front-proxy CA (master 1)",
    server: (s) => ({ cert: s.master1!.pairs.apiServer!.cert, key: s.master1!.pairs.apiServer!.key, ca: s.master1!.frontProxyCa }),
    client: (s) => ({ cert: s.master2!.pairs.frontProxyClient!.cert, key: s.master2!.pairs.frontProxyClient!.key, ca: s.master2!.clusterCa }),
  },
};

/** One mutual-TLS exchange on 127.0.0.1: ok when the client reads the server's answer (both verified the other). */
async function handshake(server: End, client: End): Promise<{ ok: boolean; error?: string }> {
  const srv = tls.createServer({ cert: server.cert, key: server.key, ca: server.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' }, (socket) => socket.end('ok'));
  let serverError: string | undefined;
  srv.on('tlsClientError', (err) => (serverError = err.message));
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as AddressInfo;
  try {
    return await new Promise((resolve) => {
      let data = '';
      const socket = tls.connect({ host: '127.0.0.1', port, cert: client.cert, key: client.key, ca: client.ca, rejectUnauthorized: true });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve({ ok: false, error: 'timeout' });
      }, 5000);
      socket.on('data', (d) => (data += d.toString()));
      socket.on('error', (err) => {
        clearTimeout(timer);
        resolve({ ok: false, error: serverError ?? err.message });
      });
      socket.on('close', () => {
        clearTimeout(timer);
        resolve(data === 'ok' ? { ok: true } : { ok: false, error: serverError ?? 'closed without an answer' });
      });
    });
  } finally {
    srv.close();
  }
}

describe.each(['cluster', 'etcd', 'front-proxy'] as const)('rotating the %s CA under real TLS', (kind) => {
  const snapshots = new Map<Phase, Snapshot>();
  const link = LINKS[kind];

  beforeAll(async () => {
    const ca = new CertificateAuthority({ store: new MemoryPkiStore(), clock: manualClock(Date.now()), cluster: 'demo' });
    const issue = async (): Promise<Snapshot> => ({ master1: await ca.issueFor(spec, master1), master2: await ca.issueFor(spec, master2), minion1: await ca.issueFor(spec, minion1) });
    snapshots.set('before', await issue());
    for (const phase of ['trust', 'sign', 'finish'] as const) {
      await ca.rotate(kind, phase);
      snapshots.set(phase, await issue());
    }
  });

  it.each([
    ['before', 'trust'],
    ['trust', 'sign'],
    ['sign', 'finish'],
  ] as const)('while %s → %s rolls out, every mix of old and new files completes the handshake', async (previous, current) => {
    for (const serverAt of [previous, current]) {
      for (const clientAt of [previous, current]) {
        const result = await handshake(link.server(snapshots.get(serverAt)!), link.client(snapshots.get(clientAt)!));
        expect(result, `${link.what}: server at ${serverAt}, client at ${clientAt}`).toEqual({ ok: true });
      }
    }
  });

  it('refuses a peer two phases apart: a machine that skipped the wait is not trusted', async () => {
    // the server re-signed (sign) while the client still trusts the old CA alone (before): the client refuses it…
    const early = await handshake(link.server(snapshots.get('sign')!), link.client(snapshots.get('before')!));
    // …and a server that dropped the old CA (finish) refuses a client still presenting an old certificate (trust)
    const late = await handshake(link.server(snapshots.get('finish')!), link.client(snapshots.get('trust')!));
    if (kind === 'front-proxy') {
      // the front-proxy server's own certificate is the cluster CA's: only the client side changes
      expect(early.ok).toBe(true);
    } else {
      expect(early.ok).toBe(false);
    }
    expect(late.ok).toBe(false);
  });
});
