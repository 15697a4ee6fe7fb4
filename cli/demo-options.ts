import { CorekubeError } from '../core/errors.ts';
import type { OverlordMode } from '../localcloud/overlord-runner.ts';
import { API_LOAD_BALANCERS, type ApiLoadBalancer } from '../clusterspec/fields.ts';
import { parseOptions } from './command.ts';

/** `corekube demo`'s flags (cli/demo.ts), parsed and checked. */
export const DEMO_USAGE = `Usage: corekube demo [--masters N [--api-load-balancer octavia|node-local|none] [--fail-master] [--replace-master]] [--minions M] [--overlords O [--failover]] [--scale] [--scale-down] [--upgrade] [--json] [--keep]
                     [--overlord docker|process] [--net K]
       corekube demo --down [--net K]

Brings up a local cloud on this machine and a real Kubernetes cluster on it, end to end: a real OpenStack Heat
(Keystone + heat-all) creates the Heat template corekube generates; every server is a systemd-nspawn machine
booted by a real cloud-init from the user_data Heat resolved; the overlord deploys the real Kubernetes, etcd,
flannel, containerd, runc and CNI plugins (built from their Go modules at the pinned versions, served by a
local mirror and registry) and signals cluster_ready once every Node is Ready and CoreDNS is available — so
CREATE_COMPLETE means a working cluster. Shows the overlord's log as it works, the status, \`kubectl get nodes\`,
and checks the cluster with the real kubectl: a workload on every minion, pod traffic across minions (VXLAN),
a Service through kube-proxy, names resolved by CoreDNS, the metadata service refused to pods. Then tears
everything down (also on Ctrl-C), unless --keep. Needs root and scripts/setup. localcloud/README.md lists
where the local cloud departs from a real one; the demo prints that list too.

Options:
  --masters N          masters (1, 3 or 5; default 1); with 3 or 5 the API is behind the stack's Octavia load
                       balancer (haproxy on this host plays it) and every kubeconfig names its VIP
  --api-load-balancer LB
                       how the minions reach the API (the spec's apiLoadBalancer): octavia (the default with 3 or 5
                       masters), node-local (a proxy on every minion at 127.0.0.1:6443 in front of every master,
                       etcd's gateway) or none (the first master; the default with 1)
  --fail-master        (with --masters 3 or 5) once deployed, power off the master the load balancer used last
                       and keep asking the API through the VIP for a minute: it must answer every time and every
                       Node stay Ready; with --api-load-balancer node-local, power off the last master and have
                       every minion ask the API through its own proxy instead; --json adds "apiEndpoint":
                       {address, survivedMasterLoss}
  --replace-master     (with --masters 3 or 5) once deployed, power off the master at the highest index, remove it
                       as \`corekube node remove\` asks (its etcd member first), then rebuild its server in place
                       (a new machine id, the same address): the overlord adds it to etcd as a learner, starts
                       and promotes it, while the API is asked through the load balancer every second; --json adds
                       "lifecycle": {"replaceMaster": {removed, replacement, removeMs, replaceMs, etcdMembers,
                       requests, failedRequests, apiUnavailableMs, replaced}}
  --minions M          minions (1-20; default 2)
  --overlords O        overlord servers (1-3; default 1): the bootstrap overlord and O - 1 standbys, booted by
                       Heat from the stack's overlord_count, each fetching the bootstrap overlord's sealed state
  --failover           (with --overlords 2 or more) once deployed, kill the bootstrap overlord's container and
                       show a standby taking over within the lease TTL; with --scale, the standby deploys it
  --scale              once deployed, raise minion_count by one with a Heat stack update (PATCH): one more
                       machine boots, becomes a Ready Node and runs the workload; the others are left alone
  --scale-down         once deployed (and scaled), lower minion_count by one with a Heat stack update: Heat deletes
                       the minion with the highest index and the overlord removes it from the cluster (drain, Node,
                       pod subnet, discovery user, its keys); --json adds "lifecycle": {"scaleDown": {removed,
                       nodeGone, subnetReleased, discoveryUserGone}}
  --upgrade            create the cluster at the previous Kubernetes patch release (UPGRADE_FROM, built the same
                       way), then raise kubernetes_version to the pinned one with a Heat stack update: the overlord
                       rolls it out (masters one at a time, each minion drained and uncordoned) while a workload
                       behind a PodDisruptionBudget keeps answering; the overlord's container is killed mid-rollout
                       and started again; --json adds "lifecycle": {"upgrade": {machines, restartedUnits,
                       workloadAvailableThroughout, resumedAfterKill}}
  --json               print progress on stderr and, as the last line on stdout, the final status object (the
                       shape of \`corekube status --json\`) with "kubernetes": {nodes, checks}
  --keep               leave the cloud running (machines, Heat, Keystone, the cluster) and print the admin
                       kubeconfig (KUBECONFIG=), an openrc for the openstack CLI (OPENRC=), the kubectl built for
                       the cluster (kubectl:) and the command that tears it all down (down:)
  --down               tear down what \`corekube demo --keep\` left running on net K
  --overlord MODE      where the overlord container runs: docker (a private Docker engine on this host, the
                       image built from overlord/Dockerfile; the default when docker.io is installed) or
                       process (\`corekube overlord\` as a child process)
  --net K              the cloud's network 10.200.K.0/24, bridge ckbrK (default 60)

Exit status: 0 when every machine is deployed, every minion's Node is Ready and every check passed (and, with
--scale, the new minion too; with --fail-master, the API answered through the loss; with --replace-master, the
replacement deployed, every etcd member started, healthy and voting, no surviving member restarted and every
request through the load balancer answered; with --scale-down, the
removed minion's Node, subnet and discovery user gone; with --upgrade, every machine at the new release, the
workload answering throughout and the rollout finished after the kill with no restart asked twice); 1 otherwise; 2 on bad options; 130 when interrupted.`;

