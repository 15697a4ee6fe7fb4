import { CorekubeError } from '../core/errors.ts';
import { parseBoundedJson } from '../core/untrusted.ts';

/**
 * The rotation of one cluster CA, between the operator (`corekube pki rotate-ca`, as discovery's root) and the
 * leading overlord (overlord/trust/ca-rotation.ts), at `<prefix>pki/rotation` (contracts/keys.ts), JSON, schema 1.
 * Read as untrusted input: root writes it by hand too.
 *
 * Three phases, in order, each rolled out to every machine before the next is asked for (kubeadm's manual
 * rotation: trust both, re-sign, drop the old):
 *   trust   a new ("next") CA is made; every machine's CA file of that kind holds both (current + next)
 *   sign    every certificate of that kind is issued again by the next CA; the files still hold both
 *   finish  the next CA becomes the current one (the old one is kept as `retired`); the files hold it alone
 *
 * The record holds what each side writes:
 * - `request` (the command): the phase asked for, and when;
 * - `progress` (the leader): the phase the overlord's authority is in (the truth is its PKI store:
 *   overlord/trust/pki/rotation.ts), since when, and whether every machine runs the files of that phase
 *   (`rolledOut`) or which ones are not there yet (`waiting`);
 * - `refused` (the leader): the request it did not carry out, and why.
 */
export const ROTATED_CAS = ['cluster', 'etcd', 'front-proxy'] as const;
export type RotatedCa = (typeof ROTATED_CAS)[number];

export const ROTATION_PHASES = ['trust', 'sign', 'finish'] as const;
export type RotationPhase = (typeof ROTATION_PHASES)[number];

export interface RotationRequest {
  readonly ca: RotatedCa;
  readonly phase: RotationPhase;
  readonly requestedAt: string;
}

export interface RotationProgress {
  readonly ca: RotatedCa;
  readonly phase: RotationPhase;
  /** when the authority entered the phase (ISO 8601) */
  readonly since: string;
  /** when every machine was first seen deployed with the files of this phase; null while not yet */
  readonly rolledOut: string | null;
  /** machines not on the files of this phase yet (hostname and why, at most MAX_WAITING) */
  readonly waiting: readonly string[];
}

export interface RotationRecord {
  readonly schema: 1;
  readonly request: RotationRequest | null;
  readonly progress: RotationProgress | null;
  readonly refused: { readonly requestedAt: string; readonly reason: string } | null;
}

export const MAX_WAITING = 20;
const MAX_VALUE = 16_384;
const MAX_TEXT = 1000;

export const EMPTY_ROTATION: RotationRecord = Object.freeze({ schema: 1, request: null, progress: null, refused: null });

export function isRotatedCa(v: unknown): v is RotatedCa {
  return (ROTATED_CAS as readonly unknown[]).includes(v);
}

export function isRotationPhase(v: unknown): v is RotationPhase {
  return (ROTATION_PHASES as readonly unknown[]).includes(v);
}

/** PURE: parses `pki/rotation`; undefined when malformed (the command and the leader then treat it as absent). */
export function parseRotationRecord(text: string): RotationRecord | undefined {
  // record → progress → waiting: three levels
  const parsed = parseBoundedJson(text, { maxBytes: MAX_VALUE, maxDepth: 3 });
  if (!parsed.ok) return undefined;
  const v = parsed.value;
  if (!isObject(v) || v.schema !== 1) return undefined;
  const request = v.request === null || v.request === undefined ? null : parseRequest(v.request);
  const progress = v.progress === null || v.progress === undefined ? null : parseProgress(v.progress);
  const refused = v.refused === null || v.refused === undefined ? null : parseRefused(v.refused);
  if (request === undefined || progress === undefined || refused === undefined) return undefined;
  return Object.freeze({ schema: 1, request, progress, refused });
}

function parseRequest(v: unknown): RotationRequest | undefined {
  if (!isObject(v) || !isRotatedCa(v.ca) || !isRotationPhase(v.phase) || !isTime(v.requestedAt)) return undefined;
  return Object.freeze({ ca: v.ca, phase: v.phase, requestedAt: v.requestedAt });
}

