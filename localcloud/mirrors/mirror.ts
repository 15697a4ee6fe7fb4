/**
 * The release mirror machines download from in tests: a static HTTP server over a directory (the tree
 * localcloud/standins/index.ts buildReleaseMirror writes), listening on 127.0.0.1 and, optionally, on a harness
 * bridge's `.1` on the same port, so `spec.releaseBaseUrl = mirror.urlOn(fleet.gateway)` works from the
 * machines. Only GET/HEAD of regular files below the root; every request is recorded for assertions.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { onExit } from '../cleanup.ts';
import { freePort } from '../ports.ts';

export interface MirrorRequest {
  readonly method: string;
  /** URL path, e.g. `/release/v1.36.0/bin/linux/amd64/kubelet` */
  readonly path: string;
  readonly status: number;
  /** the client address (a machine's IP, or 127.0.0.1) */
  readonly from: string;
}

export interface MirrorServer {
  readonly port: number;
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** the base URL on one of the hosts it listens on (no trailing slash) */
  urlOn(host: string): string;
  readonly requests: readonly MirrorRequest[];
  /** answers paths matching `pattern` with this status until cleared (fault injection) */
  failPaths(pattern: RegExp | undefined, status?: number): void;
  close(): Promise<void>;
}

export interface MirrorOptions {
  /** the directory served as `/` */
  readonly root: string;
  /** hosts to listen on besides 127.0.0.1, e.g. [fleet.gateway] */
  readonly listenOn?: readonly string[];
}

export async function startMirror(options: MirrorOptions): Promise<MirrorServer> {
  const root = path.resolve(options.root);
  const hosts = ['127.0.0.1', ...(options.listenOn ?? [])];
  const requests: MirrorRequest[] = [];
  let failing: { pattern: RegExp; status: number } | undefined;

  const handler = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const method = req.method ?? 'GET';
    const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://mirror').pathname);
    const from = req.socket.remoteAddress?.replace(/^::ffff:/, '') ?? '';
    const answer = (status: number, body = '') => {
      requests.push({ method, path: urlPath, status, from });
      res.writeHead(status, { 'content-type': 'text/plain' }).end(method === 'HEAD' ? undefined : body);
    };
    if (method !== 'GET' && method !== 'HEAD') return answer(405, 'only GET and HEAD\n');
    if (failing?.pattern.test(urlPath)) return answer(failing.status, 'failure injected by the test\n');
    const file = path.join(root, urlPath);
    if (file !== root && !file.startsWith(`${root}${path.sep}`)) return answer(403, 'outside the mirror\n');
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) return answer(404, 'not found\n');
    requests.push({ method, path: urlPath, status: 200, from });
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
    if (method === 'HEAD') return res.end();
    createReadStream(file).on('error', () => res.destroy()).pipe(res);
  };

  const port = await freePort(hosts);
  const servers = await Promise.all(
    hosts.map(
      (host) =>
        new Promise<http.Server>((resolve, reject) => {
          const server = http.createServer((req, res) => {
            handler(req, res).catch(() => res.destroy());
          });
          server.once('error', reject);
          server.listen({ host, port, exclusive: true }, () => resolve(server));
        }),
    ),
  );
  const close = () =>
    Promise.all(
      servers.map(
        (s) =>
          new Promise<void>((resolve) => {
            s.closeAllConnections();
            s.close(() => resolve());
          }),
      ),
    ).then(() => undefined);
  // listening sockets die with the process; registered so a failed test's exit is not held up by them
  const unregister = onExit(`release mirror on port ${port}`, () => servers.forEach((s) => s.closeAllConnections()));

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    urlOn: (host: string) => {
      if (!hosts.includes(host)) throw new Error(`the mirror does not listen on ${host} (only ${hosts.join(', ')})`);
      return `http://${host}:${port}`;
    },
    requests,
    failPaths: (pattern, status = 503) => {
      failing = pattern ? { pattern, status } : undefined;
    },
    close: async () => {
      unregister();
      await close();
    },
  };
}
