import {
  EMPTY_ROTATION,
  MAX_WAITING,
  parseRotationRecord,
  phaseOrderProblem,
  rolloutProblem,
  type RotationProgress,
  type RotationRecord,
  type RotationRequest,
} from '../../contracts/ca-rotation.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import type { Clock } from '../../core/clock.ts';
import { CorekubeError } from '../../core/errors.ts';
import { BACKOFF, Backoffs, type Backoff } from '../../core/retry.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { Fence, Store } from '../edges/store.ts';
import type { CertificateAuthority } from './pki/authority.ts';
import type { RotationState } from './pki/rotation.ts';

/**
 * The leader's side of a CA rotation (contracts/ca-rotation.ts): every `pollMs` it reads `<prefix>pki/rotation`
 * and, when the phase asked for is the next one and the current phase is rolled out to every machine, moves its
 * authority to it (overlord/trust/pki/authority.ts `rotate`: idempotent, resumable), publishes the PKI state for
 * standbys (shared-state.ts) and has every machine prepared again — their files re-rendered, so the reconciler
 * rolls the new CA bundles or certificates out like any change of files (the units that read them restart;
 * minions drained first, masters one at a time). A request out of order, or asked before the rollout is done, is
 * refused in the record (`refused`), never carried out later by surprise. It also reports, in the record's
 * `progress`, the phase the authority is in and which machines do not run its files yet, which
 * `corekube status` shows and `corekube pki rotate-ca` checks.
 *
 * Not a watch: like the removals (lifecycle/removals.ts), one read per look; a rotation is rare and slow.
 */
export const ROTATION_POLL_MS = 10_000;

export interface CaRotationPorts {
  readonly store: Store;
  readonly keys: ClusterKeys;
  readonly clock: Clock;
  readonly log: Logger;
  readonly fence?: () => Fence | undefined;
}

/** What the term gives: its machines prepared again, and how far their rollout is. */
export interface CaRotationHooks {
  /** every machine prepared again (files re-rendered); resolves once the reconciler sees them */
  refresh(): Promise<void>;
  /**
   * the machines that do not run the files prepared at the last `refresh` yet (hostname and why); [] = every
   * machine does; undefined = not known yet (the reconciler has not planned against them)
   */
  rollout(): readonly string[] | undefined;
}

export interface CaRotationOptions {
  readonly authority: Pick<CertificateAuthority, 'rotation' | 'rotate' | 'ensureAdmin'>;
  /** the PKI state published again for standbys (shared-state.ts StateRepublisher), after a phase changed files */
  readonly publish?: (fence: Fence | undefined) => Promise<void>;
  readonly pollMs?: number;
  /** between failed looks (etcd away; default BACKOFF.peer) */
  readonly backoff?: Backoff;
}

export class CaRotations {
  constructor(private readonly options: CaRotationOptions) {}

  /** Until `signal` aborts: a look every pollMs. Rejects only with E_NOT_LEADER (the lead is lost). */
  async run(ports: CaRotationPorts, hooks: CaRotationHooks, signal: AbortSignal): Promise<void> {
    const failures = new Backoffs(this.options.backoff ?? BACKOFF.peer);
    // the overlord's own admin credentials, as the store has them now (a standby that took over: the leader's)
    await this.options.authority.ensureAdmin().catch((err: unknown) => ports.log.warn({ event: 'pki.rotation-failed', ...errorFields(err) }, 'the admin credentials could not be read'));
    while (!signal.aborted) {
      let wait = this.options.pollMs ?? ROTATION_POLL_MS;
      try {
        await this.look(ports, hooks);
        failures.reset();
      } catch (err) {
        if (err instanceof CorekubeError && err.code === 'E_NOT_LEADER') throw err;
        wait = failures.next();
        ports.log.warn({ event: 'pki.rotation-failed', nextRetryMs: wait, ...errorFields(err) }, 'looking at the CA rotation failed; trying again');
      }
      try {
        await ports.clock.sleep(wait, signal);
      } catch {
        return;
      }
    }
  }

