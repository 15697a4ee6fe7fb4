import { createHmac } from 'node:crypto';
import { Etcd3, EtcdRoleNotFoundError, EtcdUserNotFoundError } from 'etcd3';
import { CorekubeError } from '../../core/errors.ts';
import { DISCOVERY_CLIENT_PATHS } from '../../units/pki-paths.ts';
import { discoveryClientOptions, etcdCall, passwordAccepted, ROOT_USER, syncRole, syncUser, type DiscoveryConnection, type EtcdCall, type PermissionSpec, type RoleSpec, type UserSpec } from './discovery-auth.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import { KEY_MODE } from './pki/delivery.ts';
import type { RemoteFile } from '../../contracts/step.ts';

/**
 * Each machine's own discovery etcd user ("nodes hold a credential that can only register
 * their own machine record"). The join token every node boots with only lets it ask to join
 * (overlord/trust/discovery-auth.ts); once the overlord has admitted a machine (overlord/discovery/admission.ts) the machine
 * holds `machine-<id>`, whose role may:
 *
 *   READWRITE  <prefix>machines/<id>                its record (and the lease it is attached to)
 *   and what the pod network grants it (overlord/pod-network/: flannel's config and subnet leases to read, its
 *   own lease to write once the overlord reserved it)
 *
 * and nothing else. The password is derived, never stored: HMAC-SHA256(the overlord's machine secret, the user
 * name), hex — so a restarted overlord (or a standby with the same state) derives the same one, and a machine
 * learns only its own. It reaches the machine only over SSH, in a 0600 file.
 */
export const MACHINE_USER_PREFIX = 'machine-';

const MACHINE_ID = /^[0-9a-f]{32}$/;

/** PURE: the etcd user (and role) name of a machine. */
export function machineUser(id: string): string {
  if (!MACHINE_ID.test(id)) throw new CorekubeError('E_INTERNAL', `${JSON.stringify(id)} is not a machine id`, { hint: 'machine ids are 32 lowercase hex characters' });
  return `${MACHINE_USER_PREFIX}${id}`;
}

/** PURE: the machine's password, derived from the overlord's machine secret. Never log it. */
export function machinePassword(secret: string, id: string): string {
  return createHmac('sha256', secret).update(`corekube discovery user ${machineUser(id)}`).digest('hex');
}

/** PURE: the machine's role: its own record, and what the pod network grants it (`podNetwork`). */
export function machineRole(keys: ClusterKeys, id: string, podNetwork: readonly PermissionSpec[] = []): RoleSpec {
  const permissions: PermissionSpec[] = [{ permission: 'Readwrite', key: keys.machine(id), prefix: false }, ...podNetwork];
  return Object.freeze({ name: machineUser(id), permissions: Object.freeze(permissions) });
}

/** PURE: the credentials file of a machine (units/pki-paths.ts DISCOVERY_CLIENT_PATHS.credentials), 0600. */
export function credentialsFile(id: string, password: string): RemoteFile {
  return Object.freeze({ path: DISCOVERY_CLIENT_PATHS.credentials, content: `FLANNELD_ETCD_USERNAME=${machineUser(id)}\nFLANNELD_ETCD_PASSWORD=${password}\n`, mode: KEY_MODE });
}

/** What admission and subnet reservation need of the machines' credentials (a port: tests pass their own). */
export interface MachineCredentials {
  /** the machine's credentials file (same content every time for a machine) */
  fileFor(id: string): RemoteFile;
  /**
   * Makes or corrects the machine's etcd user and role — with the RW grant on its subnet lease when `subnet`
   * is given. Idempotent; resolves with what it changed (one phrase each, never a password).
   */
  ensure(id: string, subnet?: string): Promise<readonly string[]>;
  /** Deletes the machine's etcd user and role (a removed machine: overlord/lifecycle/removals.ts); false when neither was there. */
  remove(id: string): Promise<boolean>;
}

/** The etcd edge: discovery's etcd as `root`, one client for the overlord's life. */
export class DiscoveryMachineCredentials implements MachineCredentials {
  private readonly admin: Etcd3;
  private readonly checker: Etcd3;
  private readonly call: EtcdCall;
  /** the last subnet each machine's role was brought to: a machine deployed again costs one read, not five */
  private readonly synced = new Map<string, string>();

  constructor(
    private readonly conn: DiscoveryConnection,
    rootPassword: string,
    private readonly keys: ClusterKeys,
    private readonly secret: string,
    /** what the pod network grants a machine (overlord/pod-network/ PodNetworkGrants) */
    private readonly podNetworkGrants: (keys: ClusterKeys, subnet?: string) => readonly PermissionSpec[],
  ) {
    if (!/^[0-9a-f]{64}$/.test(secret)) throw new CorekubeError('E_INTERNAL', 'the machine secret must be 64 hex characters');
    this.admin = new Etcd3(discoveryClientOptions(conn, { username: ROOT_USER, password: rootPassword }));
    this.checker = new Etcd3(discoveryClientOptions(conn));
    this.call = <T>(what: string, fn: () => Promise<T>) => etcdCall(what, fn, conn);
  }

  fileFor(id: string): RemoteFile {
    return credentialsFile(id, machinePassword(this.secret, id));
  }

  async ensure(id: string, subnet?: string): Promise<readonly string[]> {
    const role = machineRole(this.keys, id, this.podNetworkGrants(this.keys, subnet));
    const user: UserSpec = { name: machineUser(id), password: machinePassword(this.secret, id), roles: [role.name] };
    const syncKey = subnet ?? '';
    if (this.synced.get(id) === syncKey) return [];
    const roleExists = await exists(() => this.admin.role(role.name).permissions(), EtcdRoleNotFoundError, this.call, `reading role ${role.name}`);
    const changes = await syncRole(this.admin, role, roleExists, this.call);
    const userExists = await exists(() => this.admin.user(user.name).roles(), EtcdUserNotFoundError, this.call, `reading user ${user.name}`);
    changes.push(...(await syncUser(this.admin, user, userExists, () => passwordAccepted(this.checker, user, this.conn), this.call)));
    this.synced.set(id, syncKey);
    return Object.freeze(changes);
  }

  async remove(id: string): Promise<boolean> {
    const name = machineUser(id);
    this.synced.delete(id);
    const user = await exists(() => this.admin.user(name).delete(), EtcdUserNotFoundError, this.call, `deleting user ${name}`);
    const role = await exists(() => this.admin.role(name).delete(), EtcdRoleNotFoundError, this.call, `deleting role ${name}`);
    return user || role;
  }

  close(): void {
    this.admin.close();
    this.checker.close();
  }
}

/** Runs a read (does it exist?) or a delete (was there one?): false when etcd says there is none. */
async function exists(read: () => Promise<unknown>, notFound: new (...args: never[]) => Error, call: EtcdCall, what: string): Promise<boolean> {
  try {
    await call(what, read);
    return true;
  } catch (err) {
    if (err instanceof CorekubeError && err.cause instanceof notFound) return false;
    throw err;
  }
}
