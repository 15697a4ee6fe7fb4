import { PLACEHOLDERS, type PlaceholderName } from './placeholders.ts';

/**
 * Replaces every placeholder token in a rendered user_data with its value, '' when none is given (what
 * Heat's str_replace does with the params the template passes). Used by `corekube cloud-config render`.
 * Values must be single-line: every token sits alone on a line of a YAML block scalar or inside a
 * double-quoted scalar, where a single line of base64, digits, a URL or a token is safe.
 */
export function fillPlaceholders(text: string, values: Partial<Record<PlaceholderName, string>>): string {
  let out = text;
  for (const name of Object.keys(PLACEHOLDERS) as PlaceholderName[]) {
    const value = values[name] ?? '';
    if (/[\r\n]/.test(value)) throw new RangeError(`the value of placeholder ${name} must be one line`);
    out = out.split(PLACEHOLDERS[name]).join(value);
  }
  return out;
}

/** The placeholders a rendered text contains, in PLACEHOLDERS order. */
export function placeholdersIn(text: string): PlaceholderName[] {
  return (Object.keys(PLACEHOLDERS) as PlaceholderName[]).filter((name) => text.includes(PLACEHOLDERS[name]));
}
