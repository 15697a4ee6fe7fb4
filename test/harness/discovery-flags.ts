import path from 'node:path';
import { bootPlan } from '../../cloud-config/index.ts';
import type { ClusterSpec } from '../../spec/cluster-spec.ts';

/**
 * The TLS-related flags of the discovery-etcd.service cloud-config renders (its ExecStart), with the files it
 * names moved to `dir`: a test's etcd then authenticates clients exactly as discovery's will.
 */
export function discoveryTlsFlags(spec: ClusterSpec, dir: string): string[] {
  const unit = bootPlan('discovery', spec).units.find((u) => u.name === 'discovery-etcd.service')!.content;
  const exec = /^ExecStart=([\s\S]*?)(?:\n(?![ \t])|$)/m.exec(unit.replace(/\\\n\s*/g, ' '))![1]!;
  const tlsFlag = /^--(cert-file|key-file|trusted-ca-file|client-cert-auth|auto-tls|client-crl-file)(=|$)/;
  return exec
    .split(/\s+/)
    .filter((a) => tlsFlag.test(a))
    .map((a) => a.replace(/=(\/\S+)$/, (_, file: string) => `=${path.join(dir, path.basename(file))}`));
}
