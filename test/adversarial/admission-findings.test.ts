/**
 * Issue 12's findings 4 and 5 on real machines (test/harness/hostile-cluster.ts: nodes booted by cloud-init from
 * their real user_data, discovery's real etcd and auth, the overlord admitting and deploying over real SSH):
 *
 * 4. a join-token holder asks to join as a made-up machine id with a victim's address and host key (or none): the
 *    overlord must not touch the victim, create a user, or pin anything;
 * 5. an admitted node rewrites its own record (as its own etcd user, as root on it can) with another node's
 *    address and host key: the overlord must not deploy its units onto that node.
 *
 * Both failed on the overlord before issue 12 (the victim's credentials overwritten and its announce restarted; the
 * attacker's units written onto the victim); this file is built only on what that overlord had, so it runs there.
 * Net: 10.200.<53 + $COREKUBE_TEST_NET_OFFSET>.0/24.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { etcdMissing } from '../../localcloud/etcd/etcd.ts';
import { DEPLOYED_FOR, machineState, startHostileCluster, untilDeployed, type HostileCluster, type Node } from '../harness/hostile-cluster.ts';
import { syntheticNonce } from '../../localcloud/identities.ts';
import { captureLog } from '../harness/log-capture.ts';
import { machinesMissing, netFromEnv } from '../harness/machines.ts';
import { missingParts } from '../harness/requirements.ts';

const skip = missingParts(etcdMissing(), machinesMissing());
const NET = netFromEnv(53);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip)('findings 4 and 5: admission and deploys on real machines', () => {
  let c: HostileCluster;
  let master: Node;
  let victim: Node;
  let attacker: Node;
  const capture = captureLog();

  beforeAll(async () => {
    c = await startHostileCluster({
      net: NET,
      name: 'findings',
      log: capture.log,
      nodes: [
        { hostname: 'good-master', role: 'master' },
        { hostname: 'victim', role: 'minion' },
        { hostname: 'attacker', role: 'minion' },
      ],
    });
    [master, victim, attacker] = c.nodes as [Node, Node, Node];
    // seconds alone; a busy 2-core CI machine once took more than 120 s to admit the third node
    await untilDeployed(c, c.nodes, 200_000);
  }, 240_000);

  afterAll(async () => {
    await c?.close();
  });

  const deployedFor = async (n: Node) => (await n.exec(['cat', DEPLOYED_FOR])).stdout.trim();

  it('finding 4: a join request for a made-up machine id with a victim\'s address and host key — or none — changes nothing on the victim, makes no etcd user and pins nothing', async () => {
    const before = await Promise.all(c.nodes.map((n) => machineState(n)));
    const users = (await c.root.getUsers()).map((u) => u.name).sort();
    const madeUp = ['5ca1ab1e'.repeat(4), 'deadbeef'.repeat(4)];
    const request = (id: string, withKey: boolean) =>
      JSON.stringify({
        schema: 1,
        id,
        role: 'minion',
        ip: victim.ip,
        hostname: `imposter-${id.slice(0, 4)}`,
        bootId: 'b'.repeat(32),
        ...(withKey ? { sshHostKey: victim.hostKey } : {}),
        nonceDigest: syntheticNonce(id).digest,
        announcedAt: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      });
    await c.joiner.put(c.keys.joinOf(madeUp[0]!)).value(request(madeUp[0]!, true));
    await c.joiner.put(c.keys.joinOf(madeUp[1]!)).value(request(madeUp[1]!, false));
    await sleep(8_000); // several admission attempts and backoffs

    expect(await Promise.all(c.nodes.map((n) => machineState(n)))).toEqual(before);
    expect((await c.root.getUsers()).map((u) => u.name).sort()).toEqual(users);
    for (const id of madeUp) expect(await c.root.get(c.keys.hostkeyOf(id)).string()).toBeNull();
    expect(capture.events().filter((e) => e.event === 'machine.admitted' && madeUp.includes(String(e.machine)))).toEqual([]);
  }, 60_000);

  it('finding 5: an admitted node that rewrites its record with another node\'s address and host key does not get its units deployed onto that node', async () => {
    const victimWas = await deployedFor(victim);
    expect(victimWas).toContain(victim.id);
    const before = await machineState(victim);
    const own = c.ownUser(attacker);
    const record = JSON.parse((await c.root.get(c.keys.machine(attacker.id)).string())!) as Record<string, unknown>;
    // a new boot id, so that the overlord would deploy it again
    await own.put(c.keys.machine(attacker.id)).value(JSON.stringify({ ...record, ip: victim.ip, sshHostKey: victim.hostKey, bootId: 'f'.repeat(32) }));
    await sleep(8_000);
    expect(await deployedFor(victim)).toBe(victimWas);
    expect(await machineState(victim)).toBe(before);
    // and its own record, back as it was, leaves everything as it is
    await own.put(c.keys.machine(attacker.id)).value(JSON.stringify(record));
    await sleep(2_000);
    expect(await deployedFor(victim)).toBe(victimWas);
    expect(await deployedFor(master)).toContain(master.id);
  }, 60_000);
});
