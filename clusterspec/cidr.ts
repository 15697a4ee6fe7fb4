/** IPv4 addresses and CIDR blocks as numbers: parsing, containment, overlap and host arithmetic. Pure. */

export interface Cidr {
  readonly text: string;
  readonly network: number; // unsigned 32-bit
  readonly prefix: number;
}

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

/** Distinct addresses in numeric order (anything not IPv4 first). */
export function sortIps(ips: readonly string[]): string[] {
  return [...new Set(ips)].sort((a, b) => (parseIpv4(a) ?? 0) - (parseIpv4(b) ?? 0));
}

export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

/** Parses `a.b.c.d/len`; rejects host bits set (`10.0.0.1/24`), since that is almost always a typo. */
export function parseCidr(text: string): Cidr | { error: string } {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(text);
  if (!m) return { error: 'is not an IPv4 CIDR of the form a.b.c.d/len' };
  const addr = parseIpv4(m[1]!);
  const prefix = Number(m[2]);
  if (addr === undefined) return { error: 'has an invalid IPv4 address' };
  if (prefix > 32) return { error: 'has a prefix length over 32' };
  const size = 2 ** (32 - prefix);
  if (addr % size !== 0) {
    return { error: `has host bits set; the network is ${formatIpv4(addr - (addr % size))}/${prefix}` };
  }
  return { text, network: addr, prefix };
}

export function isCidr(v: Cidr | { error: string }): v is Cidr {
  return !('error' in v);
}

export function cidrSize(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.network < b.network + cidrSize(b) && b.network < a.network + cidrSize(a);
}

