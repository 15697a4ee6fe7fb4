import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';
import pretty, { prettyFactory } from 'pino-pretty';
import { CorekubeError } from '../../core/errors.ts';

/**
 * The overlord's logs: pino, one event a line. JSON by default (what `docker logs overlord` collects),
 * pretty when stdout is a TTY or with `--log-format pretty`. Context is bound once with child loggers
 * (`machine`, `role`, `step`); events carry an `event` name a person and a machine can both follow:
 *
 *   machine.discovered / machine.invalid / machine.gone
 *   step.start / step.done {durationMs} / step.retry {reason, attempt, nextRetryMs} / step.failed
 *   machine.deployed {durationMs} / machine.failed {reason}
 *   reconcile.summary ("3/4 machines deployed, 1 failed: …") / cluster.ready
 *
 * Never log file contents, keys, tokens or passwords: the redact list below is a second line of defence
 * for fields that must never appear, not a licence to pass secrets to the logger.
 */
export type Logger = PinoLogger;
export type LogFormat = 'json' | 'pretty';
export const LOG_FORMATS: readonly LogFormat[] = ['json', 'pretty'];

export interface LoggerOptions {
  /** default: pretty when `destination` is a TTY, else json */
  readonly format?: LogFormat;
  readonly level?: string;
  /** default: stdout */
  readonly destination?: NodeJS.WritableStream & { isTTY?: boolean };
}

/** How a person reads the events: one line each, "12:00:01.234 INFO: minion-3 [start:kubelet.service] step done  durationMs: 812". */
const PRETTY = Object.freeze({
  singleLine: true,
  ignore: 'pid,name,event,machine,role,hostname,step,steps',
  translateTime: 'SYS:HH:MM:ss.l',
  messageFormat: '{if hostname}{hostname} {end}{if step}[{step}] {end}{msg}',
});

const REDACT = ['content', 'stdin', 'files', 'password', 'token', 'privateKey', '*.content', '*.stdin', '*.password', '*.token', '*.privateKey'];

export function createLogger(options: LoggerOptions = {}): Logger {
  const destination = options.destination ?? process.stdout;
  const format = options.format ?? (destination.isTTY ? 'pretty' : 'json');
  const base = {
    level: options.level ?? 'info',
    base: { name: 'overlord' },
    redact: { paths: REDACT, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  if (format === 'pretty') {
    // a stream in this thread (not a transport worker): lines are written before the process exits
    const stream = pretty({
      destination: destination as unknown as DestinationStream,
      colorize: destination.isTTY === true,
      sync: true,
      ...PRETTY,
    });
    return pino(base, stream);
  }
  return pino(base, destination as unknown as DestinationStream);
}

/**
 * The pretty format for JSON log lines read back (`docker logs overlord`): each line of the overlord's JSON
 * output as `--log-format pretty` would have written it; a line that is not a log event passes unchanged.
 */
export function prettyLogLines(options: { colorize?: boolean } = {}): (line: string) => string {
  const prettify = prettyFactory({ ...PRETTY, colorize: options.colorize ?? false });
  return (line) => {
    if (!line.startsWith('{')) return line;
    try {
      return prettify(line).trimEnd();
    } catch {
      return line;
    }
  };
}

/** A logger that drops everything (tests that assert state, not log lines). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** The fields a failure is logged with: code, message, hint — never the cause's stack or its data. */
export function errorFields(err: unknown): { code: string; reason: string; hint?: string } {
  if (err instanceof CorekubeError) return { code: err.code, reason: err.message, ...(err.hint ? { hint: err.hint } : {}) };
  return { code: 'E_INTERNAL', reason: err instanceof Error ? err.message : String(err) };
}

export function parseLogFormat(value: string | undefined): LogFormat | undefined {
  if (value === undefined) return undefined;
  if ((LOG_FORMATS as readonly string[]).includes(value)) return value as LogFormat;
  throw new CorekubeError('E_USAGE', `--log-format ${JSON.stringify(value)} is not one of ${LOG_FORMATS.join(', ')}`, {
    hint: 'use --log-format json (default when not a TTY) or --log-format pretty',
  });
}
