/**
 * Values a machine's user_data needs that exist only once the stack is being created. cloud-config is
 * rendered with these tokens in place; the Heat template wraps each user_data in one `str_replace` whose
 * params map every token to a Heat function (get_attr / get_param). `corekube cloud-config render` fills
 * them from flags instead (booting a node by hand). A token that is not filled renders as '' in files
 * whose consumers treat empty as "not given" (e.g. no Heat signal when booted by hand).
 *
 * All of them are public except JOIN_TOKEN, OVERLORD_SECRET, the wait-condition tokens and the cloud stack user's
 * password, which are the only credentials in user_data: the join token may only register machine records in
 * discovery, a wait-condition token may only signal its one wait condition, the overlord secret (overlord
 * servers only, never a node) opens the overlord state that only overlords may read, and the cloud password
 * (the bootstrap overlord only) may only read one Heat resource's metadata.
 */
export const PLACEHOLDERS = {
  /** random cluster token (OS::Heat::RandomString): the password of discovery's `joiner` etcd user */
  joinToken: '%%COREKUBE_JOIN_TOKEN%%',
  /**
   * overlords only (bootstrap and standbys): random secret (OS::Heat::RandomString) sealing the overlord state
   * standbys fetch from discovery (overlord/trust/shared-state.ts); '' = booted by hand, no standbys
   */
  overlordSecret: '%%COREKUBE_OVERLORD_SECRET%%',
  /** the overlord's SSH public key line, made by the overlord at first boot (from overlord_ready data) */
  overlordSshKey: '%%COREKUBE_OVERLORD_SSH_KEY%%',
  /** base64 of the discovery etcd CA certificate PEM, made by the overlord (from overlord_ready data) */
  discoveryCa: '%%COREKUBE_DISCOVERY_CA%%',
  /** wait-condition handle endpoint + token that this machine signals (discovery_ready / overlord_ready) */
  readyUrl: '%%COREKUBE_READY_URL%%',
  readyToken: '%%COREKUBE_READY_TOKEN%%',
  /** overlord only: the cluster_ready handle, signalled when every node of the initial stack is deployed */
  clusterReadyUrl: '%%COREKUBE_CLUSTER_READY_URL%%',
  clusterReadyToken: '%%COREKUBE_CLUSTER_READY_TOKEN%%',
  /**
   * bootstrap overlord only: the stack user of Heat's overlord_channel resource (heat/overlord-channel.ts), which
   * may read that resource's metadata — the stack's counts and, with the OpenStack cloud provider, the application
   * credential — and nothing else: Keystone's URL, the user's id, password and project, the stack path, the region
   */
  cloudAuthUrl: '%%COREKUBE_CLOUD_AUTH_URL%%',
  cloudUserId: '%%COREKUBE_CLOUD_USER_ID%%',
  cloudPassword: '%%COREKUBE_CLOUD_PASSWORD%%',
  cloudProjectId: '%%COREKUBE_CLOUD_PROJECT_ID%%',
  cloudStackId: '%%COREKUBE_CLOUD_STACK_ID%%',
  cloudRegion: '%%COREKUBE_CLOUD_REGION%%',
  /** overlord only: the initial counts (the overlord server ignores user_data updates: counts may change) */
  masterCount: '%%COREKUBE_MASTER_COUNT%%',
  minionCount: '%%COREKUBE_MINION_COUNT%%',
} as const;

export type PlaceholderName = keyof typeof PLACEHOLDERS;
