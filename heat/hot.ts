/**
 * The few HOT (Heat Orchestration Template) shapes corekube builds, as plain objects, and constructors for
 * Heat's intrinsic functions. Every template is assembled from these and serialised once by core/yaml.ts;
 * nothing here knows about roles or clusters.
 */
export const HOT_VERSION = '2021-04-16';

/** A Heat intrinsic function call or any value that may contain one. */
export type HeatValue = string | number | boolean | null | HeatValue[] | { [key: string]: HeatValue };

export interface ParameterConstraint {
  allowed_values?: (string | number)[];
  range?: { min?: number; max?: number };
  length?: { min?: number; max?: number };
  allowed_pattern?: string;
  custom_constraint?: string;
  description: string;
}

export interface Parameter {
  type: 'string' | 'number' | 'comma_delimited_list' | 'json' | 'boolean';
  label: string;
  description: string;
  default?: string | number | string[];
  hidden?: boolean;
  constraints?: ParameterConstraint[];
}

export interface Resource {
  type: string;
  properties?: { [key: string]: HeatValue };
  depends_on?: string[];
  condition?: string;
  /** the resource's metadata (readable through Heat's API: by the project, and by the resource's own stack user) */
  metadata?: { [key: string]: HeatValue };
}

export interface Output {
  description: string;
  value: HeatValue;
}

export interface Template {
  heat_template_version: typeof HOT_VERSION;
  description: string;
  parameter_groups?: { label: string; description: string; parameters: string[] }[];
  parameters: Record<string, Parameter>;
  conditions?: Record<string, HeatValue>;
  resources: Record<string, Resource>;
  outputs: Record<string, Output>;
}

export const getParam = (name: string): HeatValue => ({ get_param: name });
export const getResource = (name: string): HeatValue => ({ get_resource: name });
export const getAttr = (resource: string, ...path: HeatValue[]): HeatValue => ({ get_attr: [resource, ...path] });
export const strReplace = (template: HeatValue, params: Record<string, HeatValue>): HeatValue => ({ str_replace: { template, params } });
export const strSplit = (delimiter: string, value: HeatValue, index: number): HeatValue => ({ str_split: [delimiter, value, index] });
export const ifCondition = (condition: string, then: HeatValue, otherwise: HeatValue): HeatValue => ({ if: [condition, then, otherwise] });
