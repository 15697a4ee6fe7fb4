import type { HeatValue, Output, Parameter, Resource } from '../../../heat/hot.ts';
import { HOT_VERSION } from '../../../heat/hot.ts';

/**
 * Building blocks of the local cloud's provider templates: stand-ins that Heat's environment maps
 * OS::Nova::Server and the OS::Neutron::* types corekube uses to. Heat checks a provider against the real
 * type (its "facade"): every required property must be a parameter of the same kind, every attribute an
 * output. Kinds map as: String → string, Integer/Number → number, Boolean → boolean, List →
 * comma_delimited_list, Map → json.
 *
 * Lists of maps (a server's `networks`, a port's `fixed_ips`, a subnet's `allocation_pools`) reach a
 * comma_delimited_list parameter flattened by Heat into `.member.<i>.<key>=<value>` strings; `members()`
 * turns them back into a list of maps, with Heat's own yaql.
 */
export interface ProviderTemplate {
  heat_template_version: typeof HOT_VERSION;
  description: string;
  parameters: Record<string, Parameter>;
  conditions?: Record<string, HeatValue>;
  resources: Record<string, Resource>;
  outputs: Record<string, Output>;
}

type Kind = 'string' | 'number' | 'boolean' | 'list' | 'map';

const TYPES: Readonly<Record<Kind, Parameter['type']>> = {
  string: 'string', number: 'number', boolean: 'boolean', list: 'comma_delimited_list', map: 'json',
};

/**
 * One parameter per property of the real type. `required` properties get no default (as in the real
 * type); the others default to what the real type does when the property is left out.
 */
export function param(kind: Kind, description: string, fallback?: string | number | boolean | string[] | Record<string, never>): Parameter {
  const p: Parameter = { type: TYPES[kind], label: description.split(/[:( ]/)[0]!, description };
  if (fallback !== undefined) (p as { default?: unknown }).default = fallback;
  return p;
}

export const output = (description: string, value: HeatValue): Output => ({ description, value });

/** yaql over named inputs (each a Heat function), e.g. yaql('$.data.a', { a: getParam('x') }). */
export const yaql = (expression: string, data: Record<string, HeatValue>): HeatValue => ({ yaql: { expression, data } });

/** yaql chain: a flattened `.member.<i>.<key>=<value>` list → a list of maps, in index order. */
export const MEMBERS_CHAIN =
  '.where($.startsWith(".member.")).select($.substring(8).split("=", 1))' +
  '.select([$[0].split(".", 1)[0], $[0].split(".", 1)[1], $[1]])' +
  '.groupBy(int($[0]), [$[1], $[2]]).orderBy($[0]).select($[1].toDict($[0], $[1]))';

/** Parameter `name` (a list of maps the template gave the property) as that list of maps again. */
export function members(name: string): HeatValue {
  return yaql(`$.data.list${MEMBERS_CHAIN}`, { list: { get_param: name } });
}

/** The nested stack's own id: what `get_resource` of the mapped resource returns (else it would be an ARN). */
export const STACK_ID_OUTPUT: Record<string, Output> = {
  'OS::stack_id': output('The id of this resource: the id of the nested stack standing in for it.', { get_param: 'OS::stack_id' }),
};

export function template(description: string, parts: Omit<ProviderTemplate, 'heat_template_version' | 'description'>): ProviderTemplate {
  return { heat_template_version: HOT_VERSION, description, ...parts };
}
