import type { KeystoneSession } from '../../cloud/keystone.ts';

/**
 * What Heat needs in Keystone (the Heat install guide's identity steps), done over Keystone's REST API with
 * the bootstrap admin's session — ~15 calls, well under a second with cheap password hashing:
 * - project `service`, user `heat` with `admin` on it (keystonemiddleware and trusts);
 * - services `orchestration` and `cloudformation`, with public/internal/admin endpoints;
 * - domain `heat` for the per-stack users and projects, user `heat_domain_admin` with `admin` on it;
 * - roles `heat_stack_owner` (granted to the admin in its project) and `heat_stack_user`.
 */
export interface HeatIdentityInput {
  readonly region: string;
  /** Host in the catalog's Heat URLs: 127.0.0.1, or a bridge address machines can reach. */
  readonly advertisedHost: string;
  readonly heatPort: number;
  readonly cfnPort: number;
  readonly heatPassword: string;
  readonly domainAdminPassword: string;
}

type Created<K extends string> = Record<K, { id: string }>;

export async function registerHeat(admin: KeystoneSession, input: HeatIdentityInput): Promise<void> {
  const post = <K extends string>(path: string, key: K, body: object) =>
    admin.identity<Created<K>>('POST', path, { [key]: body }).then((r) => r[key].id);
  const put = (path: string) => admin.identity('PUT', path);

  const adminRole = await admin.identity<{ roles: { id: string }[] }>('GET', '/roles?name=admin').then((r) => r.roles[0]?.id);
  if (!adminRole) throw new Error('keystone bootstrap did not create the admin role');
  const { userId, projectId } = admin.facts;

  const [serviceProject, heatUser, orchestration, cloudformation, heatDomain, ownerRole] = await Promise.all([
    post('/projects', 'project', { name: 'service', domain_id: 'default', description: 'Service project' }),
    post('/users', 'user', { name: 'heat', domain_id: 'default', password: input.heatPassword }),
    post('/services', 'service', { name: 'heat', type: 'orchestration', description: 'Orchestration' }),
    post('/services', 'service', { name: 'heat-cfn', type: 'cloudformation', description: 'Orchestration CloudFormation' }),
    post('/domains', 'domain', { name: 'heat', description: 'Stack projects and users' }),
    post('/roles', 'role', { name: 'heat_stack_owner' }),
    post('/roles', 'role', { name: 'heat_stack_user' }),
  ]);
  const domainAdmin = await post('/users', 'user', { name: 'heat_domain_admin', domain_id: heatDomain, password: input.domainAdminPassword });

  const heatUrl = `http://${input.advertisedHost}:${input.heatPort}/v1/%(tenant_id)s`;
  const cfnUrl = `http://${input.advertisedHost}:${input.cfnPort}/v1`;
  const interfaces = ['public', 'internal', 'admin'] as const;
  await Promise.all([
    put(`/projects/${serviceProject}/users/${heatUser}/roles/${adminRole}`),
    put(`/domains/${heatDomain}/users/${domainAdmin}/roles/${adminRole}`),
    put(`/projects/${projectId}/users/${userId}/roles/${ownerRole}`),
    ...interfaces.flatMap((iface) => [
      post('/endpoints', 'endpoint', { service_id: orchestration, interface: iface, region_id: input.region, url: heatUrl }),
      post('/endpoints', 'endpoint', { service_id: cloudformation, interface: iface, region_id: input.region, url: cfnUrl }),
    ]),
  ]);
}
