/**
 * Proof that the local cloud's cluster works, with the real kubectl built for its version and the admin
 * kubeconfig corekube issues: every minion's Node Ready with its flannel subnet as podCIDR; a test workload (a
 * DaemonSet: one pod a minion, Debian's busybox from the local registry) Running on every minion; traffic
 * between pods on different minions (flannel VXLAN); a ClusterIP Service answering through kube-proxy; the
 * `kubernetes` Service and the test Service's name resolved by CoreDNS from inside a pod; and a pod refused by
 * the metadata service (169.254.169.254) that the node itself reaches. What `corekube demo` and
 * test/e2e/local-cloud.test.ts run.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CorekubeError } from '../core/errors.ts';
import { toYaml } from '../core/yaml.ts';
import { CLUSTER_DOMAIN } from '../units/layout.ts';
import { METADATA_IP } from './metadata.ts';

const run = promisify(execFile);

export const WORKLOAD = Object.freeze({ namespace: 'default', name: 'corekube-e2e', port: 8080 });

export interface NodeRow {
  readonly name: string;
  readonly ready: boolean;
  readonly podCIDR: string;
}

export interface CheckResult {
  readonly ok: boolean;
  /** what was tried and what came back, one line */
  readonly detail: string;
}

export interface ClusterChecks {
  readonly podNetwork: CheckResult;
  readonly service: CheckResult;
  readonly dns: CheckResult;
  /** a pod is refused by the metadata service */
  readonly metadataBlocked: CheckResult;
}

export class Kubectl {
  constructor(
    readonly bin: string,
    readonly kubeconfig: string,
  ) {}

  async run(args: readonly string[], options: { stdin?: string; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = execFile(this.bin, ['--kubeconfig', this.kubeconfig, ...args], { timeout: options.timeoutMs ?? 60_000, maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
        resolve({ code, stdout, stderr });
      });
      if (options.stdin !== undefined) child.stdin?.end(options.stdin);
    });
  }

  async json<T>(args: readonly string[]): Promise<T> {
    const r = await this.run([...args, '-o', 'json']);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as T;
  }
}

/** The Nodes as `kubectl get nodes -o json` shows them. */
export async function nodeRows(kubectl: Kubectl): Promise<NodeRow[]> {
  const list = await kubectl.json<{ items: { metadata: { name: string }; spec: { podCIDR?: string }; status: { conditions?: { type: string; status: string }[] } }[] }>(['get', 'nodes']);
  return list.items.map((n) => ({
    name: n.metadata.name,
    ready: n.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    podCIDR: n.spec.podCIDR ?? '',
  }));
}

/** The test workload: a DaemonSet of busybox httpd answering with its pod's name, and a ClusterIP Service. */
/** PURE: the test workloads' one container: busybox's httpd answering its pod's hostname, as an unprivileged user. */
export function httpdContainer(image: string, port: number, probeSeconds: number): object {
  return {
    name: 'httpd',
    image,
    command: ['/bin/sh', '-c', `hostname > /tmp/index.html && exec httpd -f -p ${port} -h /tmp`],
    ports: [{ containerPort: port, name: 'http' }],
    readinessProbe: { tcpSocket: { port }, periodSeconds: probeSeconds },
    securityContext: { allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] } },
  };
}

export function workloadManifest(image: string): string {
  const labels = { app: WORKLOAD.name };
  const objects = [
    {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { name: WORKLOAD.name, namespace: WORKLOAD.namespace, labels },
      spec: {
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            terminationGracePeriodSeconds: 1,
            containers: [httpdContainer(image, WORKLOAD.port, 2)],
          },
        },
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: WORKLOAD.name, namespace: WORKLOAD.namespace, labels },
      spec: { selector: labels, ports: [{ name: 'http', port: 80, targetPort: WORKLOAD.port }] },
    },
  ];
  return objects.map((o) => toYaml(o)).join('---\n');
}

export interface WorkloadPod {
  readonly name: string;
  readonly node: string;
  readonly ip: string;
  readonly ready: boolean;
}

export async function workloadPods(kubectl: Kubectl): Promise<WorkloadPod[]> {
  const list = await kubectl.json<{ items: { metadata: { name: string }; spec: { nodeName?: string }; status: { podIP?: string; conditions?: { type: string; status: string }[] } }[] }>(['-n', WORKLOAD.namespace, 'get', 'pods', '-l', `app=${WORKLOAD.name}`]);
  return list.items.map((p) => ({
    name: p.metadata.name,
    node: p.spec.nodeName ?? '',
    ip: p.status.podIP ?? '',
    ready: p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
  }));
}

