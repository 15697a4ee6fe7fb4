import { getAttr, getParam, getResource, strSplit, type HeatValue, type Parameter, type Resource } from './hot.ts';

/**
 * The three wait conditions that make CREATE_COMPLETE mean a working cluster:
 * - overlord_ready: the overlord signals ONCE with data "<base64 of its SSH public key line>:<base64 of the
 *   discovery CA PEM>" after it made both; discovery, masters and minions read them from here;
 * - discovery_ready: discovery signals when its etcd serves TLS with the certificate the overlord installed;
 * - cluster_ready: the overlord signals when every node of the initial stack is deployed.
 * Each handle's `endpoint` + `token` go into the signalling machine's user_data; nothing else does.
 */
export const OVERLORD_READY = 'overlord_ready';
export const DISCOVERY_READY = 'discovery_ready';
export const CLUSTER_READY = 'cluster_ready';
export const handleOf = (condition: string) => `${condition}_handle`;

/** Boot, `docker pull` of the overlord image and key generation; discovery: boot + etcd download. */
const OVERLORD_READY_TIMEOUT_S = 1800;
const DISCOVERY_READY_TIMEOUT_S = 1800;
export const CLUSTER_READY_TIMEOUT_DEFAULT_S = 3600;

export const clusterReadyTimeoutParameter: Parameter = {
  type: 'number',
  label: 'Cluster deploy timeout (s)',
  description:
    'How long the stack waits, once every server exists, for the overlord to report every initial master and minion deployed (cluster_ready). Raise it for hundreds of minions or a slow mirror.',
  default: CLUSTER_READY_TIMEOUT_DEFAULT_S,
  constraints: [{ range: { min: 300, max: 86400 }, description: 'between 300 s and 24 h' }],
};

export function waitConditionResources(opts: { clusterReadyAfter: string[] }): Record<string, Resource> {
  const pair = (name: string, timeout: HeatValue, dependsOn?: string[]): Record<string, Resource> => ({
    [handleOf(name)]: { type: 'OS::Heat::WaitConditionHandle' },
    [name]: {
      type: 'OS::Heat::WaitCondition',
      properties: { handle: getResource(handleOf(name)), count: 1, timeout },
      // The timeout starts when the condition is created: create it when the servers it waits for exist.
      ...(dependsOn ? { depends_on: dependsOn } : {}),
    },
  });
  return {
    ...pair(OVERLORD_READY, OVERLORD_READY_TIMEOUT_S),
    ...pair(DISCOVERY_READY, DISCOVERY_READY_TIMEOUT_S),
    ...pair(CLUSTER_READY, getParam('cluster_ready_timeout'), opts.clusterReadyAfter),
  };
}

/** The signal's URL and token, for the machine that signals `condition`. */
export const signalUrl = (condition: string): HeatValue => getAttr(handleOf(condition), 'endpoint');
export const signalToken = (condition: string): HeatValue => getAttr(handleOf(condition), 'token');

/**
 * One half of overlord_ready's data. The `data` attribute is the JSON text {"<id>": "<a>:<b>"}; splitting it
 * on '"' gives the blob at index 3 (base64 holds neither '"' nor ':'), then ':' separates the two halves.
 * Both halves stay base64: HOT cannot decode, so the machine decodes them (cloud-config's contract).
 */
export const overlordReadyPart = (half: 'sshKey' | 'discoveryCa'): HeatValue =>
  strSplit(':', strSplit('"', getAttr(OVERLORD_READY, 'data'), 3), half === 'sshKey' ? 0 : 1);
