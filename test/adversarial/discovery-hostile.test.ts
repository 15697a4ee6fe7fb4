/**
 * The adversarial suite of issue 12: every input of hostile-inputs.ts written into a real discovery (the real etcd
 * flags, the real auth: as the join token holder, or as an admitted node's own etcd user) while a real overlord
 * admits and deploys real machines (test/harness/hostile-cluster.ts). For each input it asserts that the overlord
 * answers with one log line naming the field, and that nothing changed on any machine — the files the overlord
 * writes, its units' and the announce service's invocations. Then that the overlord keeps deploying the good
 * machines (every one deployed again with new units, and a node that had been refused joins and is deployed), that
 * a powered-off machine whose record lives on is dropped once it stops answering over SSH, and that no secret and
 * no long line reached the log. Net: 10.200.<54 + $COREKUBE_TEST_NET_OFFSET>.0/24.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findSecrets } from '../../core/secrets.ts';
import { keyRef } from '../../core/untrusted.ts';
import { etcdMissing } from '../../localcloud/etcd/etcd.ts';
import { DEPLOYED_FOR, machineState, startHostileCluster, untilDeployed, type HostileCluster, type Node } from '../harness/hostile-cluster.ts';
import { captureLog } from '../harness/log-capture.ts';
import { machinesMissing, netFromEnv } from '../harness/machines.ts';
import { missingParts } from '../harness/requirements.ts';
import { until } from '../../localcloud/until.ts';
import { HOSTILE_INPUTS, idOf, type HostileInput, type Machines } from './hostile-inputs.ts';

const skip = missingParts(etcdMissing(), machinesMissing());
const NET = netFromEnv(54);
const LIVENESS = { intervalMs: 1_000, deadAfterMs: 6_000 };
const WRONG_TOKEN = 'not-the-join-token-of-this-cluster-0123';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip)('discovery under attack: hostile inputs against a real overlord and real machines', () => {
  let c: HostileCluster;
  let master: Node;
  let victim: Node;
  let attacker: Node;
  let stranger: Node;
  let m: Machines;
  const capture = captureLog();
  const states = () => Promise.all(c.nodes.map((n) => machineState(n, { announce: n !== stranger })));

  beforeAll(async () => {
    c = await startHostileCluster({
      net: NET,
      name: 'hostile',
      log: capture.log,
      liveness: LIVENESS,
      nodes: [
        { hostname: 'good-master', role: 'master' },
        { hostname: 'victim', role: 'minion' },
        { hostname: 'attacker', role: 'minion' },
        // a real node that asks to join with a wrong token: refused by discovery until it gets the right one
        { hostname: 'stranger', role: 'minion', joinToken: WRONG_TOKEN },
      ],
    });
    [master, victim, attacker, stranger] = c.nodes as [Node, Node, Node, Node];
    await untilDeployed(c, [master, victim, attacker], 200_000);
    // its announce has asked (and made its join nonce): a real machine, never admitted
    await until('the stranger to ask', 60_000, async () => ((await stranger.exec(['test', '-s', '/run/corekube/announce/join-nonce'])).code === 0 ? true : undefined));
    const attackerRecord = JSON.parse((await c.root.get(c.keys.machine(attacker.id)).string())!) as Record<string, unknown>;
    m = {
      master: { id: master.id, ip: master.ip, hostKey: master.hostKey },
      victim: { id: victim.id, ip: victim.ip, hostKey: victim.hostKey },
      attacker: { id: attacker.id, ip: attacker.ip, hostKey: attacker.hostKey },
      stranger: { id: stranger.id, ip: stranger.ip, hostKey: stranger.hostKey },
      free: `10.200.${NET}.200`,
      net: `10.200.${NET}.`,
      attackerRecord,
    };
  }, 300_000);

  afterAll(async () => {
    await c?.close();
  });

  /** Writes the input as its author could, and returns the key suffix the overlord will name. */
  async function write(input: HostileInput): Promise<string> {
    if (input.by === 'attacker') {
      await c.ownUser(attacker).put(c.keys.machine(attacker.id)).value(input.value(m, attacker.id));
      return attacker.id;
    }
    const key = input.key ? input.key(m) : idOf(input.name);
    await c.joiner.put(`${c.keys.join}${key}`).value(input.value(m, key));
    return key;
  }

  it('has at least 60 hostile inputs', () => {
    expect(HOSTILE_INPUTS.length).toBeGreaterThanOrEqual(60);
  });

  it.each(HOSTILE_INPUTS.map((input) => [input.name, input] as const))('%s: refused with a line naming the field, nothing changed on any machine', async (_name, input) => {
    const before = await states();
    const since = capture.events().length;
    const key = await write(input);
    const line = await until(
      `a ${input.event} line naming ${input.field}`,
      30_000,
      () => capture.events().slice(since).find((e) => e.event === input.event && e.machine === keyRef(key) && e.field === input.field),
      () => capture.events().slice(since).map((e) => `${String(e.event)} ${String(e.machine).slice(0, 40)} ${String(e.field)} ${String(e.reason ?? '').slice(0, 200)}`).join('\n'),
      100,
    );
    expect(String(line.reason ?? line.msg).length).toBeLessThan(600);
    await sleep(300);
    expect(await states()).toEqual(before);
    if (input.by === 'attacker') {
      await c.ownUser(attacker).put(c.keys.machine(attacker.id)).value(JSON.stringify(m.attackerRecord));
      await until('the attacker\'s own record taken back', 10_000, () => (c.overlord.discovery.snapshot().records.get(attacker.id)?.ip === attacker.ip ? true : undefined));
    }
    expect(capture.events().filter((e) => e.event === 'overlord.not-leader' || e.event === 'worker.failed')).toEqual([]);
  });

  it('keeps deploying the good machines: with every hostile input still in discovery, a new overlord deploys each again with new units, and the refused node joins once it holds the token', async () => {
    await c.redeploy();
    const version = `v${c.unitsVersion()}`;
    const deployedFor = async (n: Node) => (await n.exec(['cat', DEPLOYED_FOR])).stdout;
    await until('the good machines deployed again', 60_000, async () => ((await Promise.all([master, victim, attacker].map(deployedFor))).every((t) => t.includes(version)) ? true : undefined), () => c.overlord.summary().text, 500);
    for (const n of [master, victim, attacker]) expect(await deployedFor(n)).toMatch(new RegExp(`^${n.id} ${n.hostname} `));

    await stranger.exec(['sh', '-c', `printf '%s\\n' "$1" > /etc/corekube/secrets/join-token && systemctl restart corekube-announce.service`, 'set-token', c.discovery.joinToken]);
    await untilDeployed(c, [stranger]);
    expect(await deployedFor(stranger)).toContain(`${stranger.id} stranger minion ${stranger.ip} ${version}`);
    expect(c.overlord.summary()).toMatchObject({ deployed: 4, total: 4, failed: [] });
  }, 180_000);

  it('drops a powered-off machine whose record lives on once it has not answered over SSH for a while, and takes it back when it answers', async () => {
    await victim.stop('SIGKILL');
    expect(await c.root.get(c.keys.machine(victim.id)).string()).not.toBeNull(); // its lease (60 s) lives on
    await until('the victim to be dropped', 30_000, () => (c.overlord.discovery.snapshot().records.has(victim.id) ? undefined : true));
    expect(capture.events().find((e) => e.event === 'machine.silent' && e.machine === victim.id)).toBeDefined();
    expect(await c.root.get(c.keys.machine(victim.id)).string()).not.toBeNull();
    await victim.boot();
    await until('the victim back', 60_000, () => (c.overlord.discovery.snapshot().records.has(victim.id) ? true : undefined));
    await untilDeployed(c, [victim]);
  }, 150_000);

  it('never logged a secret or a long line', async () => {
    const nonces = await Promise.all(c.nodes.map(async (n) => (await n.exec(['cat', '/run/corekube/announce/join-nonce'])).stdout.trim()));
    const secrets = [c.discovery.joinToken, c.discovery.passwords.root, c.discovery.passwords.machines, ...nonces.filter((x) => x.length > 0)];
    expect(findSecrets(capture.text(), { values: secrets })).toEqual([]);
    expect(Math.max(...capture.text().split('\n').map((l) => l.length))).toBeLessThan(2_000);
  });
});