  /** One look: carries out a request that is due, and records the progress. */
  async look(ports: CaRotationPorts, hooks: CaRotationHooks): Promise<void> {
    const { store, keys, log, clock } = ports;
    const kv = await store.get(keys.caRotation);
    const parsed = kv ? parseRotationRecord(kv.value) : EMPTY_ROTATION;
    if (parsed === undefined) log.warn({ event: 'pki.rotation-invalid', key: keys.caRotation }, 'the CA rotation record does not parse: ignored (rewrite it with corekube pki rotate-ca)');
    const record = parsed ?? EMPTY_ROTATION;
    let state = await this.options.authority.rotation();
    let refused = record.refused;
    const request = record.request;
    if (request && !answered(request, state, refused)) {
      const problem = this.problemWith(request, state, hooks);
      if (problem === 'not-known') {
        // the reconciler has not planned against the current files yet: look again next time
      } else if (problem) {
        refused = Object.freeze({ requestedAt: request.requestedAt, reason: `${problem.message}${problem.hint ? ` — ${problem.hint}` : ''}` });
        log.warn({ event: 'pki.rotation-refused', ca: request.ca, phase: request.phase, reason: problem.message }, `CA rotation refused: ${problem.message}`);
      } else {
        try {
          const result = await this.options.authority.rotate(request.ca, request.phase);
          state = result.state;
          log.info({ event: 'pki.rotation-applied', ca: request.ca, phase: request.phase, changed: result.changed }, `${request.ca} CA rotation: phase ${request.phase}; rolling it out to every machine`);
          // published before the rollout starts: a standby that takes over knows every CA a machine may trust
          await this.options.publish?.(ports.fence?.());
          await hooks.refresh();
        } catch (err) {
          // a terminal failure (the next CA's files missing from the store) is the operator's to fix: said in the record
          if (!(err instanceof CorekubeError) || err.retryable || err.code === 'E_NOT_LEADER') throw err;
          refused = Object.freeze({ requestedAt: request.requestedAt, reason: `${err.message}${err.hint ? ` — ${err.hint}` : ''}` });
          log.error({ event: 'pki.rotation-failed', ca: request.ca, phase: request.phase, ...errorFields(err) }, `CA rotation failed: ${err.message}`);
          state = await this.options.authority.rotation();
        }
      }
    }
    const progress = state ? progressOf(state, record.progress, hooks.rollout(), new Date(clock.now()).toISOString()) : record.progress;
    if (progress?.rolledOut && progress.rolledOut !== record.progress?.rolledOut) log.info({ event: 'pki.rotation-rolled-out', ca: progress.ca, phase: progress.phase }, `${progress.ca} CA rotation: phase ${progress.phase} is rolled out to every machine`);
    const next: RotationRecord = { schema: 1, request, progress, refused };
    if (kv && parsed && JSON.stringify(next) === JSON.stringify(parsed)) return;
    if (!kv && !state) return;
    const fence = ports.fence?.();
    await store.put(keys.caRotation, JSON.stringify(next), { expectModRevision: kv?.modRevision ?? '0', ...(fence ? { fence } : {}) }).catch((err: unknown) => {
      // the command wrote meanwhile: read it next time
      if (!(err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT')) throw err;
    });
  }

  private problemWith(request: RotationRequest, state: RotationState | undefined, hooks: CaRotationHooks): CorekubeError | 'not-known' | undefined {
    const order = phaseOrderProblem(state, request.ca, request.phase);
    if (order || !state) return order;
    const waiting = hooks.rollout();
    if (waiting === undefined) return 'not-known';
    return rolloutProblem(waiting.length === 0 ? null : { ca: state.ca, phase: state.phase, since: state.since, rolledOut: null, waiting: waiting.slice(0, MAX_WAITING) }, request.ca, request.phase);
  }
}

/** A request is answered once the authority is in its phase, or once it was refused. */
function answered(request: RotationRequest, state: RotationState | undefined, refused: RotationRecord['refused']): boolean {
  return (state?.ca === request.ca && state.phase === request.phase) || refused?.requestedAt === request.requestedAt;
}

/** PURE: the progress of the authority's phase: rolled out once every machine was seen on its files (kept after). */
export function progressOf(state: RotationState, had: RotationProgress | null, waiting: readonly string[] | undefined, now: string): RotationProgress {
  const same = had !== null && had.ca === state.ca && had.phase === state.phase && had.since === state.since;
  const rolledOut = same && had.rolledOut !== null ? had.rolledOut : waiting !== undefined && waiting.length === 0 ? now : null;
  const still = rolledOut !== null ? [] : (waiting ?? (same ? had.waiting : [])).slice(0, MAX_WAITING);
  return Object.freeze({ ca: state.ca, phase: state.phase, since: state.since, rolledOut, waiting: Object.freeze([...still]) });
}

/**
 * PURE: the machines not on their current files, from the reconciler's last plans: planned to deploy, waiting or
 * failed; and machines the ledger knows that no longer announce (they get the files when they come back).
 */
export function waitingMachines(
  plans: readonly { readonly id: string; readonly action: string; readonly state?: string }[],
  hostname: (id: string) => string | undefined,
  unreachable: readonly string[],
): string[] {
  const out: string[] = [];
  for (const p of plans) {
    if (p.action === 'none' && p.state === 'deployed') continue;
    const why = p.action === 'deploy' ? 'deploying' : p.action === 'wait' ? 'waiting' : 'failed';
    out.push(`${hostname(p.id) ?? p.id} (${why})`);
  }
  for (const id of unreachable) out.push(`${hostname(id) ?? id} (unreachable)`);
  return out;
}