const usage = DEMO_USAGE;

export interface DemoOptions {
  readonly masters: number;
  readonly minions: number;
  readonly overlords: number;
  readonly failover: boolean;
  readonly failMaster: boolean;
  /** the spec's apiLoadBalancer, or undefined for the spec's default */
  readonly apiLoadBalancer: ApiLoadBalancer | undefined;
  readonly replaceMaster: boolean;
  readonly scale: boolean;
  readonly scaleDown: boolean;
  readonly upgrade: boolean;
  readonly json: boolean;
  readonly keep: boolean;
  readonly down: boolean;
  readonly overlord: OverlordMode | undefined;
  readonly net: number;
  /** internal: this process is the kept cloud's keeper (started by --keep), its output in this log file */
  readonly keeperLog: string | undefined;
}

const MAX_DEMO_MINIONS = 20;

/** where `--upgrade` starts: the patch release before the pinned one (built from its Go module like the rest) */
export const UPGRADE_FROM = 'v1.36.3';

/** PURE: the demo's flags, each checked, every problem reported at once. */
export function parseDemoArgs(argv: readonly string[]): DemoOptions {
  const { values } = parseOptions(
    argv,
    {
      masters: { type: 'string' },
      minions: { type: 'string' },
      overlords: { type: 'string' },
      failover: { type: 'boolean' },
      'fail-master': { type: 'boolean' },
      'replace-master': { type: 'boolean' },
      scale: { type: 'boolean' },
      'scale-down': { type: 'boolean' },
      upgrade: { type: 'boolean' },
      json: { type: 'boolean' },
      overlord: { type: 'string' },
      net: { type: 'string' },
      'api-load-balancer': { type: 'string' },
      keep: { type: 'boolean' },
      down: { type: 'boolean' },
      'keeper-log': { type: 'string' },
    },
    usage,
  );
  const problems: string[] = [];
  const whole = (flag: string, raw: string | undefined, fallback: number, ok: (n: number) => boolean, allowed: string): number => {
    if (raw === undefined) return fallback;
    const n = /^\d+$/.test(raw) ? Number(raw) : NaN;
    if (!ok(n)) problems.push(`--${flag} must be ${allowed} (got ${JSON.stringify(raw)})`);
    return n;
  };
  const masters = whole('masters', values.masters, 1, (n) => [1, 3, 5].includes(n), '1, 3 or 5');
  const minions = whole('minions', values.minions, 2, (n) => n >= 1 && n <= MAX_DEMO_MINIONS, `a whole number from 1 to ${MAX_DEMO_MINIONS} (the checks run a workload on the minions)`);
  const overlords = whole('overlords', values.overlords, 1, (n) => n >= 1 && n <= 3, 'a whole number from 1 to 3');
  const failover = values.failover ?? false;
  if (failover && overlords < 2) problems.push(`--failover needs a standby to take over: give --overlords 2 or 3 (got ${overlords})`);
  const failMaster = values['fail-master'] ?? false;
  if (failMaster && masters < 3) problems.push(`--fail-master needs masters that survive one's loss behind a load balancer: give --masters 3 or 5 (got ${masters})`);
  const lb = values['api-load-balancer'];
  if (lb !== undefined && !(API_LOAD_BALANCERS as readonly string[]).includes(lb)) problems.push(`--api-load-balancer must be one of ${API_LOAD_BALANCERS.join(', ')} (got ${JSON.stringify(lb)})`);
  if (failMaster && lb === 'none') problems.push('--fail-master needs a load balancer or the node-local proxy in front of the masters: leave out --api-load-balancer none');
  const replaceMaster = values['replace-master'] ?? false;
  if (replaceMaster && masters < 3) problems.push(`--replace-master needs masters that keep etcd's quorum while one is replaced: give --masters 3 or 5 (got ${masters})`);
  if (replaceMaster && failMaster) problems.push('--replace-master and --fail-master each power off a master: give one of them');
  const scaleDown = values['scale-down'] ?? false;
  if (scaleDown && minions + (values.scale ? 1 : 0) < 2) problems.push(`--scale-down needs a minion left afterwards: give --minions 2 or more (got ${minions})`);
  const net = whole('net', values.net, 60, (n) => n >= 1 && n <= 254, 'a whole number from 1 to 254');
  const overlord = values.overlord;
  if (overlord !== undefined && overlord !== 'docker' && overlord !== 'process') problems.push(`--overlord must be docker or process (got ${JSON.stringify(overlord)})`);
  const keep = values.keep ?? false;
  const down = values.down ?? false;
  if (down) {
    const others = Object.keys(values).filter((k) => !['down', 'net', 'json'].includes(k));
    if (others.length > 0) problems.push(`--down takes only --net (got ${others.map((o) => `--${o}`).join(', ')})`);
  }
  if (problems.length > 0) throw new CorekubeError('E_USAGE', problems.join('; '), { hint: 'for example: corekube demo --masters 1 --minions 2' });
  return Object.freeze({ masters, minions, overlords, failover, failMaster, replaceMaster, apiLoadBalancer: lb as ApiLoadBalancer | undefined, scale: values.scale ?? false, scaleDown, upgrade: values.upgrade ?? false, json: values.json ?? false, keep, down, overlord: overlord as OverlordMode | undefined, net, keeperLog: values['keeper-log'] });
}

