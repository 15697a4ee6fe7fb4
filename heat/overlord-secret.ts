import { getAttr, type HeatValue, type Resource } from './hot.ts';

/**
 * The overlord secret: shared by every overlord server of the stack (the bootstrap one and the standbys) and
 * by nothing else. The bootstrap overlord seals its state (SSH key, CAs, discovery passwords) with a key
 * derived from it in discovery; standbys open it (overlord/trust/shared-state.ts). Letters and digits only, like the
 * join token; it appears in the overlords' user_data (a 0600 file) and nowhere else: no output carries it.
 */
export const OVERLORD_SECRET = 'overlord_secret';
export const OVERLORD_SECRET_LENGTH = 64;

export const overlordSecretResource: Resource = {
  type: 'OS::Heat::RandomString',
  properties: { length: OVERLORD_SECRET_LENGTH, character_classes: [{ class: 'lettersdigits', min: 1 }] },
};

export const overlordSecretValue: HeatValue = getAttr(OVERLORD_SECRET, 'value');
