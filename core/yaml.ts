import YAML from 'yaml';

/**
 * The one YAML serialiser: objects in, text out. No anchors/aliases (Heat and cloud-init readers differ on
 * them), no line folding (PEM blocks and long commands stay intact), keys in insertion order.
 */
export function toYaml(value: unknown, options: { header?: string } = {}): string {
  const body = YAML.stringify(value, {
    aliasDuplicateObjects: false,
    lineWidth: 0,
    minContentWidth: 0,
    indent: 2,
    singleQuote: false,
  });
  return options.header ? `${options.header}\n${body}` : body;
}

/** Parses YAML text strictly (duplicate keys and unknown tags are errors). */
export function parseYaml(text: string): unknown {
  return YAML.parse(text, { uniqueKeys: true, strict: true, prettyErrors: true });
}
