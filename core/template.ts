import Handlebars from 'handlebars';
import { readFileSync } from 'node:fs';
import { CorekubeError } from './errors.ts';

/**
 * Templates are data: files rendered by this one function with `strict: true`, so a missing variable throws
 * instead of rendering an empty `ExecStart=`. `noEscape`: the output is never HTML.
 */
const env = Handlebars.create();
const cache = new Map<string, HandlebarsTemplateDelegate>();

export function renderTemplate<C extends object>(source: string, context: C, name = 'template'): string {
  let compiled = cache.get(source);
  if (!compiled) {
    compiled = env.compile(source, { strict: true, noEscape: true });
    cache.set(source, compiled);
  }
  try {
    return compiled(context);
  } catch (cause) {
    throw new CorekubeError('E_TEMPLATE', `rendering ${name} failed: ${(cause as Error).message}`, {
      hint: 'the template uses a value its typed context does not provide: add it to the context type and its builder',
      cause,
    });
  }
}

export function renderTemplateFile<C extends object>(path: string, context: C): string {
  return renderTemplate(readFileSync(path, 'utf8'), context, path);
}
