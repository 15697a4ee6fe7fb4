import { getAttr, type HeatValue, type Resource } from './hot.ts';

/**
 * The cluster's join token: the password of discovery's `joiner` etcd user, which may only register machine
 * records. Letters and digits only, so it needs no quoting in a unit file, a URL or JSON. It appears in
 * user_data and nowhere else: no output carries it.
 */
export const JOIN_TOKEN = 'join_token';
export const JOIN_TOKEN_LENGTH = 48;

export const joinTokenResource: Resource = {
  type: 'OS::Heat::RandomString',
  properties: { length: JOIN_TOKEN_LENGTH, character_classes: [{ class: 'lettersdigits', min: 1 }] },
};

export const joinTokenValue: HeatValue = getAttr(JOIN_TOKEN, 'value');
