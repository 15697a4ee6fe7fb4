import { isRotatedCa, isRotationPhase, type RotatedCa, type RotationPhase } from '../../../contracts/ca-rotation.ts';
import { CA_NAMES } from './catalog.ts';

/**
 * Where a CA rotation stands in the PKI store (the truth; `<prefix>pki/rotation` in etcd only asks and reports):
 * `ca/rotation.json`, beside the CAs, so it is backed up, republished for standbys and read by a restarted
 * overlord with them. Pure: names and parsing.
 *
 * The files of a rotation of CA `ca/<kind>` (CA_NAMES):
 *   ca/<kind>.key, .crt                 the current CA: signs the leaves in phase trust, and after finish
 *   ca/<kind>.next.key, .next.crt       the next CA, made by trust: signs the leaves in phase sign
 *   ca/<kind>.retired-<stamp>.key, .crt the CA finish replaced, kept for the backup (never read again)
 *
 * Finish replaces the current CA's files with the next one's. It is crash-safe because the state is written
 * first (phase finish, `finished: false`, the retired name chosen), then the retired copy (only while the current
 * files still hold the old CA), then the current key and certificate, then `finished: true` — and every use of the
 * authority first completes a finish it finds unfinished (CertificateAuthority), from the next files, which
 * finish never changes.
 */
export const ROTATION_STATE = 'ca/rotation.json';

export interface RotationState {
  readonly schema: 1;
  readonly ca: RotatedCa;
  readonly phase: RotationPhase;
  /** when the phase began (ISO 8601) */
  readonly since: string;
  /** the store name (without .key/.crt) the replaced CA is kept under; set when finish begins */
  readonly retired: string | null;
  /** finish only: the next CA is the current one */
  readonly finished: boolean;
}

export function nextCaName(kind: RotatedCa): string {
  return `${CA_NAMES[kind]}.next`;
}

/** `ca/cluster.retired-20261207t003605z`: store names are lowercase, without colons */
export function retiredCaName(kind: RotatedCa, at: number): string {
  const stamp = new Date(at).toISOString().replace(/\.\d{3}Z$/, 'z').replace(/[-:]/g, '').toLowerCase();
  return `${CA_NAMES[kind]}.retired-${stamp}`;
}

/** PURE: the stored state, or undefined when absent; a damaged file throws (the hint says what to do). */
export function parseRotationState(text: string | undefined): RotationState | undefined | 'invalid' {
  if (text === undefined) return undefined;
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return 'invalid';
  }
  if (v === null || typeof v !== 'object' || v.schema !== 1 || !isRotatedCa(v.ca) || !isRotationPhase(v.phase)) return 'invalid';
  if (typeof v.since !== 'string' || Number.isNaN(Date.parse(v.since))) return 'invalid';
  if (!(v.retired === null || (typeof v.retired === 'string' && v.retired.startsWith(`${CA_NAMES[v.ca]}.retired-`)))) return 'invalid';
  if (typeof v.finished !== 'boolean') return 'invalid';
  return Object.freeze({ schema: 1, ca: v.ca, phase: v.phase, since: v.since, retired: v.retired, finished: v.finished });
}

/** Whether `kind`'s machines trust two CAs now (current + next): trust, sign, and a finish not completed. */
export function trustsTwo(state: RotationState | undefined, kind: string): boolean {
  return state !== undefined && state.ca === kind && !(state.phase === 'finish' && state.finished);
}
