import { describe, expect, it } from 'vitest';
import { rotationVerdict } from '../../../cli/pki.ts';
import { EMPTY_ROTATION, type RotationRecord } from '../../../contracts/ca-rotation.ts';
import { formatStatusTable, rotationStatus, type StatusReport } from '../../../overlord/status.ts';

const row = (id: string, name: string, state = 'deployed', step: string | null = null) => ({ id, role: 'minion', ip: '10.240.0.33', state, step, error: null, subnet: null, certificatesExpire: null, node: { name, ready: true, reason: null, podCIDR: null, kubeletVersion: 'v1.36.5', since: '2026-12-06T00:00:00Z' } });
const deployed = { machines: [row('a'.repeat(32), 'c-master-0'), row('b'.repeat(32), 'c-minion-0')] } as unknown as StatusReport;
const at = '2026-12-07T00:00:00.000Z';
const inPhase = (phase: 'trust' | 'sign' | 'finish', rolledOut: string | null, waiting: string[] = []): RotationRecord => ({
  schema: 1,
  request: { ca: 'cluster', phase, requestedAt: at },
  progress: { ca: 'cluster', phase, since: at, rolledOut, waiting },
  refused: null,
});

describe('corekube pki rotate-ca', () => {
  it('asks for the first trust, and for each next phase once the current one is rolled out', () => {
    expect(rotationVerdict(EMPTY_ROTATION, deployed, 'cluster', 'trust')).toEqual({ kind: 'ask' });
    expect(rotationVerdict(inPhase('trust', at), deployed, 'cluster', 'sign')).toEqual({ kind: 'ask' });
    expect(rotationVerdict(inPhase('sign', at), deployed, 'cluster', 'finish')).toEqual({ kind: 'ask' });
    expect(rotationVerdict(inPhase('finish', at), deployed, 'front-proxy', 'trust')).toEqual({ kind: 'ask' });
  });

  it('refuses the next phase while the current one is not rolled out, naming the machines it waits for', () => {
    expect(() => rotationVerdict(inPhase('trust', null, ['c-minion-0 (deploying)']), deployed, 'cluster', 'sign')).toThrow(
      expect.objectContaining({ code: 'E_USAGE', message: expect.stringContaining('phase trust of the cluster CA (since 2026-12-07T00:00:00.000Z) is not rolled out everywhere: not yet on c-minion-0 (deploying)') }),
    );
  });

  it('refuses while a machine is not deployed or a rollout is under way, naming them', () => {
    const failing = { machines: [row('a'.repeat(32), 'c-master-0'), row('b'.repeat(32), 'c-minion-0', 'failed', 'start:kubelet.service')] } as unknown as StatusReport;
    expect(() => rotationVerdict(inPhase('trust', at), failing, 'cluster', 'sign')).toThrow(/1 machine is not deployed: c-minion-0 \(failed at start:kubelet.service\)/);
    const changing = { ...deployed, changing: [{ id: 'b'.repeat(32), hostname: 'c-minion-0', step: 'drain', since: at }] } as StatusReport;
    expect(() => rotationVerdict(inPhase('trust', at), changing, 'cluster', 'sign')).toThrow(/a rollout is under way \(c-minion-0 at drain\)/);
  });

  it('refuses a skipped or repeated phase, and finish without trust, with the fix', () => {
    expect(() => rotationVerdict(EMPTY_ROTATION, deployed, 'cluster', 'finish')).toThrow(expect.objectContaining({ message: '--ca cluster --phase finish: no CA rotation was ever started', hint: 'start with: corekube pki rotate-ca --ca cluster --phase trust' }));
    expect(() => rotationVerdict(inPhase('trust', at), deployed, 'cluster', 'finish')).toThrow(expect.objectContaining({ hint: 'run --phase sign first' }));
    expect(() => rotationVerdict(inPhase('sign', at), deployed, 'cluster', 'sign')).toThrow(/in phase sign already/);
  });

  it('does not ask twice for a phase asked for and not carried out yet; refuses another one meanwhile', () => {
    const pending: RotationRecord = { ...inPhase('trust', at), request: { ca: 'cluster', phase: 'sign', requestedAt: '2026-12-07T01:00:00.000Z' } };
    expect(rotationVerdict(pending, deployed, 'cluster', 'sign')).toEqual({ kind: 'asked-already', requestedAt: '2026-12-07T01:00:00.000Z' });
    expect(() => rotationVerdict(pending, deployed, 'etcd', 'trust')).toThrow(/phase sign of the cluster CA was asked for at .* and the overlord has not carried it out yet/);
    // once refused, it may be asked again
    const refused: RotationRecord = { ...pending, refused: { requestedAt: '2026-12-07T01:00:00.000Z', reason: 'not rolled out' } };
    expect(rotationVerdict({ ...refused, progress: { ...refused.progress!, rolledOut: at } }, deployed, 'cluster', 'sign')).toEqual({ kind: 'ask' });
  });
});

describe('the rotation in corekube status', () => {
  it('shows the phase, since when, the rollout, and a pending or refused request', () => {
    expect(rotationStatus(undefined)).toBeUndefined();
    expect(rotationStatus(JSON.stringify(inPhase('trust', null, ['c-minion-0 (deploying)'])))).toEqual({ ca: 'cluster', phase: 'trust', since: at, rolledOut: null, waiting: ['c-minion-0 (deploying)'] });
    const pending = { ...inPhase('trust', at), request: { ca: 'cluster', phase: 'sign', requestedAt: at } };
    expect(rotationStatus(JSON.stringify(pending))).toMatchObject({ phase: 'trust', requested: { phase: 'sign' } });
    const refused = { ...pending, refused: { requestedAt: at, reason: 'not rolled out' } };
    expect(rotationStatus(JSON.stringify(refused))).toMatchObject({ phase: 'trust', refused: 'not rolled out' });
    expect(rotationStatus(JSON.stringify(refused))).not.toHaveProperty('requested');
  });

  it('prints one line under the table, and none without a rotation', () => {
    const rotation = rotationStatus(JSON.stringify(inPhase('sign', null, ['c-minion-0 (deploying)'])))!;
    expect(formatStatusTable({ ...deployed, rotation })).toContain(`CA rotation: the cluster CA in phase sign since ${at}, rolling out — waiting for c-minion-0 (deploying)\n`);
    expect(formatStatusTable(deployed)).not.toContain('CA rotation');
  });
});
