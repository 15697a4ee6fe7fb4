import { describe, expect, it } from 'vitest';
import { haproxyConfig, loadBalancersOf, memberName, parseStats, type OctaviaResource } from '../../../localcloud/load-balancer.ts';

/** What the stand-ins' `given` outputs hold for corekube's API load balancer with three masters. */
const RESOURCES: OctaviaResource[] = [
  { type: 'OS::Octavia::LoadBalancer', id: 'lb1', given: { name: 'demo-api', vip_address: '10.200.60.12', vip_subnet: 's', admin_state_up: true } },
  { type: 'OS::Octavia::Listener', id: 'l1', given: { protocol_port: 6443, protocol: 'TCP', loadbalancer: 'lb1', allowed_cidrs: ['10.200.60.0/24', '203.0.113.0/24'], admin_state_up: true } },
  { type: 'OS::Octavia::Pool', id: 'p1', given: { lb_algorithm: 'LEAST_CONNECTIONS', listener: 'l1', loadbalancer: '', protocol: 'TCP', admin_state_up: true } },
  { type: 'OS::Octavia::HealthMonitor', id: 'h1', given: { delay: 5, expected_codes: '200', http_method: 'GET', max_retries: 2, pool: 'p1', timeout: 4, type: 'HTTPS', url_path: '/readyz', admin_state_up: true } },
  ...['10.200.60.22', '10.200.60.20', '10.200.60.21'].map((address, i) => ({ type: 'OS::Octavia::PoolMember', id: `m${i}`, given: { pool: 'p1', address, protocol_port: 6443, weight: 1, admin_state_up: true } })),
];

describe("the local cloud's load balancer", () => {
  it('links the Octavia resources by the ids they give each other: VIP, listener, pool members in address order, monitor', () => {
    expect(loadBalancersOf(RESOURCES)).toEqual([
      {
        id: 'lb1',
        name: 'demo-api',
        vip: '10.200.60.12',
        listeners: [
          {
            id: 'l1',
            port: 6443,
            protocol: 'TCP',
            allowedCidrs: ['10.200.60.0/24', '203.0.113.0/24'],
            algorithm: 'LEAST_CONNECTIONS',
            members: ['10.200.60.20', '10.200.60.21', '10.200.60.22'].map((address) => ({ address, port: 6443, weight: 1, enabled: true })),
            monitor: { type: 'HTTPS', method: 'GET', urlPath: '/readyz', expectedCodes: '200', delaySec: 5, timeoutSec: 4, maxRetries: 2 },
          },
        ],
      },
    ]);
  });

  it('serves the listener on the VIP to the allowed CIDRs only, probing each member with HTTPS GET /readyz', () => {
    const cfg = haproxyConfig(loadBalancersOf(RESOURCES), { statsSocket: '/run/x/haproxy.sock' });
    expect(cfg).toContain('  stats socket /run/x/haproxy.sock mode 600 level admin\n');
    expect(cfg).toContain('frontend lb-10-200-60-12-6443\n  bind 10.200.60.12:6443\n  tcp-request connection reject unless { src 10.200.60.0/24 203.0.113.0/24 }\n');
    expect(cfg).toContain('  balance leastconn\n  option httpchk\n  http-check send meth GET uri /readyz\n  http-check expect status 200\n  timeout check 4s\n');
    expect(cfg).toContain('  server m-10-200-60-20-6443 10.200.60.20:6443 weight 1 check check-ssl verify none inter 5s fall 2 rise 2\n');
    expect(cfg.match(/^ {2}server /gm)).toHaveLength(3);
  });

  it('follows a member added or disabled (a master_count update), and refuses a protocol it cannot serve', () => {
    const more = [...RESOURCES, { type: 'OS::Octavia::PoolMember', id: 'm9', given: { pool: 'p1', address: '10.200.60.23', protocol_port: 6443, weight: 1, admin_state_up: false } }];
    expect(haproxyConfig(loadBalancersOf(more), { statsSocket: 's' })).toContain('server m-10-200-60-23-6443 10.200.60.23:6443 weight 1 check check-ssl verify none inter 5s fall 2 rise 2 disabled\n');
    const http = RESOURCES.map((r) => (r.type === 'OS::Octavia::Listener' ? { ...r, given: { ...r.given, protocol: 'HTTP' } } : r));
    expect(() => haproxyConfig(loadBalancersOf(http), { statsSocket: 's' })).toThrow(/TCP listeners only, not HTTP/);
  });

  it("reads each member's state and last session from haproxy's statistics", () => {
    // haproxy names its columns in the header line: only the ones read here, in another order than haproxy's
    const csv = [
      '# pxname,svname,stot,status,addr,lastsess',
      'lb-x,FRONTEND,9,OPEN,,',
      `lb-x,${memberName({ address: '10.200.60.20', port: 6443 })},4,UP,10.200.60.20:6443,3`,
      `lb-x,${memberName({ address: '10.200.60.21', port: 6443 })},2,DOWN,10.200.60.21:6443,-1`,
      'lb-x,BACKEND,6,UP,,3',
    ].join('\n');
    const stats = parseStats(csv);
    expect(stats.map((s) => [s.member, s.address, s.status])).toEqual([
      ['m-10-200-60-20-6443', '10.200.60.20', 'UP'],
      ['m-10-200-60-21-6443', '10.200.60.21', 'DOWN'],
    ]);
    expect(stats[0]!.lastSessionSec).toBe(3);
    expect(stats[1]!.lastSessionSec).toBeUndefined();
  });
});
