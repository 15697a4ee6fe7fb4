import { clusterKeys, type ClusterKeys } from '../contracts/keys.ts';
import {
  EMPTY_ROTATION,
  isRotatedCa,
  isRotationPhase,
  parseRotationRecord,
  phaseOrderProblem,
  rolloutProblem,
  ROTATED_CAS,
  ROTATION_PHASES,
  type RotatedCa,
  type RotationPhase,
  type RotationRecord,
} from '../contracts/ca-rotation.ts';
import { CorekubeError } from '../core/errors.ts';
import type { Store } from '../overlord/edges/store.ts';
import { readStatus, type StatusReport } from '../overlord/status.ts';
import { parseOptions, type Command } from './command.ts';
import { OPERATOR_ETCD_OPTIONS, OPERATOR_ETCD_USAGE, openEtcdStore } from './status.ts';

const usage = `Usage: corekube pki rotate-ca --ca cluster|etcd|front-proxy --phase trust|sign|finish
                            --etcd-endpoints URLS [--etcd-ca FILE --etcd-cert FILE --etcd-key FILE | --state-dir DIR]
                            [--cluster NAME] [--wait] [--timeout SECONDS]

Rotates one of the cluster's CAs in three phases, each asked for once the previous one is rolled out to every
machine (the leading overlord carries each out and rolls the changed files out like any change: the units that
read them restart, minions drained first, masters one at a time):

  trust   a new CA is made; every machine's CA file of that kind holds the current and the new one
  sign    every certificate of that kind is issued again by the new CA (the admin kubeconfig too)
  finish  the new CA replaces the current one (kept as ca/<kind>.retired-<date> in the overlord's PKI
          directory); the CA files hold it alone

Refused, naming what is not done yet, when a phase is skipped or repeated, another CA is being rotated, a machine
is not deployed or is being changed, or the previous phase is not rolled out everywhere (\`corekube status\`).
The discovery CA is not rotated by corekube. See overlord/trust/pki/README.md, "Rotating a CA".

  --ca KIND              cluster (Kubernetes API, kubelets, kubeconfigs), etcd (the masters' etcd) or
                         front-proxy (the API server's aggregation layer)
  --phase PHASE          trust, sign or finish, in that order
${OPERATOR_ETCD_USAGE}
  --cluster NAME         cluster name, the etcd key prefix /corekube/NAME/ (default corekube)
  --wait                 wait until the phase is rolled out to every machine, printing the machines it waits for
  --timeout SECONDS      with --wait: give up after this long (default 3600)`;

export type Verdict = { readonly kind: 'ask' } | { readonly kind: 'asked-already'; readonly requestedAt: string };

/**
 * PURE: whether `phase` of `ca` may be asked for now, from the rotation record and the status: the order of the
 * phases, no other request pending, the current phase rolled out (the leader's progress), and every machine
 * deployed with none being changed. Throws the refusal (E_USAGE), naming the flags, what is not done, and the fix.
 */
export function rotationVerdict(record: RotationRecord, report: StatusReport, ca: RotatedCa, phase: RotationPhase): Verdict {
  const { request, progress, refused } = record;
  const pending = request && !(progress && progress.ca === request.ca && progress.phase === request.phase) && refused?.requestedAt !== request.requestedAt;
  if (pending && request.ca === ca && request.phase === phase) return { kind: 'asked-already', requestedAt: request.requestedAt };
  if (pending) {
    throw new CorekubeError('E_USAGE', `--ca ${ca} --phase ${phase}: phase ${request.phase} of the ${request.ca} CA was asked for at ${request.requestedAt} and the overlord has not carried it out yet`, {
      hint: 'wait for it (`corekube status` shows the rotation); no overlord leads? start one first',
    });
  }
  const problem = phaseOrderProblem(progress ?? undefined, ca, phase) ?? rolloutProblem(progress, ca, phase);
  if (problem) throw problem;
  const notDeployed = report.machines.filter((m) => m.state !== 'deployed');
  if (notDeployed.length > 0) {
    const names = notDeployed.slice(0, 10).map((m) => `${m.node?.name ?? m.ip ?? m.id.slice(0, 12)} (${m.state}${m.step ? ` at ${m.step}` : ''})`);
    throw new CorekubeError('E_USAGE', `--ca ${ca} --phase ${phase}: ${notDeployed.length} machine${notDeployed.length === 1 ? ' is' : 's are'} not deployed: ${names.join(', ')}${notDeployed.length > 10 ? ', …' : ''}`, {
      hint: 'every machine must run the current files before a CA changes: wait for the deployment, fix a failed machine, or remove one that is gone (corekube node remove), then run this again',
    });
  }
  if (report.changing?.length) {
    throw new CorekubeError('E_USAGE', `--ca ${ca} --phase ${phase}: a rollout is under way (${report.changing.map((c) => `${c.hostname} at ${c.step}`).join(', ')})`, {
      hint: 'wait until `corekube status` shows no machine changing, then run this again',
    });
  }
  return { kind: 'ask' };
}

