import { randomBytes } from 'node:crypto';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  GRPCAlreadyExistsError,
  GRPCFailedPreconditionError,
  GRPCInvalidArgumentError,
  GRPCNotFoundError,
  GRPCUnauthenticatedError,
  Range,
  type IOptions,
  type IPermissionResult,
} from 'etcd3';
import { JOINER_USER } from '../../cloud-config/machine-paths.ts';
import { RECEIVE_LIMIT, retryStaleAuth } from '../edges/etcd-store.ts';
import { CorekubeError } from '../../core/errors.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import type { PkiStore } from './pki/store.ts';
import { OVERLORD_USER } from './shared-state.ts';

/**
 * Least privilege on the discovery etcd, set up by the overlord once discovery's etcd
 * serves TLS — idempotently: every start reads what exists and changes only what differs, so a second run
 * changes nothing (which matters: every auth change in etcd invalidates every client's auth token).
 *
 * Who authenticates how. Discovery's etcd serves TLS (its server cert from the discovery CA) but does not ask
 * clients for a certificate: etcd cannot make client certificates optional (any --trusted-ca-file makes them
 * mandatory, etcd-io/etcd#12317), and a node boots holding none. So every client authenticates as an etcd
 * user with a password, over TLS verified against the discovery CA:
 *
 * | user             | password                                        | may                                                   |
 * |------------------|-------------------------------------------------|-------------------------------------------------------|
 * | `root`           | random, made by the overlord, in its PKI store  | everything (the overlord: ledger, leader, hostkeys, network) |
 * | `joiner`         | the join token (user_data of every node)        | WRITE `<prefix>join/` (range), READ `<prefix>ssh/overlord.pub` |
 * | `machine-<id>`   | HMAC of the overlord's machine secret and the id, delivered to that machine only (0600) | READWRITE its own `<prefix>machines/<id>`; flannel: READ `<prefix>network/config` and `<prefix>network/subnets/` (range), READWRITE its own subnet lease |
 * | `overlord`       | HMAC of the overlord secret (overlord/trust/shared-state.ts), only when there is one | READ `<prefix>overlord/state` (one key): standby overlords |
 *
 * The join token is shared by every node, so it only lets a node ASK to join: a join request at
 * `join/<id>`, which no node can read back. The overlord admits it (overlord/discovery/admission.ts: the host key is
 * checked over SSH) and hands that machine its own user, which alone can write `machines/<id>`. So a
 * node cannot write another's record, read any record, the ledger or a key, and the CA key never leaves
 * the overlord. What a node can read: the overlord's public key, and flannel's config and subnet leases
 * (flanneld must route to every other node's subnet: they hold addresses, never secrets).
 *
 * The per-machine users and roles are made by overlord/trust/machine-credentials.ts; this module sets up the
 * fixed ones (root, joiner) and turns auth on. The `flannel` user of earlier versions (one password shared
 * by every node) is deleted.
 *
 * The overlord's root client certificate (CN=root, discovery CA) is presented as well: with today's flags
 * etcd ignores it, and should discovery ever require client certificates, etcd maps CN=root to this user.
 */
export const ROOT_USER = 'root';
export const ROOT_ROLE = 'root';
export const JOINER = JOINER_USER;
/** users and roles of earlier versions, deleted when found */
const RETIRED: readonly string[] = ['flannel'];

/** PkiStore names of the secrets the overlord makes (the join token comes from user_data instead). */
export const ROOT_PASSWORD_NAME = 'discovery/root.password';
/** the key every machine's discovery password is derived from (overlord/trust/machine-credentials.ts) */
export const MACHINE_SECRET_NAME = 'discovery/machines.secret';

export type PermissionType = 'Read' | 'Write' | 'Readwrite';

export interface PermissionSpec {
  readonly permission: PermissionType;
  readonly key: string;
  /** true: every key starting with `key`; false: that one key */
  readonly prefix: boolean;
}

export interface RoleSpec {
  readonly name: string;
  readonly permissions: readonly PermissionSpec[];
}

export interface UserSpec {
  readonly name: string;
  /** never log it */
  readonly password: string;
  readonly roles: readonly string[];
}

export interface DiscoveryRbac {
  readonly roles: readonly RoleSpec[];
  readonly users: readonly UserSpec[];
}

