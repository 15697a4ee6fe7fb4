/**
 * The overlord's one seam to the Kubernetes API (@kubernetes/client-node): the few calls corekube makes —
 * readiness, server-side apply of add-ons, reading and patching Nodes, reading a Deployment's availability,
 * listing Nodes — behind a narrow interface, so the core is tested without a cluster and this edge is tested
 * against the real API server. Authenticated as the cluster's admin (client certificate from the overlord's
 * PKI; never logged). The API servers are the deployed masters': each call goes to the last one that
 * answered, and moves to the next one when it does not.
 *
 * Library errors are converted here, once: CorekubeError `E_KUBERNETES`, retryable when the server may
 * answer later (unreachable, 5xx, 429, a conflict), terminal otherwise (the request itself is wrong).
 */
import https from 'node:https';
import * as k8s from '@kubernetes/client-node';
import { CorekubeError } from '../../core/errors.ts';

export interface AdminCredentials {
  /** PEM of the cluster CA (verifies the API server) */
  readonly ca: string;
  /** PEM of the admin client certificate and its key */
  readonly cert: string;
  readonly key: string;
}

/** What corekube needs to know of a Node. */
export interface NodeView {
  readonly name: string;
  readonly ready: boolean;
  /** the Ready condition's reason and message, when not ready */
  readonly readyReason: string;
  readonly podCIDR: string | undefined;
  readonly labels: Readonly<Record<string, string>>;
  readonly kubeletVersion: string;
  readonly internalIp: string | undefined;
  readonly unschedulable: boolean;
}

export interface DeploymentView {
  readonly desired: number;
  readonly available: number;
  readonly updated: number;
}

/** What a drain needs to know of a pod. */
export interface PodView {
  readonly namespace: string;
  readonly name: string;
  /** kinds of its controllers (ownerReferences with controller: true), e.g. ['DaemonSet'] */
  readonly controllers: readonly string[];
  /** a static pod's mirror (annotation kubernetes.io/config.mirror): the kubelet owns it, the API cannot evict it */
  readonly mirror: boolean;
  /** Succeeded or Failed: nothing runs */
  readonly finished: boolean;
  /** deletion requested (deletionTimestamp set) */
  readonly terminating: boolean;
}

/** The answer to an eviction: done, refused for now (a PodDisruptionBudget: 429), or the pod is gone (404). */
export type EvictionResult = 'evicted' | 'blocked' | 'gone';

export interface KubernetesApi {
  /** true once an API server answers /readyz with ok */
  ready(signal?: AbortSignal): Promise<boolean>;
  /** server-side apply of each object (field manager `corekube`, conflicts forced: corekube owns these) */
  apply(objects: readonly k8s.KubernetesObject[], options?: { dryRun?: boolean }): Promise<void>;
  node(name: string): Promise<NodeView | undefined>;
  listNodes(): Promise<NodeView[]>;
  /** a JSON merge patch of a Node */
  patchNode(name: string, patch: object): Promise<NodeView>;
  deployment(namespace: string, name: string): Promise<DeploymentView | undefined>;
  /** every pod bound to the Node */
  podsOnNode(node: string): Promise<PodView[]>;
  /** the Eviction API (policy/v1): what `kubectl drain` asks, PodDisruptionBudgets respected by the API server */
  evict(namespace: string, name: string): Promise<EvictionResult>;
  /** deletes the Node; false when there was none */
  deleteNode(name: string): Promise<boolean>;
  /** the server the last successful call went to */
  readonly server: string | undefined;
}

export const FIELD_MANAGER = 'corekube';

/**
 * The API of the cluster at `servers()` (https URLs, re-read at each call: masters come and go), as admin.
 * `credentials` may be a function, read at each call: a CA rotation changes them (overlord/trust/pki/rotation.ts).
 * `timeoutMs` bounds each request.
 */
