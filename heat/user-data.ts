import { CorekubeError } from '../core/errors.ts';
import { PLACEHOLDERS, type PlaceholderName } from '../cloud-config/placeholders.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { strReplace, type HeatValue } from './hot.ts';

export type Role = 'discovery' | 'overlord' | 'overlord-standby' | 'master' | 'minion';

/**
 * The cloud-config room's renderer (cloud-config/index.ts renderUserData): the complete user_data text of a
 * role, with the PLACEHOLDERS tokens left verbatim. Passed in, so heat/ stays a pure function of its inputs.
 */
export type RenderUserData = (role: Role, spec: ClusterSpec) => string;

/** What the template gives each placeholder of one server's user_data (a Heat function or a literal). */
export type PlaceholderValues = Partial<Record<PlaceholderName, HeatValue>>;

/**
 * The `user_data` property of a server: one `str_replace` over the rendered text. Every token the text
 * contains gets its value from `values`, or '' when this server has none (its consumers read '' as "not
 * given", e.g. a machine with no wait condition to signal). Only tokens the text contains become params, so
 * a server depends only on what its own user_data uses. A token listed in `forbidden` is a broken contract
 * with cloud-config (for masters and minions: the counts, which would replace every server on a scale-up)
 * and fails generation.
 */
export function userDataProperty(
  role: Role,
  text: string,
  values: PlaceholderValues,
  forbidden: readonly PlaceholderName[] = [],
): HeatValue {
  const params: Record<string, HeatValue> = {};
  for (const name of Object.keys(PLACEHOLDERS) as PlaceholderName[]) {
    const token = PLACEHOLDERS[name];
    if (!text.includes(token)) continue;
    if (forbidden.includes(name)) {
      throw new CorekubeError('E_INTERNAL', `the ${role} user_data contains the placeholder ${token}, which a ${role} must not receive`, {
        hint: `cloud-config/ must not use PLACEHOLDERS.${name} for the ${role} role`,
      });
    }
    params[token] = values[name] ?? '';
  }
  return strReplace(text, params);
}