export interface DiscoveryPasswords {
  readonly root: string;
  readonly joiner: string;
  /** overlordDiscoveryPassword(overlord secret); absent (booted by hand, no secret) = no `overlord` user */
  readonly overlord?: string;
}

/** PURE: the fixed users and roles discovery's etcd must have for a cluster. */
export function discoveryRbac(keys: ClusterKeys, passwords: DiscoveryPasswords): DiscoveryRbac {
  return Object.freeze({
    roles: Object.freeze([
      {
        name: JOINER,
        permissions: [
          { permission: 'Write', key: keys.join, prefix: true },
          { permission: 'Read', key: keys.overlordSshKey, prefix: false },
        ],
      },
      // standby overlords read the sealed overlord state, and nothing else
      ...(passwords.overlord === undefined ? [] : [{ name: OVERLORD_USER, permissions: [{ permission: 'Read' as const, key: keys.overlordState, prefix: false }] }]),
    ] satisfies RoleSpec[]),
    users: Object.freeze([
      { name: ROOT_USER, password: passwords.root, roles: [ROOT_ROLE] },
      { name: JOINER, password: passwords.joiner, roles: [JOINER] },
      ...(passwords.overlord === undefined ? [] : [{ name: OVERLORD_USER, password: passwords.overlord, roles: [OVERLORD_USER] }]),
    ] satisfies UserSpec[]),
  });
}

/**
 * root's password and the machines' secret, made once (32 random bytes, hex: safe in an EnvironmentFile and
 * in JSON) and kept in the overlord's PKI store next to the CA keys — written BEFORE etcd ever sees them, so
 * a crash cannot leave etcd with a password the overlord lost.
 */
export async function ensureDiscoveryPasswords(store: PkiStore): Promise<{ root: string; machines: string }> {
  const one = async (name: string) => {
    const stored = (await store.read(name))?.trim();
    if (stored !== undefined && /^[0-9a-f]{64}$/.test(stored)) return stored;
    const made = randomBytes(32).toString('hex');
    await store.write(name, `${made}\n`);
    return made;
  };
  return { root: await one(ROOT_PASSWORD_NAME), machines: await one(MACHINE_SECRET_NAME) };
}

export interface DiscoveryConnection {
  readonly endpoints: readonly string[];
  /** the discovery CA (PEM) */
  readonly ca: string;
  /** the overlord's client pair (CN=root), presented when etcd asks for one */
  readonly cert?: string;
  readonly key?: string;
  /** deadline of one call (default 10 s) */
  readonly callTimeoutMs?: number;
}

export interface AuthResult {
  /** what this run changed, one phrase each ("created user joiner"); empty = nothing to do */
  readonly changes: readonly string[];
  /** auth was already enabled when this run began */
  readonly wasEnabled: boolean;
}

/** etcd3 client options for discovery; `auth` adds password authentication. */
export function discoveryClientOptions(conn: DiscoveryConnection, auth?: { username: string; password: string }): IOptions {
  const callTimeoutMs = conn.callTimeoutMs ?? 10_000;
  return {
    hosts: [...conn.endpoints],
    grpcOptions: RECEIVE_LIMIT,
    credentials: {
      rootCertificate: Buffer.from(conn.ca),
      ...(conn.cert && conn.key ? { certChain: Buffer.from(conn.cert), privateKey: Buffer.from(conn.key) } : {}),
    },
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + callTimeoutMs }),
    ...(auth ? { auth } : {}),
  };
}

/**
 * One Status call over TLS: resolves once discovery's etcd answers — with its status, or with a refusal (newer
 * etcd versions may want a user for Status once auth is on: that is an answer too); E_ETCD retryable otherwise.
 */
export async function pingDiscovery(conn: DiscoveryConnection): Promise<void> {
  const client = new Etcd3(discoveryClientOptions(conn));
  try {
    await client.maintenance.status();
  } catch (err) {
    if (!etcdAnswered(err)) throw toError('asking for its status', err, conn);
  } finally {
    client.close();
  }
}

/**
 * One attempt, no waiting: reads the auth state and brings roles, users, passwords and grants to
 * `rbac`, then enables auth. A transient etcd failure is E_ETCD retryable (the caller retries the whole
 * call, which is safe); a root password etcd refuses is E_ETCD terminal.
 */
