import http from 'node:http';
import { CorekubeError } from '../../core/errors.ts';
import type { HealthReport } from './health.ts';

/**
 * The overlord's /healthz over node:http: `GET /healthz` answers the report as JSON, 200 or 503 (see
 * health.ts). Bound to 127.0.0.1 unless told otherwise: it says who leads and whether etcd answers, which
 * is for the machine's own health checks (docker HEALTHCHECK, curl), not for the network.
 */
export interface HealthServerOptions {
  /** default 127.0.0.1 */
  readonly host?: string;
  /** 0 = any free port (tests) */
  readonly port: number;
  readonly report: () => HealthReport | Promise<HealthReport>;
}

export interface HealthServer {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const host = options.host ?? '127.0.0.1';
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/healthz' && path !== '/') {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found: try /healthz"}\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'application/json', allow: 'GET, HEAD' }).end('{"error":"method not allowed"}\n');
      return;
    }
    Promise.resolve()
      .then(options.report)
      .then(
        (report) => res.writeHead(report.status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(`${JSON.stringify(report.body)}\n`),
        (err: unknown) => res.writeHead(500, { 'content-type': 'application/json' }).end(`${JSON.stringify({ error: err instanceof Error ? err.message : String(err) })}\n`),
      );
  });
  server.keepAliveTimeout = 1_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new CorekubeError('E_USAGE', `the health endpoint cannot listen on ${host}:${options.port} (${err.code ?? err.message})`, { hint: 'choose another --health-port (or --health-address)' })),
    );
    server.listen({ host, port: options.port }, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  return {
    port,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/healthz`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