export const pkiRotateCaCommand: Command = {
  path: ['pki', 'rotate-ca'],
  summary: 'rotate the cluster, etcd or front-proxy CA: phases trust, sign, finish, each rolled out before the next',
  usage,
  async run(argv) {
    const { values } = parseOptions(argv, { ...OPERATOR_ETCD_OPTIONS, ca: { type: 'string' }, phase: { type: 'string' }, cluster: { type: 'string' }, wait: { type: 'boolean' }, timeout: { type: 'string' } }, usage);
    const problems: string[] = [];
    if (!isRotatedCa(values.ca)) problems.push(`--ca ${JSON.stringify(values.ca ?? null)} is not one of ${ROTATED_CAS.join(', ')} (the discovery CA is not rotated by corekube)`);
    if (!isRotationPhase(values.phase)) problems.push(`--phase ${JSON.stringify(values.phase ?? null)} is not one of ${ROTATION_PHASES.join(', ')}`);
    const cluster = values.cluster ?? 'corekube';
    if (!/^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$/.test(cluster)) problems.push(`--cluster ${JSON.stringify(cluster)} is not a cluster name`);
    const timeoutS = values.timeout === undefined ? 3600 : /^\d{1,6}$/.test(values.timeout) ? Number(values.timeout) : NaN;
    if (!(timeoutS >= 1)) problems.push(`--timeout ${JSON.stringify(values.timeout)} is not a number of seconds`);
    if (problems.length > 0) throw new CorekubeError('E_USAGE', problems.join('; '), { hint: 'for example: corekube pki rotate-ca --ca cluster --phase trust --etcd-endpoints https://10.240.0.10:2379 --wait' });
    const ca = values.ca as RotatedCa;
    const phase = values.phase as RotationPhase;
    const keys = clusterKeys(cluster);
    const store = openEtcdStore(values);
    try {
      const [report, kv] = await Promise.all([readStatus(store, keys), store.get(keys.caRotation)]);
      const record = (kv ? parseRotationRecord(kv.value) : undefined) ?? EMPTY_ROTATION;
      const verdict = rotationVerdict(record, report, ca, phase);
      let requestedAt: string;
      if (verdict.kind === 'asked-already') {
        requestedAt = verdict.requestedAt;
        process.stdout.write(`phase ${phase} of the ${ca} CA was asked for already (${requestedAt}): the leading overlord carries it out\n`);
      } else {
        requestedAt = new Date().toISOString();
        const next: RotationRecord = { ...record, request: { ca, phase, requestedAt } };
        await store.put(keys.caRotation, JSON.stringify(next), { expectModRevision: kv?.modRevision ?? '0' }).catch((err: unknown) => {
          if (!(err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT')) throw err;
          throw new CorekubeError('E_USAGE', `the CA rotation record changed while this command read it`, { hint: 'run the command again' });
        });
        process.stdout.write(`phase ${phase} of the ${ca} CA asked for: the leading overlord carries it out within seconds and rolls it out${report.leader ? '' : ' (no overlord leads now: it waits for one)'}\n`);
      }
      if (!values.wait) return 0;
      return await waitRolledOut(store, keys, ca, phase, requestedAt, timeoutS * 1000);
    } finally {
      await store.close();
    }
  },
};

async function waitRolledOut(store: Store, keys: ClusterKeys, ca: RotatedCa, phase: RotationPhase, requestedAt: string, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let said = '';
  while (Date.now() < deadline) {
    const kv = await store.get(keys.caRotation);
    const record = kv ? parseRotationRecord(kv.value) : undefined;
    if (record?.refused?.requestedAt === requestedAt) {
      process.stderr.write(`corekube: the overlord refused phase ${phase} of the ${ca} CA: ${record.refused.reason}\n`);
      return 1;
    }
    const p = record?.progress;
    const here = p && p.ca === ca && p.phase === phase;
    if (here && p.rolledOut) {
      process.stdout.write(`phase ${phase} of the ${ca} CA is rolled out to every machine (${p.rolledOut})${phase === 'finish' ? ': the rotation is done' : `: next, --phase ${phase === 'trust' ? 'sign' : 'finish'}`}\n`);
      return 0;
    }
    const now = !here ? 'waiting for the overlord to carry it out' : `rolling out${p.waiting.length ? `: waiting for ${p.waiting.join(', ')}` : ''}`;
    if (now !== said) process.stdout.write(`${now}\n`);
    said = now;
    await new Promise((r) => setTimeout(r, 2000));
  }
  process.stderr.write(`corekube: phase ${phase} of the ${ca} CA was not rolled out within ${Math.round(timeoutMs / 1000)} s (${said}); the overlord goes on\n`);
  return 1;
}
