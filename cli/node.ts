import { clusterKeys } from '../contracts/keys.ts';
import { nextPhase, parseRemovalRequest } from '../contracts/removal.ts';
import { machineNamed, removalRequestFor } from '../overlord/lifecycle/removal-request.ts';
import { CorekubeError } from '../core/errors.ts';
import { readStatus } from '../overlord/status.ts';
import { parseOptions, type Command } from './command.ts';
import { OPERATOR_ETCD_OPTIONS, OPERATOR_ETCD_USAGE, openEtcdStore } from './status.ts';

const usage = `Usage: corekube node remove MACHINE --etcd-endpoints URLS [--etcd-ca FILE --etcd-cert FILE --etcd-key FILE | --state-dir DIR]
                           [--cluster NAME] [--wait] [--timeout SECONDS]

Removes a machine from the cluster: asks the leading overlord, through discovery's etcd, to cordon its Node, drain
it through the Eviction API (PodDisruptionBudgets respected), remove a master's etcd member (asked on another master),
stop its units, delete the Node, release its pod subnet, delete its discovery etcd user and its keys, and keep its
machine id from ever joining again. The overlord
records each phase, so a restarted overlord goes on where the last one stopped. \`corekube status\` shows the
machine as \`removing\` with the phase it is at.

A machine Heat created is removed the same way when \`openstack stack update --existing --parameter
minion_count=N\` drops its index out of the count (Heat deletes the servers with the highest indexes): use this
command for a machine booted by hand, or to drain a minion before its server is deleted.

A master's etcd member is removed only while the members left keep a quorum of healthy ones (3 masters, one
lost: its removal leaves 2 healthy of 2); otherwise the request waits, saying why, until it is safe. The last
master is refused. A replacement master (the server rebuilt, a new machine id) joins etcd by itself: the overlord
adds its member before its etcd first starts. Remove one master at a time.

  MACHINE                the machine's id, IP address or hostname (as \`corekube status\` shows them)
${OPERATOR_ETCD_USAGE}
  --cluster NAME         cluster name, the etcd key prefix /corekube/NAME/ (default corekube)
  --wait                 wait until the overlord has removed it, printing each phase
  --timeout SECONDS      with --wait: give up after this long (default 600)`;

export const nodeRemoveCommand: Command = {
  path: ['node', 'remove'],
  summary: 'remove a machine from the cluster: drain, remove its etcd member, delete its Node, free its subnet and credentials',
  usage,
  async run(argv) {
    const { values, positionals } = parseOptions(argv, { ...OPERATOR_ETCD_OPTIONS, cluster: { type: 'string' }, wait: { type: 'boolean' }, timeout: { type: 'string' } }, usage, { allowPositionals: true });
    if (positionals.length !== 1) throw new CorekubeError('E_USAGE', `corekube node remove takes one MACHINE (got ${positionals.length})`, { hint: 'for example: corekube node remove 10.240.0.33 --etcd-endpoints https://10.240.0.10:2379' });
    const cluster = values.cluster ?? 'corekube';
    if (!/^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$/.test(cluster)) throw new CorekubeError('E_USAGE', `--cluster ${JSON.stringify(cluster)} is not a cluster name`, { hint: 'the name given to corekube heat generate --name' });
    const timeoutS = values.timeout === undefined ? 600 : /^\d{1,5}$/.test(values.timeout) ? Number(values.timeout) : NaN;
    if (!(timeoutS >= 1)) throw new CorekubeError('E_USAGE', `--timeout ${JSON.stringify(values.timeout)} is not a number of seconds`, { hint: 'for example --timeout 600' });
    const keys = clusterKeys(cluster);
    const store = openEtcdStore(values);
    try {
      const report = await readStatus(store, keys);
      const machine = machineNamed(report, positionals[0]!);
      const ledger = await store.get(keys.ledgerOf(machine.id));
      const hostname = machine.node?.name ?? ((ledger ? (JSON.parse(ledger.value) as { hostname?: string }).hostname : undefined) ?? machine.id);
      if (machine.state !== 'removing') {
        const request = removalRequestFor(machine, hostname, new Date(), report);
        await store.put(keys.removalOf(machine.id), JSON.stringify(request), { expectModRevision: '0' }).catch((err: unknown) => {
          if (!(err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT')) throw err;
        });
        process.stdout.write(`removal of ${hostname} (${machine.ip}) asked: the leading overlord carries it out\n`);
      } else process.stdout.write(`${hostname} (${machine.ip}) is being removed already (at ${machine.step ?? '?'})\n`);
      if (!values.wait) return 0;
      return await waitRemoved(store, keys, machine.id, hostname, timeoutS * 1000);
    } finally {
      await store.close();
    }
  },
};

async function waitRemoved(store: ReturnType<typeof openEtcdStore>, keys: ReturnType<typeof clusterKeys>, id: string, hostname: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let said = '';
  while (Date.now() < deadline) {
    const [kv, tomb] = await Promise.all([store.get(keys.removalOf(id)), store.get(keys.removedOf(id))]);
    if (!kv && tomb) {
      process.stdout.write(`${hostname} removed\n`);
      return 0;
    }
    const request = kv ? parseRemovalRequest(id, kv.value) : undefined;
    const now = request ? `at ${nextPhase(request) ?? 'records'}${request.error ? `: ${request.error}` : ''}` : 'waiting for the overlord';
    if (now !== said) process.stdout.write(`${hostname}: ${now}\n`);
    said = now;
    await new Promise((r) => setTimeout(r, 2000));
  }
  process.stderr.write(`corekube: ${hostname} was not removed within ${Math.round(timeoutMs / 1000)} s (${said}); the overlord goes on trying\n`);
  return 1;
}
