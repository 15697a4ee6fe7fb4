import type { FieldProblem } from '../core/errors.ts';
import { envNameOf, SPEC_FIELDS, type Field } from './fields.ts';

/**
 * Where each field's value comes from — a flag, then the environment, then the file, then its default — and
 * the raw value coerced to its kind. Problems are collected, never thrown (the parser reports them all at once).
 */
export interface SpecSources {
  /**
   * `--flag value` pairs, keys without dashes (`masters`, `pod-cidr`): strings, except a `digests` field's
   * value, which the CLI has already read from the file the flag names (cli/spec-options.ts).
   */
  flags?: Readonly<Record<string, unknown>>;
  /** The parsed YAML config file, if one was given. */
  file?: unknown;
  /** Where the file came from, for error messages. */
  fileName?: string;
  env?: Readonly<Record<string, string | undefined>>;
}

export interface Gathered {
  /** each field's value as given, by path */
  readonly raw: ReadonlyMap<string, unknown>;
  /** where each field's value came from (`--flag`, `COREKUBE_…`, or its path), for messages */
  readonly where: ReadonlyMap<string, string>;
  /** each field's value coerced to its kind (undefined when it is not one) */
  readonly values: ReadonlyMap<string, unknown>;
}

/** Every field's value from the sources, coerced; problems appended. */
export function gather(sources: SpecSources, problems: FieldProblem[]): Gathered {
  const flags = sources.flags ?? {};
  const env = sources.env ?? {};
  const fileValues = flattenFile(sources.file, sources.fileName ?? 'config file', problems);
  const raw = new Map<string, unknown>();
  const where = new Map<string, string>();
  for (const f of SPEC_FIELDS) {
    const envName = envNameOf(f.flag);
    if (flags[f.flag] !== undefined) {
      raw.set(f.path, flags[f.flag]);
      where.set(f.path, `--${f.flag}`);
    } else if (env[envName] !== undefined && env[envName] !== '') {
      raw.set(f.path, env[envName]);
      where.set(f.path, envName);
    } else if (fileValues.has(f.path)) {
      raw.set(f.path, fileValues.get(f.path));
      where.set(f.path, f.path);
    } else {
      raw.set(f.path, f.default);
      where.set(f.path, f.path);
    }
  }
  for (const key of Object.keys(flags)) {
    if (flags[key] !== undefined && !SPEC_FIELDS.some((f) => f.flag === key)) {
      problems.push({ field: `--${key}`, value: flags[key], message: 'is not a cluster spec option', fix: 'run with --help to list the options' });
    }
  }

  const values = new Map<string, unknown>();
  for (const f of SPEC_FIELDS) {
    const v = coerce(f, raw.get(f.path), where.get(f.path)!, problems);
    values.set(f.path, v);
  }
  return { raw, where, values };
}

function coerce(f: Field, v: unknown, where: string, problems: FieldProblem[]): unknown {
  if (v === undefined || v === null) return undefined;
  switch (f.kind) {
    case 'string':
      if (typeof v === 'string' && v.trim() !== '') return v.trim();
      if (typeof v === 'number') return String(v);
      problems.push({ field: where, value: v, message: 'must be a non-empty string', fix: `set ${f.path} to a value like ${JSON.stringify(f.default ?? 'name')}` });
      return undefined;
    case 'int': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : NaN;
      if (Number.isInteger(n)) return n;
      problems.push({ field: where, value: v, message: 'must be a whole number', fix: `for example ${f.default}` });
      return undefined;
    }
    case 'list':
      if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
      if (typeof v === 'string') return v.split(',').map((s) => s.trim()).filter((s) => s !== '');
      problems.push({ field: where, value: v, message: 'must be a list of strings', fix: 'give a YAML list or a comma-separated string' });
      return undefined;
    case 'digests': {
      const d = digestMap(v);
      if (d) return d;
      problems.push({ field: where, value: typeof v === 'string' ? v : '(not a digest map)', message: 'must be a map of mirror paths to sha256 digests, or the corekube-mirror.json of corekube mirror build', fix: 'pass the file corekube mirror build wrote (--release-digests DIR/corekube-mirror.json)' });
      return undefined;
    }
  }
}

/**
 * A digest map from either form a user has: `{ "<mirror path>": "<hex>" }` (cluster.yaml, overlord.yaml) or
 * a mirror manifest (`{ artifacts: [{ path, sha256 }] }`, release/mirror-manifest.ts). undefined if neither.
 */
function digestMap(v: unknown): Record<string, string> | undefined {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  if (Array.isArray(o.artifacts)) {
    const out: Record<string, string> = {};
    for (const a of o.artifacts as unknown[]) {
      const e = a as Record<string, unknown> | null;
      if (!e || typeof e.path !== 'string' || typeof e.sha256 !== 'string') return undefined;
      out[e.path] = e.sha256;
    }
    return out;
  }
  if (Object.values(o).every((x) => typeof x === 'string')) return { ...(o as Record<string, string>) };
  return undefined;
}

/** Flattens the YAML file into dotted paths, reporting unknown and misplaced keys. */
function flattenFile(file: unknown, fileName: string, problems: FieldProblem[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (file === undefined || file === null) return out;
  const known = new Set(SPEC_FIELDS.map((f) => f.path));
  const prefixes = new Set(SPEC_FIELDS.flatMap((f) => f.path.split('.').slice(0, -1).map((_, i, a) => a.slice(0, i + 1).join('.'))));
  const walk = (node: unknown, path: string) => {
    if (node !== null && typeof node === 'object' && !Array.isArray(node) && (path === '' || prefixes.has(path))) {
      for (const [k, v] of Object.entries(node)) walk(v, path === '' ? k : `${path}.${k}`);
      return;
    }
    if (known.has(path)) {
      out.set(path, node);
      return;
    }
    const near = [...known].find((k) => k.toLowerCase().replace(/[^a-z]/g, '') === path.toLowerCase().replace(/[^a-z]/g, ''));
    problems.push({
      field: `${fileName}: ${path || '(top level)'}`,
      value: node,
      message: path === '' ? 'must be a mapping of cluster settings' : 'is not a cluster spec field',
      fix: near ? `did you mean ${near}?` : `known fields: ${[...known].join(', ')}`,
    });
  };
  walk(file, '');
  return out;
}
