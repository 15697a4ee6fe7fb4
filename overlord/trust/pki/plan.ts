import type { CaKind, CertProfile, Usage } from './catalog.ts';

/**
 * What to issue, decided from what exists (pure): a certificate is (re-)issued only when it is missing,
 * expires within RENEW_BEFORE_MS, no longer matches its profile (subject, SANs, usage), was signed by
 * another CA key, or its key is missing or does not match it. Otherwise it is kept as is — so running the
 * PKI twice issues nothing the second time, and a restarted overlord re-issues nothing.
 */
export const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;

/** The facts of an issued certificate that the plan compares with its profile (read by x509.ts). */
export interface CertFacts {
  readonly commonName: string;
  readonly organizations: readonly string[];
  readonly dnsNames: readonly string[];
  readonly ipAddresses: readonly string[];
  /** `other` = an extended key usage corekube never issues */
  readonly usage: Usage | 'other';
  readonly notAfter: number;
  /** hex key id of the signing CA (authority key identifier) */
  readonly authorityKeyId: string | undefined;
  /** hex of the certificate's SubjectPublicKeyInfo */
  readonly publicKey: string;
}

/** What the store holds for one profile's name. */
export interface Existing {
  readonly cert: CertFacts | undefined;
  /** hex SubjectPublicKeyInfo derived from the stored private key; undefined = no key stored */
  readonly keyPublicKey: string | undefined;
}

export type IssueReason =
  | 'missing'
  | 'key-missing'
  | 'key-mismatch'
  | 'expiring'
  | 'subject-changed'
  | 'sans-changed'
  | 'usage-changed'
  | 'issuer-changed';

export interface Issuance {
  readonly profile: CertProfile;
  readonly reason: IssueReason;
  /** true: sign a new cert for the stored key; false: make a new key first */
  readonly keepKey: boolean;
}

/**
 * The issuances needed so every profile has a valid certificate, in profile order.
 * `caKeyIds` are the subject key ids of the current CAs.
 */
export function planIssuance(
  profiles: readonly CertProfile[],
  existing: ReadonlyMap<string, Existing>,
  caKeyIds: Readonly<Record<CaKind, string | undefined>>,
  now: number,
  renewBeforeMs = RENEW_BEFORE_MS,
): Issuance[] {
  const out: Issuance[] = [];
  for (const profile of profiles) {
    const reason = reasonToIssue(profile, existing.get(profile.name), caKeyIds[profile.ca], now, renewBeforeMs);
    if (reason === undefined) continue;
    const keyPresent = existing.get(profile.name)?.keyPublicKey !== undefined;
    // a key is replaced only when absent; a mismatched pair gets a new cert for the stored key
    out.push(Object.freeze({ profile, reason, keepKey: keyPresent }));
  }
  return out;
}

export function reasonToIssue(profile: CertProfile, found: Existing | undefined, caKeyId: string | undefined, now: number, renewBeforeMs = RENEW_BEFORE_MS): IssueReason | undefined {
  if (found?.keyPublicKey === undefined) return found?.cert === undefined ? 'missing' : 'key-missing';
  const cert = found.cert;
  if (cert === undefined) return 'missing';
  if (cert.publicKey !== found.keyPublicKey) return 'key-mismatch';
  if (caKeyId === undefined || cert.authorityKeyId !== caKeyId) return 'issuer-changed';
  if (cert.commonName !== profile.commonName || !sameSet(cert.organizations, profile.organizations)) return 'subject-changed';
  if (!sameSet(cert.dnsNames, profile.dnsNames) || !sameSet(cert.ipAddresses, profile.ipAddresses)) return 'sans-changed';
  if (cert.usage !== profile.usage) return 'usage-changed';
  if (cert.notAfter - now < renewBeforeMs) return 'expiring';
  return undefined;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every((x) => sb.has(x));
}
