import { parseYaml, toYaml } from '../../../core/yaml.ts';
import { BOOT_TIMEOUT_PARAMETER, server } from './compute.ts';
import { healthMonitor, listener, loadBalancer, pool, poolMember } from './load-balancer.ts';
import { floatingIp, net, port, router, routerInterface, securityGroup, subnet } from './network.ts';
import type { ProviderTemplate } from './provider.ts';

/**
 * The local cloud's Heat environment: every Nova, Neutron and Octavia type corekube's templates use, mapped to its
 * stand-in provider template, plus the templates themselves as the `files` of a stack create/update/validate
 * (Heat reads a provider from `files` by the name the registry gives it). Any other OS::Nova/Neutron type
 * stays unmapped and Heat refuses it ("neutron network endpoint is not in service catalog"), so a template
 * that starts using a new type fails loudly until a stand-in exists.
 */
export const PROVIDERS: Readonly<Record<string, { file: string; template: ProviderTemplate }>> = {
  'OS::Nova::Server': { file: 'localcloud/server.yaml', template: server },
  'OS::Neutron::Net': { file: 'localcloud/net.yaml', template: net },
  'OS::Neutron::Subnet': { file: 'localcloud/subnet.yaml', template: subnet },
  'OS::Neutron::Port': { file: 'localcloud/port.yaml', template: port },
  'OS::Neutron::Router': { file: 'localcloud/router.yaml', template: router },
  'OS::Neutron::RouterInterface': { file: 'localcloud/router-interface.yaml', template: routerInterface },
  'OS::Neutron::SecurityGroup': { file: 'localcloud/security-group.yaml', template: securityGroup },
  'OS::Neutron::FloatingIP': { file: 'localcloud/floating-ip.yaml', template: floatingIp },
  'OS::Octavia::LoadBalancer': { file: 'localcloud/loadbalancer.yaml', template: loadBalancer },
  'OS::Octavia::Listener': { file: 'localcloud/listener.yaml', template: listener },
  'OS::Octavia::Pool': { file: 'localcloud/pool.yaml', template: pool },
  'OS::Octavia::HealthMonitor': { file: 'localcloud/health-monitor.yaml', template: healthMonitor },
  'OS::Octavia::PoolMember': { file: 'localcloud/pool-member.yaml', template: poolMember },
};

export interface LocalCloudEnvironment {
  readonly environment: { resource_registry: Record<string, string>; parameter_defaults: Record<string, number> };
  readonly files: Readonly<Record<string, string>>;
}

/** The environment + files to pass with every stack call against the local Heat. */
export function localCloudEnvironment(options: { bootTimeoutSeconds?: number } = {}): LocalCloudEnvironment {
  const resource_registry: Record<string, string> = {};
  const files: Record<string, string> = {};
  for (const [type, { file }] of Object.entries(PROVIDERS)) {
    resource_registry[type] = file;
    files[file] = providerYaml(type);
  }
  return {
    environment: { resource_registry, parameter_defaults: { [BOOT_TIMEOUT_PARAMETER]: options.bootTimeoutSeconds ?? 1800 } },
    files,
  };
}

/** One provider template as the YAML Heat reads (also what the snapshot tests show a reviewer). */
export function providerYaml(type: string): string {
  const p = PROVIDERS[type];
  if (!p) throw new Error(`no local cloud stand-in for ${type}`);
  return toYaml(p.template, { header: `# corekube local cloud: stand-in for ${type}. Generated from localcloud/heat/providers/; do not edit.` });
}

/** Parameter constraints that only a cloud with these services can check (Heat asks Nova, Glance, Neutron). */
const CLOUD_LOOKUP = /^(nova|glance|neutron|cinder)\./;

/**
 * The template for the local cloud: the same template with the parameter constraints removed that Heat
 * checks by asking Nova, Glance or Neutron (`nova.keypair`, `glance.image`, `neutron.network`,
 * `nova.flavor`…) — there are none to ask, and Heat fails a stack create with EndpointNotFound (HTTP 500)
 * instead of skipping them. Nothing else changes: resources, functions and outputs are Heat's to resolve.
 * Pure; accepts the template object or its YAML/JSON text.
 */
export function withoutCloudLookups<T extends object>(template: T | string): T {
  const copy = (typeof template === 'string' ? parseYaml(template) : structuredClone(template)) as {
    parameters?: Record<string, { constraints?: { custom_constraint?: string }[] }>;
  };
  for (const p of Object.values(copy.parameters ?? {})) {
    if (!Array.isArray(p.constraints)) continue;
    p.constraints = p.constraints.filter((c) => !(typeof c.custom_constraint === 'string' && CLOUD_LOOKUP.test(c.custom_constraint)));
    if (p.constraints.length === 0) delete p.constraints;
  }
  return copy as T;
}
