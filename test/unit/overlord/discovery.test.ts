/**
 * Discovery (overlord/discovery/discovery.ts) against what a join-token holder or an admitted node can write: whatever a key
 * holds costs one log line and that key — never a throw out of a watch or list callback, never memory without
 * bound. Fake etcd (MemoryStore delivers watch events in microtasks, as etcd3 does from its stream); the real etcd
 * side is test/integration/discovery-findings.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Discovery, JOIN_REQUESTS, MACHINE_RECORDS, type RecordSource } from '../../../overlord/discovery/discovery.ts';
import { MAX_INVALID_REMEMBERED } from '../../../contracts/discovery-limits.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { captureLog } from '../../harness/log-capture.ts';
import { FakeClock, flush, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
let discovery: Discovery | undefined;
afterEach(async () => {
  await discovery?.stop();
  discovery = undefined;
});

async function start(store: MemoryStore, source: RecordSource = MACHINE_RECORDS) {
  const capture = captureLog();
  let changes = 0;
  discovery = new Discovery({ store, keys, log: capture.log, clock: new FakeClock(), source, onChange: () => void changes++ });
  await discovery.start();
  return { d: discovery, capture, changes: () => changes };
}

const deep = (depth: number) => `{"schema":${'['.repeat(depth)}${']'.repeat(depth)}}`;

describe('discovery under hostile records', () => {
  it('skips a record nested 100,000 levels deep or a megabyte long — listed or watched — with one line each, and keeps discovering the others', async () => {
    const store = new MemoryStore();
    const good = makeRecord(1, 'master');
    await store.put(keys.machine('a'.repeat(32)), deep(100_000));
    const { d, capture } = await start(store);
    await store.put(keys.machine('b'.repeat(32)), deep(5_000));
    await store.put(keys.machine('c'.repeat(32)), JSON.stringify({ ...good, id: 'c'.repeat(32), hostname: 'x'.repeat(1_000_000) }));
    await store.put(keys.machine(good.id), JSON.stringify(good));
    await flush(10);
    expect([...d.snapshot().records.keys()]).toEqual([good.id]);
    expect([...d.snapshot().invalid.keys()].sort()).toEqual(['a'.repeat(32), 'b'.repeat(32), 'c'.repeat(32)]);
    const lines = capture.text().split('\n').filter(Boolean);
    expect(capture.events().filter((e) => e.event === 'machine.invalid')).toHaveLength(3);
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThan(1_000);
  });

  it('logs one line for a key rewritten a thousand times with different values of the same problem, and remembers one entry', async () => {
    const store = new MemoryStore();
    const { d, capture } = await start(store);
    for (let i = 0; i < 1_000; i++) await store.put(keys.machine('d'.repeat(32)), JSON.stringify({ ...makeRecord(4, 'minion'), id: 'd'.repeat(32), role: `role-${i}-${'r'.repeat(100)}` }));
    await flush(10);
    expect(capture.events().filter((e) => e.event === 'machine.invalid')).toHaveLength(1);
    expect(d.snapshot().invalid.size).toBe(1);
    // another problem on the same key is a new line
    await store.put(keys.machine('d'.repeat(32)), '{');
    await flush(5);
    expect(capture.events().filter((e) => e.event === 'machine.invalid')).toHaveLength(2);
  });

  it('remembers at most MAX_INVALID_REMEMBERED bad keys and counts the rest; a key a megabyte long is remembered by a digest', async () => {
    const store = new MemoryStore();
    const { d, capture } = await start(store, JOIN_REQUESTS);
    await store.put(`${keys.join}${'k'.repeat(1_000_000)}`, '{}');
    for (let i = 0; i < MAX_INVALID_REMEMBERED + 50; i++) await store.put(`${keys.join}bad-${i}`, 'x');
    await flush(10);
    const snap = d.snapshot();
    expect(snap.invalid.size).toBe(MAX_INVALID_REMEMBERED);
    expect(snap.overflow).toBe(51);
    expect([...snap.invalid.keys()].every((k) => k.length <= 71)).toBe(true);
    expect(capture.events().filter((e) => e.event === 'discovery.overflow').length).toBeLessThanOrEqual(3);
  });

  it('keeps at most maxRecords valid records of a source and counts the rest', async () => {
    const store = new MemoryStore();
    const source: RecordSource = { ...JOIN_REQUESTS, maxRecords: 3 };
    for (let n = 1; n <= 5; n++) await store.put(keys.joinOf(makeRecord(n, 'minion').id), JSON.stringify(makeRecord(n, 'minion')));
    const { d } = await start(store, source);
    expect(d.snapshot().records.size).toBe(3);
    expect(d.snapshot().overflow).toBe(2);
  });

  it('survives a consumer that throws: the change costs one error line and the watch goes on', async () => {
    const store = new MemoryStore();
    const capture = captureLog();
    let calls = 0;
    discovery = new Discovery({
      store,
      keys,
      log: capture.log,
      clock: new FakeClock(),
      onChange: () => {
        calls++;
        throw new RangeError('Maximum call stack size exceeded');
      },
    });
    await discovery.start();
    await store.put(keys.machine(makeRecord(1, 'minion').id), JSON.stringify(makeRecord(1, 'minion')));
    await store.put(keys.machine(makeRecord(2, 'minion').id), JSON.stringify(makeRecord(2, 'minion')));
    await flush(10);
    expect(discovery.snapshot().records.size).toBe(2);
    expect(calls).toBe(3);
    expect(capture.events().filter((e) => e.event === 'discovery.change-failed')).toHaveLength(3);
  });

  it('lists page by page, and a listing that fails half way leaves the view it had', async () => {
    const store = new MemoryStore();
    store.pageSize = 2;
    for (let n = 1; n <= 5; n++) await store.put(keys.machine(makeRecord(n, 'minion').id), JSON.stringify(makeRecord(n, 'minion')));
    const { d } = await start(store);
    expect(d.snapshot().records.size).toBe(5);
    const before = d.snapshot();
    let pages = 0;
    const scan = store.scan.bind(store);
    store.scan = (prefix, onPage) =>
      scan(prefix, (kvs) => {
        if (++pages === 2) throw new Error('etcd went away mid-listing');
        onPage(kvs);
      });
    store.compactAndLoseWatches(); // the watch is lost: discovery lists again, and that fails half way
    await flush(10);
    expect(d.snapshot()).toBe(before);
  });
});
