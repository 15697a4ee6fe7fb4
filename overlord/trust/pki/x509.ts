// @peculiar/x509 resolves its ASN.1 schemas through tsyringe, which needs the Reflect metadata API loaded first.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { CorekubeError } from '../../../core/errors.ts';
import type { CertProfile, Usage } from './catalog.ts';
import type { CertFacts } from './plan.ts';

/**
 * The one module that touches @peculiar/x509 and WebCrypto: key generation, PEM encoding, signing and reading
 * certificates. Every key is ECDSA P-256 signed with SHA-256 (see README.md for why). The WebCrypto provider
 * is passed to every call (never set globally), so nothing else in the process is affected.
 */
const crypto = webcrypto as unknown as Crypto;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** PEM as files carry it: LF line ends and a final newline (so bundles can be concatenated). */
function pemText(pem: string): string {
  const lf = pem.replace(/\r\n/g, '\n');
  return lf.endsWith('\n') ? lf : `${lf}\n`;
}

export interface KeyPairHandle {
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
}

export async function generateKeyPair(): Promise<KeyPairHandle> {
  const pair = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  return { privateKey: pair.privateKey, publicKey: pair.publicKey };
}

/** PKCS#8 `PRIVATE KEY` PEM: read by kube-apiserver, etcd, flanneld, kubectl and openssl alike. */
export async function privateKeyPem(key: KeyPairHandle): Promise<string> {
  return pemText(x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', key.privateKey), 'PRIVATE KEY'));
}

/** SubjectPublicKeyInfo `PUBLIC KEY` PEM (the service-account public key file). */
export async function publicKeyPem(key: KeyPairHandle): Promise<string> {
  return pemText(x509.PemConverter.encode(await crypto.subtle.exportKey('spki', key.publicKey), 'PUBLIC KEY'));
}

/** Hex of the SubjectPublicKeyInfo: compares a key with a certificate's public key. */
export async function publicKeyId(key: KeyPairHandle): Promise<string> {
  return Buffer.from(await crypto.subtle.exportKey('spki', key.publicKey)).toString('hex');
}

/**
 * Imports a stored PKCS#8 P-256 key and derives its public half (WebCrypto cannot export a public key from a
 * private one directly: the JWK without `d` is the public key). `what` names the store entry in errors; the
 * key's content never appears in one.
 */
export async function importPrivateKey(pem: string, what: string): Promise<KeyPairHandle> {
  try {
    const der = x509.PemConverter.decodeFirst(pem);
    const privateKey = await crypto.subtle.importKey('pkcs8', der, EC, true, ['sign']);
    const jwk = await crypto.subtle.exportKey('jwk', privateKey);
    const publicKey = await crypto.subtle.importKey('jwk', { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, ext: true }, EC, true, ['verify']);
    return { privateKey, publicKey };
  } catch (cause) {
    throw new CorekubeError('E_PKI', `the stored key ${what} is not a PKCS#8 ECDSA P-256 private key`, {
      hint: `restore ${what} from a backup, or delete it and its certificate so a new pair is issued`,
      cause: new Error((cause as Error).name),
    });
  }
}

export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** A random positive 128-bit serial (RFC 5280 §4.1.2.2: at most 20 octets, unique per CA). */
export function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  // top bit clear (positive INTEGER), next bit set (no leading zero octet: always 16 octets, DER-minimal)
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return Buffer.from(bytes).toString('hex');
}

