import { PLACEHOLDERS, type PlaceholderName } from './placeholders.ts';

/**
 * Replaces every placeholder token in a rendered user_data with its value, '' when none is given (what
 * Heat's str_replace does with the params the template passes). Used by `corekube cloud-config render`.
 * Values must be single-line. In a #cloud-config every token sits alone on a line of a YAML block scalar or
 * inside a double-quoted scalar, where a single line of base64, digits, a URL or a token is safe, and the value
 * goes in as it is. In an Ignition config (ignition.ts) a token is the data of a data URL: in `data:,<token>`
 * the value is percent-escaped (Ignition unescapes it, so a URL's own `%3A` or `#` arrives intact), in
 * `data:;base64,<token>` it must be base64 (Ignition decodes it). Heat's str_replace fills the same tokens
 * unescaped — its values (a signal endpoint, a base64url token, base64, digits) need no escaping.
 */
export function fillPlaceholders(text: string, values: Partial<Record<PlaceholderName, string>>): string {
  const ignition = text.startsWith('{');
  let out = text;
  for (const name of Object.keys(PLACEHOLDERS) as PlaceholderName[]) {
    const value = values[name] ?? '';
    const token = PLACEHOLDERS[name];
    if (/[\r\n]/.test(value)) throw new RangeError(`the value of placeholder ${name} must be one line`);
    if (ignition) {
      if (out.includes(`data:;base64,${token}`) && !BASE64.test(value)) {
        throw new RangeError(`the value of placeholder ${name} must be base64 (A-Z, a-z, 0-9, +, /, = padding): got ${JSON.stringify(value.slice(0, 40))}`);
      }
      out = out.split(`data:;base64,${token}`).join(`data:;base64,${value}`);
      out = out.split(token).join(encodeURIComponent(value));
    } else {
      out = out.split(token).join(value);
    }
  }
  return out;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The placeholders a rendered text contains, in PLACEHOLDERS order. */
export function placeholdersIn(text: string): PlaceholderName[] {
  return (Object.keys(PLACEHOLDERS) as PlaceholderName[]).filter((name) => text.includes(PLACEHOLDERS[name]));
}
