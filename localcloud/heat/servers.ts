import type { HeatClient, StackRef, StackResource } from '../../cloud/heat-client.ts';
import { BOOT_HANDLE } from './providers/compute.ts';

/**
 * The local cloud's side of the Nova stand-in contract (providers/compute.ts), for whoever plays Nova (the
 * machine harness, or a test): which servers Heat wants, with the user_data Heat resolved for each, and
 * how to report one booted. Reads everything through corekube's own Heat client.
 */
export interface LocalServer {
  /** The server's resource name in its stack (`overlord`, or `0`, `1`… inside a ResourceGroup). */
  readonly resourceName: string;
  /** The resource that holds it in the parent stack (`masters` for a group member), if nested. */
  readonly parentResource: string | undefined;
  /** The nested stack standing in for the server: signal its boot handle, read its outputs. */
  readonly stack: StackRef;
  readonly status: string;
  /** True once a boot was reported (the stand-in's wait condition completed). */
  readonly booted: boolean;
  readonly name: string;
  /** As Heat resolved it: every str_replace/get_attr/get_param applied. */
  readonly userData: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** The fixed IP its port or networks entry asks for; '' = DHCP (pick one from the subnet's pool). */
  readonly requestedAddress: string;
  /** The network id to report the address under (`networks` key), from its networks entry or its port. */
  readonly network: string;
}

/** Every server stand-in in the stack and its nested stacks (groups), booted or not. */
export async function listServers(heat: HeatClient, stack: StackRef, nestedDepth = 5): Promise<LocalServer[]> {
  const resources = await heat.resources(stack, { nestedDepth });
  const servers = resources.filter((r) => r.type === 'OS::Nova::Server' && r.nested !== undefined);
  return Promise.all(servers.map((r) => describeServer(heat, r, resources)));
}

/**
 * Servers Heat is waiting for: created (their stand-in exists), not yet reported booted. `except`: ids of
 * server stand-in stacks the caller already handles (booting them): not described again, which saves a
 * few Heat calls per server on every poll.
 */
export async function pendingServers(heat: HeatClient, stack: StackRef, options: { except?: ReadonlySet<string>; resources?: readonly StackResource[] } = {}): Promise<LocalServer[]> {
  const resources = options.resources ?? (await heat.resources(stack, { nestedDepth: 5 }));
  const waiting = resources.filter((r) =>
    r.type === 'OS::Nova::Server' && r.nested !== undefined && r.status.endsWith('_IN_PROGRESS') && !options.except?.has(r.nested.id) && !bootDone(r, resources));
  return Promise.all(waiting.map((r) => describeServer(heat, r, resources)));
}

/** The ids of the server stand-ins Heat still has (not being deleted): a server missing here was deleted. */
export function liveServerStacks(resources: readonly StackResource[]): Set<string> {
  return new Set(resources.filter((r) => r.type === 'OS::Nova::Server' && r.nested !== undefined && !r.status.startsWith('DELETE')).map((r) => r.nested!.id));
}

/** The stand-in's boot wait condition completed: the boot was reported. */
function bootDone(server: StackResource, all: readonly StackResource[]): boolean {
  const boot = all.find((x) => x.name === 'boot' && x.stack?.id === server.nested?.id);
  return boot?.status === 'CREATE_COMPLETE' || boot?.status === 'UPDATE_COMPLETE';
}

/** Tells Heat the machine for `server` is up with `address`: the server becomes CREATE_COMPLETE. */
export async function reportBooted(heat: HeatClient, server: Pick<LocalServer, 'stack' | 'network'>, address: string): Promise<void> {
  await heat.signal(server.stack, BOOT_HANDLE, { status: 'SUCCESS', reason: 'machine booted', id: '1', data: `${address}@${server.network}` });
}

/**
 * Tells Heat the machines of every pending server will not come (like Nova reporting ERROR): their
 * stand-ins fail at once. Do this before deleting a stack that is still being created — Heat's legacy
 * engine does not cancel a nested stack's waiting wait condition, so the delete would otherwise wait for
 * the boot timeout.
 */
export async function failPendingServers(heat: HeatClient, stack: StackRef, reason = 'the local cloud is shutting down'): Promise<number> {
  const pending = await pendingServers(heat, stack).catch(() => []);
  await Promise.all(pending.map((s) => heat.signal(s.stack, BOOT_HANDLE, { status: 'FAILURE', reason, id: '1', data: '' }).catch(() => undefined)));
  return pending.length;
}

async function describeServer(heat: HeatClient, r: StackResource, all: readonly StackResource[]): Promise<LocalServer> {
  const nested = r.nested!;
  const outputs = await heat.outputs(nested);
  const requested = Array.isArray(outputs.requested_networks) ? (outputs.requested_networks as Record<string, string>[]) : [];
  return {
    resourceName: r.name,
    parentResource: r.parentResource,
    stack: nested,
    status: r.status,
    booted: bootDone(r, all),
    name: String(outputs.name ?? r.name),
    userData: String(outputs.user_data ?? ''),
    metadata: (outputs.metadata ?? {}) as Record<string, string>,
    requestedAddress: String(outputs.requested_address ?? ''),
    network: await networkOf(heat, requested[0], all),
  };
}

/** A networks entry's network, or — for `{port}` — the network of that port stand-in. */
async function networkOf(heat: HeatClient, entry: Record<string, string> | undefined, all: readonly StackResource[]): Promise<string> {
  if (!entry) return '';
  if (entry.network) return entry.network;
  const portId = entry.port ?? '';
  // A port stand-in's id is port-<ip|dhcp>-<uuid of its nested stack> (providers/network.ts).
  const uuid = portId.split('-').slice(2).join('-');
  const portResource = all.find((x) => x.type === 'OS::Neutron::Port' && x.nested?.id === uuid);
  if (!portResource?.nested) return '';
  const outputs = await heat.outputs(portResource.nested);
  return String(outputs.network ?? '');
}