export function createKubernetesApi(servers: () => readonly string[], credentials: AdminCredentials | (() => AdminCredentials), options: { timeoutMs?: number } = {}): KubernetesApi {
  const timeoutMs = options.timeoutMs ?? 15_000;
  const api = new ApiServers(servers, credentials, timeoutMs);
  const call = <T>(what: string, fn: (kc: k8s.KubeConfig, server: string) => Promise<T>) => api.call(what, fn);
  return {
    get server() {
      return api.last;
    },
    ready: (signal) =>
      call('GET /readyz', (kc, server) => readyz(kc, server, timeoutMs, signal)).catch((err: unknown) => {
        if (err instanceof CorekubeError && err.retryable) return false;
        throw err;
      }),
    apply: async (objects, opts = {}) => {
      for (const o of objects) {
        await call(`apply ${o.kind} ${o.metadata?.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata?.name}`, (kc) =>
          k8s.KubernetesObjectApi.makeApiClient(kc).patch(o, undefined, opts.dryRun ? 'All' : undefined, FIELD_MANAGER, true, k8s.PatchStrategy.ServerSideApply),
        );
      }
    },
    node: async (name) => {
      try {
        return nodeView(await call(`GET node ${name}`, (kc) => kc.makeApiClient(k8s.CoreV1Api).readNode({ name })));
      } catch (err) {
        if (err instanceof CorekubeError && /\(404\)/.test(err.message)) return undefined;
        throw err;
      }
    },
    // resourceVersion 0: served from the API server's watch cache, not etcd
    listNodes: async () => (await call('list nodes', (kc) => kc.makeApiClient(k8s.CoreV1Api).listNode({ resourceVersion: '0' }))).items.map(nodeView),
    patchNode: async (name, patch) =>
      nodeView(
        await call(`patch node ${name}`, (kc) =>
          kc.makeApiClient(k8s.CoreV1Api).patchNode({ name, body: patch, fieldManager: FIELD_MANAGER }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch)),
        ),
      ),
    podsOnNode: async (node) =>
      (await call(`list pods on ${node}`, (kc) => kc.makeApiClient(k8s.CoreV1Api).listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${node}` }))).items.map(podView),
    evict: async (namespace, name) => {
      try {
        await call(`evict pod ${namespace}/${name}`, (kc) =>
          kc.makeApiClient(k8s.CoreV1Api).createNamespacedPodEviction({ namespace, name, body: { apiVersion: 'policy/v1', kind: 'Eviction', metadata: { namespace, name } } }),
        );
        return 'evicted';
      } catch (err) {
        if (err instanceof CorekubeError && /\(404\)/.test(err.message)) return 'gone';
        if (err instanceof CorekubeError && /\(429\)/.test(err.message)) return 'blocked';
        throw err;
      }
    },
    deleteNode: async (name) => {
      try {
        await call(`delete node ${name}`, (kc) => kc.makeApiClient(k8s.CoreV1Api).deleteNode({ name }));
        return true;
      } catch (err) {
        if (err instanceof CorekubeError && /\(404\)/.test(err.message)) return false;
        throw err;
      }
    },
    deployment: async (namespace, name) => {
      try {
        const d = await call(`GET deployment ${namespace}/${name}`, (kc) => kc.makeApiClient(k8s.AppsV1Api).readNamespacedDeployment({ namespace, name }));
        return { desired: d.spec?.replicas ?? 0, available: d.status?.availableReplicas ?? 0, updated: d.status?.updatedReplicas ?? 0 };
      } catch (err) {
        if (err instanceof CorekubeError && /\(404\)/.test(err.message)) return undefined;
        throw err;
      }
    },
  };
}

/** The API servers of the cluster, as admin: one kubeconfig each, the last one that answered tried first. */
class ApiServers {
  private readonly configs = new Map<string, k8s.KubeConfig>();
  last: string | undefined;

  constructor(
    private readonly servers: () => readonly string[],
    private readonly credentials: AdminCredentials | (() => AdminCredentials),
    private readonly timeoutMs: number,
  ) {}

  /** the credentials the cached configs were made with */
  private made: AdminCredentials | undefined;

  /** Runs `fn` against the last good server first, then the others; the first non-connection error ends it. */
  async call<T>(what: string, fn: (kc: k8s.KubeConfig, server: string) => Promise<T>): Promise<T> {
    const all = [...this.servers()];
    if (all.length === 0) throw new CorekubeError('E_KUBERNETES', `${what}: no API server is known yet`, { hint: 'a master must be deployed first', retryable: true });
    const last = this.last;
    const order = last && all.includes(last) ? [last, ...all.filter((s) => s !== last)] : all;
    let lastErr: CorekubeError | undefined;
    for (const server of order) {
      try {
        const out = await withTimeout(fn(this.configFor(server), server), this.timeoutMs, `${what} at ${server}`);
        this.last = server;
        return out;
      } catch (err) {
        const e = toKubernetesError(err, what, server);
        if (!isConnectionError(err)) throw e;
        lastErr = e;
      }
    }
    throw lastErr!;
  }

  private configFor(server: string): k8s.KubeConfig {
    const credentials = typeof this.credentials === 'function' ? this.credentials() : this.credentials;
    const made = this.made;
    if (made !== undefined && (made.ca !== credentials.ca || made.cert !== credentials.cert || made.key !== credentials.key)) this.configs.clear();
    this.made = credentials;
    let kc = this.configs.get(server);
    if (!kc) {
      const b64 = (s: string) => Buffer.from(s).toString('base64');
      kc = new k8s.KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'corekube', server, caData: b64(credentials.ca), skipTLSVerify: false }],
        users: [{ name: 'admin', certData: b64(credentials.cert), keyData: b64(credentials.key) }],
        contexts: [{ name: 'corekube', cluster: 'corekube', user: 'admin' }],
        currentContext: 'corekube',
      });
      this.configs.set(server, kc);
    }
    return kc;
  }
}

/** PURE: the view of a Node object. */
export function nodeView(n: k8s.V1Node): NodeView {
  const ready = n.status?.conditions?.find((c) => c.type === 'Ready');
  return Object.freeze({
    name: n.metadata?.name ?? '',
    ready: ready?.status === 'True',
    readyReason: ready ? `${ready.reason ?? ''}${ready.message ? `: ${ready.message}` : ''}` : 'no Ready condition yet',
    podCIDR: n.spec?.podCIDR,
    labels: Object.freeze({ ...(n.metadata?.labels ?? {}) }),
    kubeletVersion: n.status?.nodeInfo?.kubeletVersion ?? '',
    internalIp: n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
    unschedulable: n.spec?.unschedulable === true,
  });
}

/** PURE: the view of a Pod object. */
export function podView(p: k8s.V1Pod): PodView {
  return Object.freeze({
    namespace: p.metadata?.namespace ?? '',
    name: p.metadata?.name ?? '',
    controllers: Object.freeze((p.metadata?.ownerReferences ?? []).filter((o) => o.controller).map((o) => o.kind)),
    mirror: p.metadata?.annotations?.['kubernetes.io/config.mirror'] !== undefined,
    finished: p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed',
    terminating: p.metadata?.deletionTimestamp !== undefined && p.metadata?.deletionTimestamp !== null,
  });
}

async function readyz(kc: k8s.KubeConfig, server: string, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
  const url = new URL('/readyz', server);
  const opts: https.RequestOptions = { method: 'GET', timeout: timeoutMs, ...(signal ? { signal } : {}) };
  await kc.applyToHTTPSOptions(opts);
  return new Promise((resolve, reject) => {
    const req = https.request(url, opts, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve(res.statusCode === 200 && body.trim() === 'ok'));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end();
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`${what} timed out after ${ms} ms`), { code: 'ETIMEDOUT' })), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'EPIPE', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET']);

function isConnectionError(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: string }).code;
    if (code && CONNECTION_CODES.has(code)) return true;
    if (/ECONNREFUSED|EHOSTUNREACH|ETIMEDOUT|socket hang up|timed out/.test(e.message)) return true;
  }
  return false;
}

/** Converts what client-node throws into one CorekubeError naming the call, the server and the status. */
export function toKubernetesError(err: unknown, what: string, server: string): CorekubeError {
  if (err instanceof CorekubeError) return err;
  const e = err as { code?: number | string; body?: unknown; message?: string };
  const status = typeof e.code === 'number' ? e.code : undefined;
  let detail = e.message ?? String(err);
  if (typeof e.body === 'string') {
    try {
      detail = (JSON.parse(e.body) as { message?: string }).message ?? detail;
    } catch {
      /* keep the message */
    }
  }
  detail = detail.split('\n')[0]!.slice(0, 300);
  const retryable = status === undefined || status >= 500 || status === 429 || status === 409;
  return new CorekubeError('E_KUBERNETES', `${what} at ${server} failed${status ? ` (${status})` : ''}: ${detail}`, {
    hint: status === undefined ? 'the API server is not reachable yet: it is retried' : status >= 500 || status === 429 ? 'the API server is busy or starting: it is retried' : 'the request was refused: check the API server\'s log',
    retryable,
    cause: err,
  });
}
