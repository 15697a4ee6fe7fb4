import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { fillPlaceholders, renderUserData } from '../../cloud-config/index.ts';
import { systemClock } from '../../core/clock.ts';
import { createEtcdStore } from '../../overlord/edges/etcd-store.ts';
import { etcdHostKeys } from '../../overlord/discovery/hostkeys.ts';
import type { MachineAddresses } from '../../overlord/discovery/identity.ts';
import { clusterKeys, type ClusterKeys } from '../../contracts/keys.ts';
import type { Logger } from '../../overlord/edges/log.ts';
import { DiscoveryMachineCredentials, machinePassword, machineUser } from '../../overlord/trust/machine-credentials.ts';
import { flannelGrants } from '../../overlord/pod-network/flannel.ts';
import { runOverlord, type Overlord } from '../../overlord/term.ts';
import { createSshRunner } from '../../overlord/edges/ssh-runner.ts';
import type { Store } from '../../overlord/edges/store.ts';
import { parseClusterSpec, type ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { startAuthedDiscovery, type AuthedDiscovery } from '../../localcloud/etcd/discovery-etcd.ts';
import { onExit } from './cleanup.ts';
import { bootMachines, type Fleet, type Machine } from './machines.ts';
import { DEPLOYED_FOR, TEST_UNIT, testUnits } from './test-units.ts';
import { until } from '../../localcloud/until.ts';

export { DEPLOYED_FOR, TEST_UNIT };

/**
 * A small real cluster to attack (test/adversarial/): a harness net with discovery's etcd on the address plan's
 * discovery IP (added to the host's bridge, as its Neutron port would have it) run the way discovery runs it,
 * auth set up by the overlord's code; nodes booted by cloud-init from their REAL user_data (the announce script,
 * the overlord's key authorized, the join token); the overlord in this process — admission on, the real SSH
 * runner, real per-machine etcd users — deploying small real units in place of Kubernetes' (test-units.ts, the
 * oneshot alone): a file naming the machine (and address) it was rendered for (`DEPLOYED_FOR`) and a oneshot
 * service, so a deploy that lands on the wrong machine shows on that machine.
 *
 * Deliberately built only on APIs the overlord had before issue 12, so a suite on this fixture also runs against
 * that overlord (where it reproduces the findings); options of later overlords are passed and ignored by it.
 */
export interface NodeSpec {
  readonly hostname: string;
  readonly role: 'master' | 'minion';
  /** a join token other than the cluster's: the node asks to join and is refused until it gets the right one */
  readonly joinToken?: string;
}

export interface Node extends Machine {
  readonly role: 'master' | 'minion';
}

export interface HostileCluster {
  readonly spec: ClusterSpec;
  readonly keys: ClusterKeys;
  readonly fleet: Fleet;
  readonly discovery: AuthedDiscovery;
  readonly nodes: readonly Node[];
  /** the running overlord (a new one after `redeploy`) */
  readonly overlord: Overlord;
  /** the overlord's own store (root) */
  readonly store: Store;
  /** root's and the join token holder's etcd clients */
  readonly root: Etcd3;
  readonly joiner: Etcd3;
  /** an admitted node's own etcd user (what root on that node reads from its credentials file) */
  ownUser(node: Node): Etcd3;
  /** a new overlord with new units (as after an upgrade): every machine is deployed again */
  redeploy(): Promise<void>;
  readonly unitsVersion: () => number;
  /** the first DHCP address of the net and the last (the machines' range) */
  readonly addresses: MachineAddresses;
  close(): Promise<void>;
}

export async function startHostileCluster(options: { net: number; name: string; nodes: readonly NodeSpec[]; log: Logger; liveness?: { intervalMs: number; deadAfterMs: number } }): Promise<HostileCluster> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `corekube-${options.name}-`));
  const closers: (() => Promise<unknown> | unknown)[] = [() => rm(dir, { recursive: true, force: true })];
  const close = async () => {
    for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
  };
  const unregister = onExit(`hostile cluster ${options.name}`, () => execFileSync('rm', ['-rf', dir]));
  try {
    const fleet = await bootMachines([], { net: options.net });
    closers.push(() => fleet.teardown());
    const spec = parseClusterSpec({ flags: { name: options.name, os: 'ubuntu', masters: '1', minions: '3', 'private-cidr': `10.200.${options.net}.0/24` } });
    const keys = clusterKeys(spec.name);
    const discoveryIp = `10.200.${options.net}.10`;
    execFileSync('ip', ['addr', 'add', `${discoveryIp}/32`, 'dev', fleet.bridge]);
    const joinToken = randomBytes(24).toString('hex');
    const discovery = await startAuthedDiscovery({ spec, dir, joinToken, host: discoveryIp, port: 2379 });
    closers.push(() => discovery.close());
    const root = discovery.client({ username: 'root', password: discovery.passwords.root });
    const joiner = discovery.client({ username: 'joiner', password: joinToken });

    // the overlord's SSH key, authorized on every node by its user_data
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'corekube-overlord@hostile', '-f', path.join(dir, 'overlord')]);
    const privateKey = await readFile(path.join(dir, 'overlord'), 'utf8');
    const publicKey = (await readFile(path.join(dir, 'overlord.pub'), 'utf8')).trim();
    await root.put(keys.overlordSshKey).value(publicKey);

    const store = createEtcdStore(discovery.rootStore);
    closers.push(() => store.close());
    const hosts = createSshRunner({ user: 'corekube', privateKey, connectTimeoutMs: 5_000, hostKeys: etcdHostKeys(store, keys) });
    const credentials = new DiscoveryMachineCredentials(discovery.conn, discovery.passwords.root, keys, discovery.passwords.machines, flannelGrants);
    closers.push(() => credentials.close());
    let version = 1;
    const addresses: MachineAddresses = { masters: { first: `10.200.${options.net}.20`, last: `10.200.${options.net}.24` }, dhcp: { first: `10.200.${options.net}.32`, last: `10.200.${options.net}.254` } };
    const start = () =>
      runOverlord(
        { store, hosts, clock: systemClock, log: options.log },
        {
          cluster: spec.name,
          sshUser: 'corekube',
          unitsFor: testUnits({ version: () => version, services: false }),
          expected: { masters: 1, minions: options.nodes.filter((n) => n.role === 'minion').length },
          concurrency: 4,
          retry: { retries: 2, initialMs: 500, factor: 2, maxMs: 2_000 },
          requeue: { initialMs: 1_000, factor: 2, maxMs: 5_000 },
          admission: { credentials, backoff: { initialMs: 500, maxMs: 2_000 } },
          // the machines' range and liveness (overlord options since issue 12)
          ...{ addresses, ...(options.liveness ? { liveness: options.liveness } : {}) },
        },
      );
    let overlord = await start();
    closers.push(() => overlord.stop());

    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const machines = await fleet.add(
      options.nodes.map((n) => ({
        hostname: n.hostname,
        cloudInit: {
          userData: fillPlaceholders(renderUserData(n.role, spec), { joinToken: n.joinToken ?? joinToken, overlordSshKey: b64(publicKey), discoveryCa: b64(discovery.pki.ca) }),
          metaData: `instance-id: iid-${n.hostname}\nlocal-hostname: ${n.hostname}\n`,
        },
      })),
    );
    const nodes = machines.map((m, i) => Object.assign(m, { role: options.nodes[i]!.role }) as Node);
    const owners: Etcd3[] = [];
    return {
      spec,
      keys,
      fleet,
      discovery,
      nodes,
      get overlord() {
        return overlord;
      },
      store,
      root,
      joiner,
      addresses,
      ownUser: (node) => {
        const c = discovery.client({ username: machineUser(node.id), password: machinePassword(discovery.passwords.machines, node.id) });
        owners.push(c);
        return c;
      },
      redeploy: async () => {
        await overlord.stop();
        version++;
        overlord = await start();
      },
      unitsVersion: () => version,
      close: async () => {
        await close();
        unregister();
      },
    };
  } catch (err) {
    await close();
    unregister();
    throw err;
  }
}

