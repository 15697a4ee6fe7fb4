import type { HeatValue } from '../../../heat/hot.ts';
import { MEMBERS_CHAIN, members, output, param, STACK_ID_OUTPUT, template, yaql, type ProviderTemplate } from './provider.ts';
import { PORT_ID_IP } from './network.ts';

/**
 * The Nova stand-in: OS::Nova::Server as a nested stack that waits, like Nova waits for a VM to become
 * ACTIVE, until the machine harness has booted a machine for it. The contract with the harness:
 * - it finds the server's nested stack (resources of the stack, nested_depth, type OS::Nova::Server) and
 *   reads its outputs: `user_data` (as Heat resolved it), `requested_address` (the fixed IP of its port,
 *   or '' = DHCP: the harness picks one from the subnet's allocation_pools), `requested_networks`,
 *   `metadata`, `name`;
 * - it boots the machine, then signals the nested stack's `boot_handle` with
 *   `{status: SUCCESS, id: "1", data: "<ip>@<network id>"}` (localcloud/heat/servers.ts does this);
 * - only then is the server CREATE_COMPLETE, and `first_address`, `networks` ({<network id>: [ip]}),
 *   `addresses` and `accessIPv4` resolve to the signalled address.
 * The wait is bounded by the `localcloud_boot_timeout` parameter (seconds), settable through the
 * environment's parameter_defaults.
 */
export const BOOT_HANDLE = 'boot_handle';
export const BOOT_TIMEOUT_PARAMETER = 'localcloud_boot_timeout';

const getParam = (name: string): HeatValue => ({ get_param: name });
const bootData = { get_attr: ['boot', 'data'] };
/** The signal's "<ip>@<network>" from the wait condition's data ({"1": "<ip>@<network>"}), split in two. */
const BOOTED = 'let(b => $.data.boot.split("\\"")[3].split("@"))';

export const server: ProviderTemplate = template(
  'Local cloud stand-in for OS::Nova::Server: complete once the machine harness booted a machine from user_data and signalled boot_handle with "<ip>@<network id>".',
  {
    parameters: {
      name: param('string', 'name: server name (%index% already replaced by a ResourceGroup)', ''),
      image: param('string', 'image (the harness boots its own root filesystem)', ''),
      flavor: param('string', 'flavor (ignored)'),
      block_device_mapping: param('list', 'block_device_mapping (ignored)', []),
      block_device_mapping_v2: param('list', 'block_device_mapping_v2 (ignored)', []),
      flavor_update_policy: param('string', 'flavor_update_policy (ignored)', 'RESIZE'),
      image_update_policy: param('string', 'image_update_policy (ignored)', 'REBUILD'),
      key_name: param('string', 'key_name', ''),
      admin_user: param('string', 'admin_user (ignored)', ''),
      availability_zone: param('string', 'availability_zone (ignored)', ''),
      security_groups: param('list', 'security_groups', []),
      networks: param('list', 'networks: [{port} | {network, subnet, fixed_ip}]', []),
      scheduler_hints: param('map', 'scheduler_hints (ignored)', {}),
      metadata: param('map', 'metadata: key/value pairs', {}),
      user_data_format: param('string', 'user_data_format: RAW is what the harness understands', 'HEAT_CFNTOOLS'),
      software_config_transport: param('string', 'software_config_transport (ignored)', 'POLL_SERVER_CFN'),
      user_data_update_policy: param('string', 'user_data_update_policy (ignored: the machine is not rebuilt)', 'REPLACE'),
      user_data: param('string', 'user_data: handed to the machine\'s cloud-init as its NoCloud user-data', ''),
      reservation_id: param('string', 'reservation_id (ignored)', ''),
      config_drive: param('boolean', 'config_drive (ignored)', false),
      diskConfig: param('string', 'diskConfig (ignored)', ''),
      personality: param('map', 'personality (ignored)', {}),
      admin_pass: { ...param('string', 'admin_pass (ignored)', ''), hidden: true },
      tags: param('list', 'tags', []),
      deployment_swift_data: param('map', 'deployment_swift_data (ignored)', {}),
      [BOOT_TIMEOUT_PARAMETER]: param('number', 'seconds to wait for the machine harness to boot this server', 1800),
    },
    resources: {
      [BOOT_HANDLE]: { type: 'OS::Heat::WaitConditionHandle' },
      boot: {
        type: 'OS::Heat::WaitCondition',
        properties: { handle: { get_resource: BOOT_HANDLE }, count: 1, timeout: getParam(BOOT_TIMEOUT_PARAMETER) },
      },
    },
    outputs: {
      ...STACK_ID_OUTPUT,
      name: output('Server name.', yaql('$.data.name != "" and $.data.name or $.data.stack', { name: getParam('name'), stack: getParam('OS::stack_name') })),
      user_data: output('The user_data as Heat resolved it: what the machine boots with.', getParam('user_data')),
      user_data_format: output('user_data_format as given.', getParam('user_data_format')),
      metadata: output('Metadata as given.', getParam('metadata')),
      key_name: output('Key pair as given.', getParam('key_name')),
      security_groups: output('Security groups as given.', getParam('security_groups')),
      requested_networks: output('networks as given: [{port} | {network, subnet, fixed_ip}].', members('networks')),
      requested_address: output('The fixed IP asked for (fixed_ip, or the port\'s), or "" for DHCP.', yaql(
        `$.data.list${MEMBERS_CHAIN}.select($.get("fixed_ip", "") != "" and $.get("fixed_ip") or ` +
          `(let(port => $.get("port", "")) -> ${PORT_ID_IP.replace('$.data.port', '$port')})).where($ != "").first("")`,
        { list: getParam('networks') },
      )),
      first_address: output('The address the machine booted with.', yaql(`${BOOTED} -> $b[0]`, { boot: bootData })),
      networks: output('{<network id>: [address]}, as Nova reports it.', yaql(`${BOOTED} -> dict($b[1] => [$b[0]])`, { boot: bootData })),
      addresses: output('{<network id>: [{addr, version}]}, as Nova reports it.', yaql(
        `${BOOTED} -> dict($b[1] => [dict("addr" => $b[0], "version" => 4, "OS-EXT-IPS:type" => "fixed")])`,
        { boot: bootData },
      )),
      accessIPv4: output('The address the machine booted with.', yaql(`${BOOTED} -> $b[0]`, { boot: bootData })),
      accessIPv6: output('No IPv6 in the local cloud.', ''),
      console_urls: output('No consoles in the local cloud.', {}),
      instance_name: output('Instance name.', getParam('OS::stack_name')),
      os_collect_config: output('No os-collect-config in the local cloud.', {}),
      tags: output('Tags as given.', getParam('tags')),
    },
  },
);