/** A self-signed CA: basicConstraints CA:TRUE pathlen 0 (no intermediates), keyCertSign + cRLSign, SKI. */
export async function createCaCertificate(key: KeyPairHandle, commonName: string, validity: Validity): Promise<string> {
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: [{ CN: [commonName] }],
      notBefore: validity.notBefore,
      notAfter: validity.notAfter,
      keys: { privateKey: key.privateKey, publicKey: key.publicKey },
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(key.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return pemText(cert.toString('pem'));
}

export interface Signer {
  /** the CA certificate PEM */
  readonly cert: string;
  readonly key: KeyPairHandle;
}

const EKU: Readonly<Record<Usage, x509.ExtendedKeyUsageType[]>> = {
  server: [x509.ExtendedKeyUsage.serverAuth],
  client: [x509.ExtendedKeyUsage.clientAuth],
  peer: [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
};

/**
 * A leaf for `profile`: CA:FALSE, keyUsage digitalSignature (ECDSA keys sign; keyEncipherment is RSA's),
 * the profile's extended key usage and SANs, SKI of the leaf key, AKI = the CA's SKI.
 */
export async function signCertificate(profile: CertProfile, publicKey: CryptoKey, signer: Signer, validity: Validity): Promise<string> {
  const ca = new x509.X509Certificate(signer.cert);
  const caKeyId = ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  if (caKeyId === undefined) throw new CorekubeError('E_PKI', `the ${profile.ca} CA certificate has no subject key identifier`, { hint: 'the CA was not made by corekube: restore corekube\'s CA files' });
  const names: x509.JsonGeneralNames = [
    ...profile.dnsNames.map((value) => ({ type: 'dns' as const, value })),
    ...profile.ipAddresses.map((value) => ({ type: 'ip' as const, value })),
  ];
  const subject: x509.JsonName = [...profile.organizations.map((o) => ({ O: [o] })), { CN: [profile.commonName] }];
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject,
      issuer: ca.subjectName,
      notBefore: validity.notBefore,
      notAfter: validity.notAfter,
      publicKey,
      signingKey: signer.key.privateKey,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(EKU[profile.usage], false),
        ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names, false)] : []),
        await x509.SubjectKeyIdentifierExtension.create(publicKey, false, crypto),
        new x509.AuthorityKeyIdentifierExtension(caKeyId, false),
      ],
    },
    crypto,
  );
  return pemText(cert.toString('pem'));
}

export interface CertificateInfo extends CertFacts {
  readonly serialNumber: string;
  readonly notBefore: number;
  readonly subjectKeyId: string | undefined;
  readonly isCa: boolean;
  /** key usage names (`digitalSignature`, `keyCertSign`, …) */
  readonly keyUsages: readonly string[];
}

/** Reads the facts of a certificate PEM. `what` names the store entry in errors. */
export function readCertificate(pem: string, what: string): CertificateInfo {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(pem);
  } catch (cause) {
    throw new CorekubeError('E_PKI', `the stored certificate ${what} cannot be parsed`, {
      hint: `delete ${what} so it is issued again (a CA certificate is re-made from its stored key)`,
      cause,
    });
  }
  const ekus = cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages.map(String) ?? [];
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.toJSON() ?? [];
  return {
    commonName: cert.subjectName.getField('CN')[0] ?? '',
    organizations: cert.subjectName.getField('O'),
    dnsNames: san.filter((n) => n.type === 'dns').map((n) => n.value),
    ipAddresses: san.filter((n) => n.type === 'ip').map((n) => n.value),
    usage: usageOf(ekus),
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
    authorityKeyId: cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId,
    subjectKeyId: cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    publicKey: Buffer.from(cert.publicKey.rawData).toString('hex'),
    serialNumber: cert.serialNumber,
    isCa: cert.getExtension(x509.BasicConstraintsExtension)?.ca === true,
    keyUsages: keyUsageNames(cert.getExtension(x509.KeyUsagesExtension)?.usages ?? 0),
  };
}

/** True when `certPem` carries a valid signature by the CA certificate `caPem`'s key. */
export async function isSignedBy(certPem: string, caPem: string): Promise<boolean> {
  const ca = new x509.X509Certificate(caPem);
  return new x509.X509Certificate(certPem).verify({ publicKey: ca.publicKey, signatureOnly: true }, crypto);
}

function keyUsageNames(flags: number): string[] {
  return Object.entries(x509.KeyUsageFlags)
    .filter((e): e is [string, number] => typeof e[1] === 'number' && (flags & e[1]) !== 0)
    .map(([name]) => name);
}

function usageOf(ekus: readonly string[]): Usage | 'other' {
  const server = ekus.includes(x509.ExtendedKeyUsage.serverAuth);
  const client = ekus.includes(x509.ExtendedKeyUsage.clientAuth);
  if (ekus.length === 2 && server && client) return 'peer';
  if (ekus.length === 1 && server) return 'server';
  if (ekus.length === 1 && client) return 'client';
  return 'other';
}
