import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { beginDeployment, currentStep, machineFailed, MAX_ERROR_CHARS, parseLedgerEntry, stepDone, stepFailed, stepRetrying } from '../../../contracts/ledger-entry.ts';
import { Ledger } from '../../../overlord/deploy/ledger.ts';
import { stepsOf } from '../../../overlord/deploy/planner.ts';
import { fakeUnits, makeRecord, MemoryStore } from './fakes.ts';

const T0 = '2026-01-01T00:00:00.000Z';
const T1 = '2026-01-01T00:01:00.000Z';
const record = makeRecord(1, 'minion');
const units = fakeUnits()(record);
const stepIds = stepsOf(units).map((s) => s.id);
const begin = () => beginDeployment(null, record, { hash: units.hash, stepIds }, stepIds, T0);

describe('ledger transitions', () => {
  it('a new deployment has every step pending and the first in flight', () => {
    const e = begin();
    expect(e.state).toBe('deploying');
    expect(e.plan).toEqual(stepIds);
    expect(e.steps['write-units']).toEqual({ state: 'in-flight', attempts: 1, startedAt: T0, finishedAt: null, lastError: null });
    expect(stepIds.slice(1).every((id) => e.steps[id]!.state === 'pending')).toBe(true);
    expect(currentStep(e)).toBe('write-units');
  });

  it('a step done records the next one in flight in the same entry; the last one makes the machine deployed', () => {
    let e = begin();
    e = stepDone(e, 'write-units', T1, { startNext: true });
    expect(e.steps['write-units']).toMatchObject({ state: 'done', finishedAt: T1 });
    expect(e.steps['daemon-reload']).toMatchObject({ state: 'in-flight', attempts: 1, startedAt: T1 });
    for (const id of stepIds.slice(1)) e = stepDone(e, id, T1, { startNext: true });
    expect(e.state).toBe('deployed');
    expect(e.deployedAt).toBe(T1);
    expect(currentStep(e)).toBeNull();
  });

  it('a step done while stopping leaves the next step pending, the machine deploying', () => {
    const e = stepDone(begin(), 'write-units', T1, { startNext: false });
    expect(e.state).toBe('deploying');
    expect(e.steps['daemon-reload']!.state).toBe('pending');
  });

  it('a retry counts the attempt and keeps the reason; a failure fails the machine with step and reason', () => {
    let e = stepRetrying(begin(), 'write-units', 'E_SSH: refused', T1);
    expect(e.steps['write-units']).toMatchObject({ state: 'in-flight', attempts: 2, lastError: 'E_SSH: refused' });
    expect(currentStep(e)).toBe('write-units');
    e = stepFailed(e, 'write-units', 'E_SSH: refused', true, T1);
    expect(e).toMatchObject({ state: 'failed', error: 'write-units: E_SSH: refused', retryable: true });
    expect(currentStep(e)).toBe('write-units');
  });

  it('clips a long error (a journal excerpt) to keep the etcd value small', () => {
    const e = stepFailed(begin(), 'write-units', 'x'.repeat(10_000), false, T1);
    expect(e.steps['write-units']!.lastError!.length).toBe(MAX_ERROR_CHARS);
  });

  it('resuming keeps done steps and their records; a new units hash starts over but remembers the first deployment', () => {
    let e = begin();
    for (const id of stepIds) e = stepDone(e, id, T0, { startNext: true });
    const starts = stepIds.filter((id) => id.startsWith('start:'));
    const resumed = beginDeployment(e, record, { hash: units.hash, stepIds }, starts, T1);
    expect(resumed.steps['write-units']).toEqual(e.steps['write-units']);
    expect(resumed.steps[starts[0]!]).toMatchObject({ state: 'in-flight', startedAt: T1 });
    const changed = beginDeployment(e, record, { hash: 'other', stepIds }, stepIds, T1);
    expect(changed.steps['write-units']!.state).toBe('in-flight');
    expect(changed.deployedAt).toBe(T0);
  });

  it('a machine whose units do not render is failed without steps', () => {
    expect(machineFailed(null, record, '', 'E_TEMPLATE: bad', T0)).toMatchObject({ state: 'failed', error: 'E_TEMPLATE: bad', retryable: false, plan: [] });
  });

  it('entries are frozen', () => {
    expect(Object.isFrozen(begin())).toBe(true);
    expect(Object.isFrozen(begin().steps['write-units'])).toBe(true);
  });
});

describe('parseLedgerEntry', () => {
  it('reads back what was written', () => {
    const e = stepDone(begin(), 'write-units', T1, { startNext: true });
    expect(parseLedgerEntry(JSON.stringify(e))).toEqual(e);
  });

  it.each([
    ['not JSON', '{'],
    ['another schema', JSON.stringify({ ...begin(), schema: 2 })],
    ['an unknown state', JSON.stringify({ ...begin(), state: 'exploded' })],
    ['a plan naming a missing step', JSON.stringify({ ...begin(), plan: ['write-units', 'start:nope.service'] })],
  ])('reads %s as absent', (_what, text) => {
    expect(parseLedgerEntry(text)).toBeNull();
  });
});

describe('Ledger (the store edge)', () => {
  const keys = clusterKeys('t');

  it('writes with a compare on the revision it read and keeps its copy current', async () => {
    const store = new MemoryStore();
    const ledger = new Ledger(store, keys);
    await ledger.load();
    await ledger.write(begin());
    await ledger.write(stepDone(ledger.get(record.id)!, 'write-units', T1, { startNext: true }));
    expect(parseLedgerEntry(store.data.get(keys.ledgerOf(record.id))!.value)!.steps['write-units']!.state).toBe('done');
  });

  it('on a conflict, re-reads the entry and reports E_ETCD_CONFLICT', async () => {
    const store = new MemoryStore();
    const ledger = new Ledger(store, keys);
    await ledger.load();
    await ledger.write(begin());
    const theirs = stepFailed(begin(), 'write-units', 'written by someone else', false, T1);
    await store.put(keys.ledgerOf(record.id), JSON.stringify(theirs));
    const err = await ledger.write(stepDone(begin(), 'write-units', T1, { startNext: true })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorekubeError);
    expect((err as CorekubeError).code).toBe('E_ETCD_CONFLICT');
    expect(ledger.get(record.id)).toEqual(theirs);
    await ledger.write(stepDone(theirs, 'write-units', T1, { startNext: true }));
  });

  it('creates an entry only if none exists (compare on "no key")', async () => {
    const store = new MemoryStore();
    const ledger = new Ledger(store, keys);
    await ledger.load();
    await store.put(keys.ledgerOf(record.id), JSON.stringify(begin()));
    await expect(ledger.write(begin())).rejects.toMatchObject({ code: 'E_ETCD_CONFLICT' });
  });

  it('carries the leader fence on every write', async () => {
    const store = new MemoryStore();
    await store.put(keys.leader, 'me');
    const held = { key: keys.leader, createRevision: String(store.data.get(keys.leader)!.createRevision) };
    let fence = held;
    const ledger = new Ledger(store, keys, () => fence);
    await ledger.load();
    await ledger.write(begin());
    fence = { key: keys.leader, createRevision: '999' };
    await expect(ledger.write(stepDone(ledger.get(record.id)!, 'write-units', T1, { startNext: true }))).rejects.toMatchObject({ code: 'E_NOT_LEADER' });
  });
});