/** What a test may compare before and after an attack: the files the overlord writes and its units' invocations, per machine. */
export async function machineState(node: Machine, options: { announce?: boolean } = {}): Promise<string> {
  const script = [
    'cd / && sha256sum etc/corekube/pki/discovery-credentials.env etc/corekube-test/* etc/systemd/system/corekube-test.service 2>&1 | sort',
    `systemctl show -p InvocationID ${TEST_UNIT}`,
    options.announce === false ? 'true' : 'systemctl show -p InvocationID -p NRestarts corekube-announce.service',
  ].join('; ');
  const r = await node.exec(['sh', '-c', script]);
  return `${node.hostname}\n${r.stdout}`;
}

/**
 * Waits until the ledger says every node is deployed (for its current boot). On a timeout it says, per node, what the
 * overlord knows of it (ledger state, record, join request), not only the overlord's summary.
 */
export async function untilDeployed(c: HostileCluster, nodes: readonly Node[], timeoutMs = 120_000): Promise<void> {
  const ledgerOf = async (n: Node) => JSON.parse((await c.root.get(c.keys.ledgerOf(n.id)).string()) ?? '{}') as { state?: string; unitsHash?: string; error?: string | null };
  let detail = '';
  await until(`${nodes.map((n) => n.hostname).join(', ')} deployed`, timeoutMs, async () => {
    const states = await Promise.all(nodes.map(ledgerOf));
    if (states.every((s) => s.state === 'deployed')) return true;
    detail = (await Promise.all(nodes.map(async (n, i) => {
      const [record, join] = await Promise.all([c.root.get(c.keys.machine(n.id)).string(), c.root.get(c.keys.joinOf(n.id)).string()]);
      return `${n.hostname}: ledger ${states[i]!.state ?? 'none'}${states[i]!.error ? ` (${states[i]!.error})` : ''}, record ${record === null ? 'none' : 'there'}, join request ${join === null ? 'none' : 'there'}`;
    }))).join('; ');
    return undefined;
  }, () => `${c.overlord.summary().text}; ${detail}`, 500);
}
