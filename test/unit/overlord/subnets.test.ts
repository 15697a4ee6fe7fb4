import { describe, expect, it } from 'vitest';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { candidates, flannelConfig, subnetSpace, reservationValue, subnetCidr, subnetName } from '../../../overlord/pod-network/flannel.ts';

describe('flannel network config', () => {
  it('is the pod network with vxlan on port 8472 and the spec VNI', () => {
    const spec = parseClusterSpec({ flags: { 'pod-cidr': '10.32.0.0/16', 'vxlan-id': '7' } });
    expect(flannelConfig(spec)).toEqual({ Network: '10.32.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 7, Port: 8472 } });
  });
});

describe('subnet candidates', () => {
  const net = subnetSpace({ Network: '10.244.0.0/22', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } });

  it('names subnets in flannel key form', () => {
    expect(net.size).toBe(4);
    expect([0, 1, 2, 3].map((n) => subnetName(net, n))).toEqual(['10.244.0.0-24', '10.244.1.0-24', '10.244.2.0-24', '10.244.3.0-24']);
    expect(subnetCidr('10.244.3.0-24')).toBe('10.244.3.0/24');
  });

  it('visits every subnet exactly once, starting from a place fixed by the machine id', () => {
    const id = 'a'.repeat(32);
    const first = [...candidates(net, id)];
    expect(new Set(first).size).toBe(4);
    expect([...candidates(net, id)]).toEqual(first);
  });

  it('spreads machines over the network so racing allocators rarely collide', () => {
    const big = subnetSpace({ Network: '10.244.0.0/14', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } });
    const starts = new Set<string>();
    for (let i = 0; i < 200; i++) starts.add(candidates(big, i.toString(16).padStart(32, '0')).next().value!);
    expect(starts.size).toBeGreaterThan(170);
  });

  it('writes reservations in flannel lease format without backend data', () => {
    expect(JSON.parse(reservationValue('10.240.0.40'))).toEqual({ PublicIP: '10.240.0.40', PublicIPv6: null, BackendType: 'vxlan' });
  });
});