export async function ensureDiscoveryAuth(conn: DiscoveryConnection, rbac: DiscoveryRbac): Promise<AuthResult> {
  const root = rbac.users.find((u) => u.name === ROOT_USER);
  if (!root) throw new CorekubeError('E_INTERNAL', 'the discovery RBAC has no root user');
  const anonymous = new Etcd3(discoveryClientOptions(conn));
  let admin: Etcd3 | undefined;
  const changes: string[] = [];
  try {
    const enabled = await authEnabled(anonymous, root, conn);
    admin = enabled ? new Etcd3(discoveryClientOptions(conn, { username: ROOT_USER, password: root.password })) : anonymous;
    const a = admin;
    const call = <T>(what: string, fn: () => Promise<T>) => etcdCall(what, fn, conn);

    const existingRoles = new Set((await call('listing roles', () => a.getRoles())).map((r) => r.name));
    for (const role of rbac.roles) changes.push(...(await syncRole(a, role, existingRoles.has(role.name), call)));
    for (const name of RETIRED) if (existingRoles.has(name)) {
      await call(`deleting role ${name}`, () => a.role(name).delete());
      changes.push(`deleted retired role ${name}`);
    }

    const existingUsers = new Set((await call('listing users', () => a.getUsers())).map((u) => u.name));
    for (const user of rbac.users) {
      // with auth off, etcd cannot say whether a password is right: set it (nobody holds a token yet)
      changes.push(...(await syncUser(a, user, existingUsers.has(user.name), enabled ? () => passwordAccepted(anonymous, user, conn) : async () => false, call)));
    }
    for (const name of RETIRED) if (existingUsers.has(name)) {
      await call(`deleting user ${name}`, () => a.user(name).delete());
      changes.push(`deleted retired user ${name}`);
    }

    if (!enabled) {
      await call('enabling auth', () => a.auth.authEnable());
      changes.push('enabled auth');
    }
    return Object.freeze({ changes: Object.freeze(changes), wasEnabled: enabled });
  } finally {
    if (admin && admin !== anonymous) admin.close();
    anonymous.close();
  }
}

export type EtcdCall = <T>(what: string, fn: () => Promise<T>) => Promise<T>;

/**
 * Brings one role to exactly `role.permissions` (creating it when `exists` is false): revokes what is not
 * wanted, grants what is missing. Returns what it changed, one phrase each. Shared by the cluster's fixed
 * roles here and the per-machine roles (overlord/trust/machine-credentials.ts).
 */
export async function syncRole(a: Etcd3, role: RoleSpec, exists: boolean, call: EtcdCall): Promise<string[]> {
  const changes: string[] = [];
  if (!exists) {
    await call(`creating role ${role.name}`, () => a.role(role.name).create());
    changes.push(`created role ${role.name}`);
  }
  const have = exists ? await call(`reading role ${role.name}`, () => a.role(role.name).permissions()) : [];
  const want = new Map(role.permissions.map((p) => [permissionKey(p.permission, rangeOf(p)), p]));
  const got = new Map(have.map((p) => [permissionKey(p.permission, p.range), p]));
  for (const [k, p] of got) {
    if (want.has(k)) continue;
    await call(`revoking a permission of role ${role.name}`, () => a.role(role.name).revoke({ permission: p.permission, range: p.range }));
    changes.push(`revoked ${describeResult(p)} from role ${role.name}`);
  }
  for (const [k, p] of want) {
    if (got.has(k)) continue;
    await call(`granting role ${role.name}`, () => a.role(role.name).grant(p.prefix ? { permission: p.permission, range: Range.prefix(p.key) } : { permission: p.permission, key: p.key }));
    changes.push(`granted role ${role.name} ${p.permission.toLowerCase()} on ${p.key}${p.prefix ? '*' : ''}`);
  }
  return changes;
}

/**
 * Brings one user to `user` (creating it when `exists` is false): its password when `passwordOk` says
 * etcd refuses it, and exactly its roles. Returns what it changed; never the password.
 */
