import { describe, expect, it } from 'vitest';
import { renderUserData } from '../../../cloud-config/index.ts';
import { parseYaml } from '../../../core/yaml.ts';
import { clusterTemplate } from '../../../heat/cluster-template.ts';
import type { HeatValue } from '../../../heat/hot.ts';
import { NODE_ROLES, nodeTemplate } from '../../../heat/node-template.ts';
import { localCloudEnvironment, PROVIDERS, providerYaml, withoutCloudLookups } from '../../../localcloud/heat/providers/environment.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';

/**
 * The local cloud's Nova/Neutron/Octavia stand-ins against corekube's own templates: every such type they
 * use has a stand-in that takes every property they pass. (Heat itself checks each stand-in against the
 * real type — required properties, kinds, attributes — in test/integration/heat-client.test.ts.)
 */
type Res = { type: string; properties?: Record<string, HeatValue> };

function cloudResources(resources: Record<string, Res>): Res[] {
  const out: Res[] = [];
  for (const r of Object.values(resources)) {
    if (r.type === 'OS::Heat::ResourceGroup') out.push(r.properties!.resource_def as unknown as Res);
    else out.push(r);
  }
  return out.filter((r) => /^OS::(Nova|Neutron|Cinder|Glance|Octavia)::/.test(r.type));
}

const templates = (['flatcar', 'ubuntu'] as const).flatMap((os) => {
  const spec = parseClusterSpec({ flags: { os, masters: '3', 'node-port-cidr': '10.0.0.0/8' } });
  return [clusterTemplate(spec, renderUserData), ...NODE_ROLES.map((role) => nodeTemplate(spec, role, renderUserData))];
});

describe('local cloud stand-ins', () => {
  it('exist for every Nova, Neutron and Octavia type corekube\'s cluster and node templates use (3 masters: the load balancer)', () => {
    const used = new Set(templates.flatMap((t) => cloudResources(t.resources as Record<string, Res>).map((r) => r.type)));
    expect([...used].filter((t) => !(t in PROVIDERS))).toEqual([]);
  });

  it('take every property corekube\'s templates pass', () => {
    const missing: string[] = [];
    for (const t of templates) {
      for (const r of cloudResources(t.resources as Record<string, Res>)) {
        const params = PROVIDERS[r.type]!.template.parameters;
        for (const p of Object.keys(r.properties ?? {})) if (!(p in params)) missing.push(`${r.type}.${p}`);
      }
    }
    expect([...new Set(missing)]).toEqual([]);
  });

  it('are registered in the environment and shipped as files under the names the registry gives', () => {
    const { environment, files } = localCloudEnvironment({ bootTimeoutSeconds: 60 });
    expect(environment.parameter_defaults).toEqual({ localcloud_boot_timeout: 60 });
    for (const [type, file] of Object.entries(environment.resource_registry)) {
      expect(file).toMatch(/\.yaml$/); // Heat takes a provider only by a .yaml or .template name
      expect(parseYaml(files[file]!)).toEqual(PROVIDERS[type]!.template);
    }
  });

  it.each(Object.keys(PROVIDERS))('%s renders as reviewed', async (type) => {
    await expect(providerYaml(type)).toMatchFileSnapshot(`__snapshots__/${PROVIDERS[type]!.file.replace('localcloud/', '')}`);
  });
});

describe('withoutCloudLookups', () => {
  it('drops only the parameter constraints Heat checks by asking Nova, Glance or Neutron', () => {
    const spec = parseClusterSpec({ flags: {} });
    const original = clusterTemplate(spec, renderUserData);
    const local = withoutCloudLookups(original);
    expect(local.parameters.key_name!.constraints).toBeUndefined();
    expect(local.parameters.image!.constraints).toBeUndefined();
    expect(local.parameters.admin_cidr!.constraints!.map((c) => c.custom_constraint ?? c.allowed_pattern)).toEqual([
      original.parameters.admin_cidr!.constraints![0]!.allowed_pattern,
      'net_cidr',
    ]);
    expect(local.resources).toEqual(original.resources);
    expect(local.outputs).toEqual(original.outputs);
    expect(original.parameters.key_name!.constraints).toHaveLength(1); // the input is not changed
  });
});