/** Applies the workload and waits until a pod runs Ready on each of `nodes`; returns the pods. */
export async function deployWorkload(kubectl: Kubectl, image: string, nodes: readonly string[], timeoutMs = 180_000): Promise<WorkloadPod[]> {
  const applied = await kubectl.run(['apply', '-f', '-'], { stdin: workloadManifest(image) });
  if (applied.code !== 0) throw new CorekubeError('E_KUBERNETES', `kubectl apply of the test workload failed: ${applied.stderr.trim()}`, { hint: 'the API server\'s answer above says why' });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pods = await workloadPods(kubectl);
    const missing = nodes.filter((n) => !pods.some((p) => p.node === n && p.ready));
    if (missing.length === 0) return pods.filter((p) => p.ready);
    if (Date.now() > deadline) {
      const events = await kubectl.run(['-n', WORKLOAD.namespace, 'get', 'events', '--field-selector', 'involvedObject.kind=Pod', '-o', 'custom-columns=POD:.involvedObject.name,REASON:.reason,MESSAGE:.message']);
      const logs = await kubectl.run(['-n', WORKLOAD.namespace, 'logs', '-l', `app=${WORKLOAD.name}`, '--tail', '5', '--previous']);
      throw new CorekubeError('E_KUBERNETES', `the test workload is not Running on ${missing.join(', ')} after ${Math.round(timeoutMs / 1000)} s:\n${events.stdout.split('\n').slice(-12).join('\n')}\n${logs.stdout || logs.stderr}`, {
        hint: `kubectl -n ${WORKLOAD.namespace} describe pods -l app=${WORKLOAD.name}`,
      });
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/**
 * Runs the network checks from inside the workload's pods. Needs pods on two nodes for the pod network.
 * `fromNode` fetches a URL from a minion itself (its host network): the metadata service must answer it there
 * while it refuses the pods.
 */
export async function runClusterChecks(kubectl: Kubectl, pods: readonly WorkloadPod[], fromNode: (url: string) => Promise<{ ok: boolean; out: string }>): Promise<ClusterChecks> {
  const [a, b] = pods.length >= 2 ? [pods[0]!, pods.find((p) => p.node !== pods[0]!.node) ?? pods[1]!] : [pods[0]!, pods[0]!];
  const exec = async (pod: WorkloadPod, command: string) => {
    const r = await kubectl.run(['-n', WORKLOAD.namespace, 'exec', pod.name, '--', '/bin/sh', '-c', command], { timeoutMs: 30_000 });
    return { ok: r.code === 0, out: `${r.stdout}${r.stderr}`.trim().replace(/\s+/g, ' ') };
  };
  const retrying = async (fn: () => Promise<CheckResult>, attempts = 10): Promise<CheckResult> => {
    let last: CheckResult = { ok: false, detail: 'not run' };
    for (let i = 0; i < attempts; i++) {
      last = await fn();
      if (last.ok) return last;
      await new Promise((r) => setTimeout(r, 2000));
    }
    return last;
  };

  const podNetwork = await retrying(async () => {
    if (a.node === b.node) return { ok: false, detail: `needs pods on two minions, all run on ${a.node}` };
    const r = await exec(a, `timeout 5 wget -q -O - http://${b.ip}:${WORKLOAD.port}/`);
    return { ok: r.ok && r.out === b.name, detail: `${a.name} (${a.node}) → ${b.ip} (${b.node}): ${r.ok ? `answered "${r.out}"` : `failed: ${r.out}`}` };
  });
  const svc = await kubectl.json<{ spec: { clusterIP: string } }>(['-n', WORKLOAD.namespace, 'get', 'service', WORKLOAD.name]);
  const service = await retrying(async () => {
    const r = await exec(a, `timeout 5 wget -q -O - http://${svc.spec.clusterIP}/`);
    return { ok: r.ok && pods.some((p) => p.name === r.out), detail: `${a.name} → Service ${WORKLOAD.name} ${svc.spec.clusterIP}:80: ${r.ok ? `answered by "${r.out}"` : `failed: ${r.out}`}` };
  });
  const dns = await retrying(async () => {
    const names = [`kubernetes.default.svc.${CLUSTER_DOMAIN}`, `${WORKLOAD.name}.${WORKLOAD.namespace}.svc.${CLUSTER_DOMAIN}`];
    const answers = await Promise.all(names.map((n) => exec(a, `nslookup ${n}`)));
    const byName = await exec(a, `timeout 5 wget -q -O - http://${WORKLOAD.name}/`);
    const resolved = answers.map((r, i) => `${names[i]} ${r.ok && /Address:?\s+\d+\.\d+\.\d+\.\d+/.test(r.out.replace(/^.*?Name:/, '')) ? 'resolved' : `not resolved (${r.out.slice(0, 120)})`}`);
    const ok = answers.every((r) => r.ok) && byName.ok && pods.some((p) => p.name === byName.out) && answers[1]!.out.includes(svc.spec.clusterIP);
    return { ok, detail: `from ${a.name}: ${resolved.join(', ')}; http://${WORKLOAD.name}/ ${byName.ok ? `answered by "${byName.out}"` : `failed: ${byName.out}`}` };
  });
  const metadata = await exec(a, `timeout 5 wget -q -O - http://${METADATA_IP}/`);
  const node = await fromNode(`http://${METADATA_IP}/`);
  const metadataBlocked = {
    ok: !metadata.ok && node.ok,
    detail: `${a.name} → http://${METADATA_IP}/: ${metadata.ok ? `answered "${metadata.out}" (NOT blocked)` : `refused (${metadata.out || 'no answer'})`}; from ${a.node} itself: ${node.ok ? 'answered' : `failed (${node.out})`}`,
  };
  return { podNetwork, service, dns, metadataBlocked };
}

/** `kubectl get nodes -o wide`, as text. */
export async function nodesWide(kubectl: Kubectl): Promise<string> {
  const r = await kubectl.run(['get', 'nodes', '-o', 'wide']);
  return r.code === 0 ? r.stdout : `kubectl get nodes failed: ${r.stderr}`;
}

/** The kubectl binary exists and runs (the one built for the cluster). */
export async function kubectlVersion(bin: string): Promise<string> {
  const { stdout } = await run(bin, ['version', '--client']);
  return stdout.trim().split('\n')[0] ?? '';
}
