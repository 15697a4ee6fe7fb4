/**
 * Typed errors. Every failure corekube reports carries a stable code, a message that names what failed,
 * a hint that says what to do next, and whether retrying can help. Library errors are converted once,
 * inside the adapter that called the library (etcd, SSH, HTTP), never further up.
 */
export type ErrorCode =
  | 'E_SPEC_INVALID'
  | 'E_USAGE'
  | 'E_IO'
  | 'E_TEMPLATE'
  | 'E_RECORD_INVALID'
  | 'E_ETCD'
  | 'E_ETCD_CONFLICT'
  | 'E_SSH'
  | 'E_SSH_HOSTKEY'
  | 'E_COMMAND_FAILED'
  | 'E_UNIT_FAILED'
  | 'E_STEP_TIMEOUT'
  | 'E_NOT_LEADER'
  | 'E_SUBNET_EXHAUSTED'
  | 'E_NETWORK_CONFIG_CHANGED'
  | 'E_PKI'
  | 'E_HEAT'
  | 'E_OVERLORD_STATE'
  | 'E_KUBERNETES'
  | 'E_NODE_NOT_READY'
  | 'E_JOIN_REFUSED'
  | 'E_DRAIN_TIMEOUT'
  | 'E_REMOVAL_REFUSED'
  | 'E_ETCD_QUORUM'
  | 'E_INTERNAL';

export interface ErrorOptions {
  hint?: string;
  retryable?: boolean;
  cause?: unknown;
}

export class CorekubeError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CorekubeError';
    this.code = code;
    this.hint = options.hint;
    this.retryable = options.retryable ?? false;
  }

  /** One line a person reads: `E_CODE: message (hint)`. */
  describe(): string {
    return `${this.code}: ${this.message}${this.hint ? ` — ${this.hint}` : ''}`;
  }
}

/** One problem with one input field: which field, what was given, what is wrong, how to fix it. */
export interface FieldProblem {
  field: string;
  value: unknown;
  message: string;
  fix: string;
}

/** Every problem of an input at once (never only the first). */
export class InvalidInputError extends CorekubeError {
  readonly problems: readonly FieldProblem[];

  constructor(what: string, problems: readonly FieldProblem[], code: ErrorCode = 'E_SPEC_INVALID') {
    super(code, `${what}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${problems.map(formatProblem).join('\n')}`, {
      hint: 'fix every field listed above and run the command again',
    });
    this.name = 'InvalidInputError';
    this.problems = problems;
  }
}

export function formatProblem(p: FieldProblem): string {
  return `  - ${p.field}: ${p.message} (got ${JSON.stringify(p.value)}); ${p.fix}`;
}

/** Wraps anything thrown into a CorekubeError, keeping one that already is. */
export function asCorekubeError(err: unknown, code: ErrorCode = 'E_INTERNAL'): CorekubeError {
  if (err instanceof CorekubeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CorekubeError(code, message, { cause: err });
}