export async function syncUser(a: Etcd3, user: UserSpec, exists: boolean, passwordOk: () => Promise<boolean>, call: EtcdCall): Promise<string[]> {
  const changes: string[] = [];
  if (!exists) {
    await call(`creating user ${user.name}`, () => a.user(user.name).create(user.password));
    changes.push(`created user ${user.name}`);
  } else if (!(await passwordOk())) {
    await call(`setting the password of user ${user.name}`, () => a.user(user.name).setPassword(user.password));
    changes.push(`set the password of user ${user.name}`);
  }
  const roles = exists ? new Set((await call(`reading user ${user.name}`, () => a.user(user.name).roles())).map((r) => r.name)) : new Set<string>();
  for (const r of roles) {
    if (user.roles.includes(r)) continue;
    await call(`removing role ${r} from user ${user.name}`, () => a.user(user.name).removeRole(r));
    changes.push(`removed role ${r} from user ${user.name}`);
  }
  for (const r of user.roles) {
    if (roles.has(r)) continue;
    await call(`granting role ${r} to user ${user.name}`, () => a.user(user.name).addRole(r));
    changes.push(`granted role ${r} to user ${user.name}`);
  }
  return changes;
}

/** true when auth is on and root's password is ours; false when auth is off; E_ETCD when etcd refuses root. */
async function authEnabled(client: Etcd3, root: UserSpec, conn: DiscoveryConnection): Promise<boolean> {
  try {
    await client.auth.authenticate({ name: root.name, password: root.password });
    return true;
  } catch (err) {
    if (err instanceof GRPCFailedPreconditionError && /authentication is not enabled/.test(err.message)) return false;
    if (err instanceof EtcdAuthenticationFailedError) {
      throw new CorekubeError('E_ETCD', `the discovery etcd at ${conn.endpoints.join(',')} refuses the overlord's root password`, {
        hint: `its auth was set up by an overlord whose state is lost: restore the overlord's state directory (${ROOT_PASSWORD_NAME} in its PKI store), or rebuild the discovery server's etcd data`,
      });
    }
    throw toError('reading the auth state', err, conn);
  }
}

export async function passwordAccepted(client: Etcd3, user: Pick<UserSpec, 'name' | 'password'>, conn: DiscoveryConnection): Promise<boolean> {
  try {
    await client.auth.authenticate({ name: user.name, password: user.password });
    return true;
  } catch (err) {
    if (err instanceof EtcdAuthenticationFailedError) return false;
    throw toError(`checking the password of user ${user.name}`, err, conn);
  }
}

function rangeOf(p: PermissionSpec): Range {
  return p.prefix ? Range.prefix(p.key) : new Range(p.key, Buffer.alloc(0));
}

/** A permission's identity: its type and exact byte range (a single key has an empty range end). */
function permissionKey(permission: string, range: Range): string {
  return `${permission}:${range.start.toString('hex')}:${range.end.toString('hex')}`;
}

function describeResult(p: IPermissionResult): string {
  const start = p.range.start.toString();
  const end = p.range.end.length === 0 ? '' : Range.prefix(p.range.start).end.equals(p.range.end) ? '*' : `..${p.range.end.toString()}`;
  return `${p.permission.toLowerCase()} on ${start}${end}`;
}

export async function etcdCall<T>(what: string, fn: () => Promise<T>, conn: DiscoveryConnection): Promise<T> {
  try {
    return await retryStaleAuth(fn);
  } catch (err) {
    throw toError(what, err, conn);
  }
}

/** etcd3's errors as E_ETCD: unreachable or slow = retryable; anything etcd answered = terminal. */
function toError(what: string, err: unknown, conn: DiscoveryConnection): CorekubeError {
  if (err instanceof CorekubeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const transient = !etcdAnswered(err);
  return new CorekubeError('E_ETCD', `discovery auth: ${what} at ${conn.endpoints.join(',')} failed: ${message}`, {
    retryable: transient,
    hint: transient ? 'the discovery etcd is not answering yet; the overlord retries' : 'etcd refused the change: see the message; the overlord needs its root user',
    cause: err,
  });
}

/** True when etcd itself answered (a refusal, a conflict); false when it could not be reached or timed out. */
function etcdAnswered(err: unknown): boolean {
  return (
    err instanceof Error &&
    (err.constructor.name.startsWith('Etcd') ||
      err instanceof GRPCInvalidArgumentError ||
      err instanceof GRPCFailedPreconditionError ||
      err instanceof GRPCAlreadyExistsError ||
      err instanceof GRPCNotFoundError ||
      err instanceof GRPCUnauthenticatedError)
  );
}
