import { describe, expect, it } from 'vitest';
import { renderUserData } from '../../../cloud-config/index.ts';
import type { HeatValue } from '../../../heat/hot.ts';
import { nodeTemplate, renderNodeTemplate } from '../../../heat/node-template.ts';
import { PLACEHOLDERS } from '../../../cloud-config/placeholders.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';

const spec = (flags: Record<string, string> = {}) => parseClusterSpec({ flags });

describe('node template', () => {
  it('boots one server whose role is a parameter choosing the master or minion user_data', () => {
    const t = nodeTemplate(spec(), 'master', renderUserData);
    expect(Object.keys(t.resources)).toEqual(['server']);
    expect(t.parameters.role).toMatchObject({ default: 'master', constraints: [{ allowed_values: ['master', 'minion'] }] });
    const userData = t.resources.server!.properties!.user_data as { if: [string, HeatValue, HeatValue] };
    expect(userData.if[0]).toBe('is_master');
    expect(t.conditions).toEqual({ is_master: { equals: [{ get_param: 'role' }, 'master'] } });
  });

  it('takes the join token (hidden), the overlord key and the discovery CA from parameters', () => {
    const t = nodeTemplate(spec(), 'minion', renderUserData);
    expect(t.parameters.join_token!.hidden).toBe(true);
    const userData = t.resources.server!.properties!.user_data as { if: [string, HeatValue, HeatValue] };
    const params = (userData.if[2] as { str_replace: { params: Record<string, HeatValue> } }).str_replace.params;
    expect(params[PLACEHOLDERS.joinToken]).toEqual({ get_param: 'join_token' });
    if (PLACEHOLDERS.overlordSshKey in params) expect(params[PLACEHOLDERS.overlordSshKey]).toEqual({ get_param: 'overlord_ssh_key' });
    if (PLACEHOLDERS.discoveryCa in params) expect(params[PLACEHOLDERS.discoveryCa]).toEqual({ get_param: 'discovery_ca' });
    expect(JSON.stringify(t.outputs)).not.toContain('join_token');
  });

  it('asks only for what the running cluster knows, with defaults from the spec for the rest', () => {
    const t = nodeTemplate(spec({ image: 'flatcar', 'minion-flavor': 'm1.large' }), 'minion', renderUserData);
    const required = Object.entries(t.parameters).filter(([, p]) => p.default === undefined).map(([n]) => n);
    expect(required.sort()).toEqual(['discovery_ca', 'join_token', 'key_name', 'network', 'overlord_ssh_key', 'security_groups', 'subnet']);
    expect(t.parameters.flavor!.default).toBe('m1.large');
  });

  it('renders a minion node template for flatcar', async () => {
    await expect(renderNodeTemplate(spec(), 'minion', renderUserData)).toMatchFileSnapshot('__snapshots__/node-minion-flatcar.yaml');
  });
});
