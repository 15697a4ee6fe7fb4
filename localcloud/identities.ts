import { createHash } from 'node:crypto';

/**
 * Made-up machine identities for tests and benchmarks that stand in for machines: a well-formed ed25519 host key
 * line (a real key blob shape, so fingerprints and parsing work; no private half exists), and a join nonce with the
 * digest a join request carries (what corekube-announce writes, overlord/discovery/admission.ts checks).
 */
export function syntheticHostKey(seed: string): string {
  const name = Buffer.from('ssh-ed25519');
  const len = (n: number) => Buffer.from([0, 0, 0, n]);
  return `ssh-ed25519 ${Buffer.concat([len(name.length), name, len(32), createHash('sha256').update(`host key ${seed}`).digest()]).toString('base64')}`;
}

export function syntheticNonce(seed: string): { readonly nonce: string; readonly digest: string } {
  const nonce = createHash('sha256').update(`nonce ${seed}`).digest('hex');
  return { nonce, digest: createHash('sha256').update(nonce).digest('hex') };
}
