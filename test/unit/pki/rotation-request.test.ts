import { describe, expect, it } from 'vitest';
import { parseRotationRecord, phaseOrderProblem, rolloutProblem, type RotationProgress } from '../../../contracts/ca-rotation.ts';

const at = '2026-12-07T00:00:00.000Z';

describe('the rotation record at <prefix>pki/rotation', () => {
  it('parses what the command and the leader write', () => {
    const record = {
      schema: 1,
      request: { ca: 'etcd', phase: 'sign', requestedAt: at },
      progress: { ca: 'etcd', phase: 'trust', since: at, rolledOut: at, waiting: [] },
      refused: null,
    };
    expect(parseRotationRecord(JSON.stringify(record))).toEqual(record);
    expect(parseRotationRecord(JSON.stringify({ schema: 1 }))).toEqual({ schema: 1, request: null, progress: null, refused: null });
  });

  it('reads anything else as absent: not JSON, another schema, an unknown CA or phase, a bad date, too large', () => {
    const ok = { schema: 1, request: { ca: 'cluster', phase: 'trust', requestedAt: at }, progress: null, refused: null };
    expect(parseRotationRecord('{')).toBeUndefined();
    expect(parseRotationRecord(JSON.stringify({ ...ok, schema: 2 }))).toBeUndefined();
    expect(parseRotationRecord(JSON.stringify({ ...ok, request: { ...ok.request, ca: 'discovery' } }))).toBeUndefined();
    expect(parseRotationRecord(JSON.stringify({ ...ok, request: { ...ok.request, phase: 'drop' } }))).toBeUndefined();
    expect(parseRotationRecord(JSON.stringify({ ...ok, request: { ...ok.request, requestedAt: 'yesterday' } }))).toBeUndefined();
    expect(parseRotationRecord(JSON.stringify({ ...ok, progress: { ca: 'cluster', phase: 'trust', since: at, rolledOut: 5, waiting: [] } }))).toBeUndefined();
    expect(parseRotationRecord(JSON.stringify({ ...ok, pad: 'x'.repeat(20_000) }))).toBeUndefined();
    expect(parseRotationRecord('[]')).toBeUndefined();
    expect(parseRotationRecord(JSON.stringify({ ...ok, request: { ...ok.request, x: [[[1]]] } }))).toBeUndefined();
  });

  it('keeps at most 20 waiting machines', () => {
    const waiting = Array.from({ length: 50 }, (_, i) => `demo-minion-${i}`);
    const parsed = parseRotationRecord(JSON.stringify({ schema: 1, progress: { ca: 'cluster', phase: 'trust', since: at, rolledOut: null, waiting } }));
    expect(parsed?.progress?.waiting).toHaveLength(20);
  });
});

describe('the order of the phases', () => {
  it('allows trust → sign → finish, then a new trust of any CA', () => {
    expect(phaseOrderProblem(undefined, 'cluster', 'trust')).toBeUndefined();
    expect(phaseOrderProblem({ ca: 'cluster', phase: 'trust' }, 'cluster', 'sign')).toBeUndefined();
    expect(phaseOrderProblem({ ca: 'cluster', phase: 'sign' }, 'cluster', 'finish')).toBeUndefined();
    expect(phaseOrderProblem({ ca: 'cluster', phase: 'finish' }, 'etcd', 'trust')).toBeUndefined();
  });

  it('refuses finish or sign without trust, naming the flags and the fix', () => {
    const e = phaseOrderProblem(undefined, 'front-proxy', 'finish')!;
    expect(e.code).toBe('E_USAGE');
    expect(e.message).toBe('--ca front-proxy --phase finish: no CA rotation was ever started');
    expect(e.hint).toBe('start with: corekube pki rotate-ca --ca front-proxy --phase trust');
    expect(phaseOrderProblem({ ca: 'cluster', phase: 'finish' }, 'cluster', 'sign')!.message).toContain("no CA rotation is under way (the cluster CA's last one finished)");
  });

  it('refuses a skipped phase and a repeated one', () => {
    const skipped = phaseOrderProblem({ ca: 'cluster', phase: 'trust' }, 'cluster', 'finish')!;
    expect(skipped.message).toContain('phase finish cannot follow phase trust');
    expect(skipped.hint).toBe('run --phase sign first');
    const repeated = phaseOrderProblem({ ca: 'cluster', phase: 'sign' }, 'cluster', 'sign')!;
    expect(repeated.message).toBe('--ca cluster --phase sign: the cluster CA is in phase sign already');
    expect(repeated.hint).toBe('run --phase finish once phase sign is rolled out');
    expect(phaseOrderProblem({ ca: 'cluster', phase: 'trust' }, 'cluster', 'trust')!.message).toContain('in phase trust already');
  });

  it('refuses a second rotation while one is under way', () => {
    const e = phaseOrderProblem({ ca: 'etcd', phase: 'sign' }, 'cluster', 'trust')!;
    expect(e.message).toContain('the etcd CA is being rotated (phase sign)');
    expect(e.hint).toBe('finish that rotation first: corekube pki rotate-ca --ca etcd --phase finish');
    expect(phaseOrderProblem({ ca: 'etcd', phase: 'trust' }, 'cluster', 'sign')!.hint).toBe('go on with: corekube pki rotate-ca --ca etcd --phase sign');
  });
});

describe('waiting for the rollout', () => {
  const progress = (p: Partial<RotationProgress>): RotationProgress => ({ ca: 'cluster', phase: 'trust', since: at, rolledOut: null, waiting: [], ...p });

  it('refuses the next phase while machines are not on the files of the current one, naming them', () => {
    const e = rolloutProblem(progress({ waiting: ['demo-minion-11 (deploying)', 'demo-master-1 (failed)'] }), 'cluster', 'sign')!;
    expect(e.message).toBe(`--ca cluster --phase sign: phase trust of the cluster CA (since ${at}) is not rolled out everywhere: not yet on demo-minion-11 (deploying), demo-master-1 (failed)`);
    expect(rolloutProblem(progress({}), 'cluster', 'sign')!.message).toContain('has not seen every machine deployed yet');
  });

  it('lets it start once rolled out, and the first trust at once', () => {
    expect(rolloutProblem(progress({ rolledOut: at }), 'cluster', 'sign')).toBeUndefined();
    expect(rolloutProblem(null, 'cluster', 'trust')).toBeUndefined();
  });
});
