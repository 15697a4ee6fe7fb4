import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { fetchTransport } from '../../../cloud/http.ts';

/** A server that closes the connection of its first `drops` requests without answering, then answers 201. */
async function flakyServer(drops: number): Promise<{ url: string; seen: () => number; server: Server }> {
  let seen = 0;
  const server = createServer((req, res) => {
    seen++;
    req.resume();
    if (seen <= drops) {
      req.socket.destroy();
      return;
    }
    res.writeHead(201, { 'Content-Type': 'application/json', 'X-Subject-Token': 'tok' });
    res.end('{"ok":true}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v3/auth/tokens`, seen: () => seen, server };
}

describe('the HTTP transport to OpenStack', () => {
  let server: Server | undefined;
  afterEach(async () => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

  it('sends a request that does no harm twice once more when the connection closes under it (a kept-alive socket the server dropped)', async () => {
    const s = await flakyServer(1);
    server = s.server;
    const res = await fetchTransport('Keystone')({ method: 'POST', url: s.url, body: { auth: {} }, idempotent: true });
    expect(res).toMatchObject({ status: 201, body: { ok: true } });
    expect(s.seen()).toBe(2);
  });

  it('never sends a POST twice unless its caller says it may (a stack create must not happen twice), and tries once more only', async () => {
    const s = await flakyServer(5);
    server = s.server;
    await expect(fetchTransport('Heat')({ method: 'POST', url: s.url, body: {} })).rejects.toMatchObject({ code: 'E_HEAT', retryable: true });
    expect(s.seen()).toBe(1);
    await expect(fetchTransport('Heat')({ method: 'GET', url: s.url })).rejects.toMatchObject({ code: 'E_HEAT' });
    expect(s.seen()).toBe(3);
  });
});
