import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../overlord/edges/log.ts';

/** A real pino logger (JSON, debug) writing into memory: what a test asserts about the overlord's log. */
export function captureLog(): { log: Logger; text: () => string; events: () => Record<string, unknown>[]; event: (name: string) => Record<string, unknown> | undefined } {
  let text = '';
  const destination = new Writable({
    write(chunk, _enc, cb) {
      text += String(chunk);
      cb();
    },
  });
  const log = createLogger({ destination, format: 'json', level: 'debug' });
  const events = () => text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, text: () => text, events, event: (name: string) => events().find((e) => e.event === name) };
}