function parseProgress(v: unknown): RotationProgress | undefined {
  if (!isObject(v) || !isRotatedCa(v.ca) || !isRotationPhase(v.phase) || !isTime(v.since)) return undefined;
  if (!(v.rolledOut === null || isTime(v.rolledOut))) return undefined;
  const waiting = Array.isArray(v.waiting) ? v.waiting : [];
  if (!waiting.every((w) => typeof w === 'string')) return undefined;
  return Object.freeze({ ca: v.ca, phase: v.phase, since: v.since, rolledOut: v.rolledOut, waiting: Object.freeze((waiting as string[]).slice(0, MAX_WAITING).map((w) => w.slice(0, 200))) });
}

function parseRefused(v: unknown): { requestedAt: string; reason: string } | undefined {
  if (!isObject(v) || !isTime(v.requestedAt) || typeof v.reason !== 'string') return undefined;
  return Object.freeze({ requestedAt: v.requestedAt, reason: v.reason.slice(0, MAX_TEXT) });
}

/** Where a CA's rotation stands, as far as the order of the phases goes. */
export interface PhaseAt {
  readonly ca: RotatedCa;
  readonly phase: RotationPhase;
}

/**
 * PURE: why `phase` of `ca` may not be asked for now, given the phase the rotation is in (`at`; undefined: none
 * ever started) — or undefined when it may. Phases go trust → sign → finish; after a finish, a new trust may
 * start (of any CA). One rotation at a time. Whether the current phase is rolled out is checked apart
 * (`rolloutProblem`).
 */
export function phaseOrderProblem(at: PhaseAt | undefined, ca: RotatedCa, phase: RotationPhase): CorekubeError | undefined {
  const flags = `--ca ${ca} --phase ${phase}`;
  const idle = at === undefined || at.phase === 'finish';
  if (phase === 'trust') {
    if (idle) return undefined;
    if (at.ca !== ca) return refusal(`${flags}: the ${at.ca} CA is being rotated (phase ${at.phase})`, `finish that rotation first: corekube pki rotate-ca --ca ${at.ca} --phase ${next(at.phase)}`);
    return refusal(`${flags}: the ${ca} CA is in phase ${at.phase} already`, `run --phase ${next(at.phase)} once phase ${at.phase} is rolled out`);
  }
  if (idle) {
    const what = at === undefined ? 'no CA rotation was ever started' : `no CA rotation is under way (the ${at.ca} CA's last one finished)`;
    return refusal(`${flags}: ${what}`, `start with: corekube pki rotate-ca --ca ${ca} --phase trust`);
  }
  if (at.ca !== ca) return refusal(`${flags}: the ${at.ca} CA is being rotated, not the ${ca} CA`, `go on with: corekube pki rotate-ca --ca ${at.ca} --phase ${next(at.phase)}`);
  if (at.phase === phase) return refusal(`${flags}: the ${ca} CA is in phase ${phase} already`, `run --phase ${next(phase)} once phase ${phase} is rolled out`);
  if (next(at.phase) !== phase) return refusal(`${flags}: phase ${phase} cannot follow phase ${at.phase} (the order is trust, sign, finish)`, `run --phase ${next(at.phase)} first`);
  return undefined;
}

/**
 * PURE: why the next phase may not start yet because the current one is not rolled out everywhere (the leader's
 * `progress`), or undefined. Nothing to wait for before the first trust.
 */
export function rolloutProblem(progress: RotationProgress | null, ca: RotatedCa, phase: RotationPhase): CorekubeError | undefined {
  if (progress === null || progress.rolledOut !== null) return undefined;
  const waiting = progress.waiting.length > 0 ? `: not yet on ${progress.waiting.join(', ')}` : ' (the overlord has not seen every machine deployed yet)';
  return refusal(
    `--ca ${ca} --phase ${phase}: phase ${progress.phase} of the ${progress.ca} CA (since ${progress.since}) is not rolled out everywhere${waiting}`,
    'wait until `corekube status` shows every machine deployed and the rotation rolled out (or add --wait to the previous phase), then run this again',
  );
}

/** The phase after `phase` (trust after finish: a new rotation). */
export function next(phase: RotationPhase): RotationPhase {
  return phase === 'trust' ? 'sign' : phase === 'sign' ? 'finish' : 'trust';
}

function refusal(message: string, fix: string): CorekubeError {
  return new CorekubeError('E_USAGE', message, { hint: fix });
}

function isTime(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 40 && !Number.isNaN(Date.parse(v));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
