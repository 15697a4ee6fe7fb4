/**
 * A TCP proxy on 127.0.0.1 between a client (an overlord) and a server (etcd), to play network faults:
 *
 * - `suspend()`: a partition. Connections stay open but nothing flows either way (bytes sent meanwhile
 *   are held, as TCP would keep retransmitting them) and new connections are accepted but not forwarded.
 *   No RST, no FIN: the client only notices through its own timeouts, as on a real network cut.
 * - `resume()`: the partition heals. Held bytes are delivered late, in order (a client's request sent
 *   during the cut reaches the server after it — what fencing must survive), then traffic flows again.
 * - `cut()`: every connection is reset and new ones are refused until `restore()`.
 *
 * Everything is closed by `close()`, or at process exit if a test failed first.
 */
import net from 'node:net';
import { onExit } from './cleanup.ts';
import { freePort } from './ports.ts';

export interface TcpProxy {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  readonly port: number;
  /** connections accepted so far (tests check that a client really went through the proxy) */
  readonly accepted: number;
  suspend(): void;
  resume(): void;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

interface Pair {
  readonly client: net.Socket;
  upstream: net.Socket | undefined;
  /** bytes that arrived while suspended, per direction, delivered on resume */
  readonly held: { toUpstream: Buffer[]; toClient: Buffer[] };
}

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  const port = await freePort();
  const pairs = new Set<Pair>();
  let mode: 'open' | 'suspended' | 'cut' = 'open';
  let accepted = 0;

  const destroy = (p: Pair) => {
    p.client.destroy();
    p.upstream?.destroy();
    pairs.delete(p);
  };

  const connectUpstream = (p: Pair) => {
    const upstream = net.connect({ host: targetHost, port: targetPort });
    p.upstream = upstream;
    upstream.on('error', () => destroy(p));
    upstream.on('close', () => destroy(p));
    upstream.on('data', (chunk: Buffer) => {
      if (mode === 'suspended') p.held.toClient.push(chunk);
      else p.client.write(chunk);
    });
    for (const chunk of p.held.toUpstream.splice(0)) upstream.write(chunk);
  };

  const server = net.createServer((client) => {
    if (mode === 'cut') {
      client.destroy();
      return;
    }
    accepted++;
    const p: Pair = { client, upstream: undefined, held: { toUpstream: [], toClient: [] } };
    pairs.add(p);
    client.on('error', () => destroy(p));
    client.on('close', () => destroy(p));
    client.on('data', (chunk: Buffer) => {
      if (mode === 'suspended' || !p.upstream) p.held.toUpstream.push(chunk);
      else p.upstream.write(chunk);
    });
    // a connection made during a partition reaches the server only once it heals
    if (mode === 'open') connectUpstream(p);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve());
  });

  const closeAll = () => {
    for (const p of [...pairs]) destroy(p);
  };
  const unregister = onExit(`tcp proxy :${port}`, () => {
    closeAll();
    server.close();
  });

  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    get accepted() {
      return accepted;
    },
    suspend() {
      if (mode === 'open') mode = 'suspended';
    },
    resume() {
      if (mode !== 'suspended') return;
      mode = 'open';
      for (const p of pairs) {
        if (!p.upstream) connectUpstream(p);
        else for (const chunk of p.held.toUpstream.splice(0)) p.upstream.write(chunk);
        for (const chunk of p.held.toClient.splice(0)) p.client.write(chunk);
      }
    },
    cut() {
      mode = 'cut';
      closeAll();
    },
    restore() {
      if (mode === 'cut') mode = 'open';
    },
    close: async () => {
      unregister();
      closeAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
