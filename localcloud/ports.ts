import net from 'node:net';

/** True when a TCP listener can bind `host:port` right now. */
export function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * A TCP port free on every host given (the kernel picks one on the first host; the others are checked).
 * Another process can still take it before the caller binds: callers check that their server really started.
 */
export async function freePort(hosts: readonly string[] = ['127.0.0.1'], avoid: readonly number[] = []): Promise<number> {
  const [first = '127.0.0.1', ...rest] = hosts;
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen({ host: first, port: 0, exclusive: true }, () => {
        const address = server.address();
        server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
      });
    });
    if (avoid.includes(port)) continue;
    const others = await Promise.all(rest.map((h) => canListen(h, port)));
    if (others.every(Boolean)) return port;
  }
  throw new Error(`no TCP port free on ${hosts.join(', ')} after 50 attempts`);
}
