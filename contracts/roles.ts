/**
 * The roles a deployed machine can have, and the one table of what each role means to the overlord. A module
 * that treats roles differently asks this table instead of comparing with 'master': adding a role is a row
 * here, its units (units/render.ts), its boot config (cloud-config/) and its Heat group (heat/servers.ts).
 */
export type Role = 'master' | 'minion';
export const ROLES: readonly Role[] = ['master', 'minion'];

export interface RoleTraits {
  /** plan and deploy order: lower first (the control plane before the nodes that join it) */
  readonly rank: number;
  /**
   * runs the control plane: its etcd members form one initial cluster, so machines of this role deploy once
   * every expected one has announced; the other roles wait until one of them is deployed and none is busy
   */
  readonly controlPlane: boolean;
}

export const ROLE_TRAITS: Readonly<Record<Role, RoleTraits>> = Object.freeze({
  master: Object.freeze({ rank: 0, controlPlane: true }),
  minion: Object.freeze({ rank: 1, controlPlane: false }),
});

export function isRole(value: unknown): value is Role {
  return typeof value === 'string' && (ROLES as readonly string[]).includes(value);
}

/** Plan order of two machines: by role rank, then by id. */
export function byRoleThenId(a: { readonly role: Role; readonly id: string }, b: { readonly role: Role; readonly id: string }): number {
  return ROLE_TRAITS[a.role].rank - ROLE_TRAITS[b.role].rank || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
