import type { Store } from '../overlord/edges/store.ts';

/**
 * The overlord's store with every request counted, by method (a watch counts once, when it is made; its
 * events are not requests). Writes are the methods that change etcd. Wraps whatever methods the Store
 * interface has, so it follows the interface as it grows.
 */
export const WRITE_METHODS: readonly string[] = ['put', 'delete', 'putAll'];

export interface StoreCounts {
  readonly requests: number;
  readonly writes: number;
  readonly byMethod: Readonly<Record<string, number>>;
}

export function countingStore(store: Store): { store: Store; counts(): StoreCounts } {
  const byMethod: Record<string, number> = {};
  const wrapped = new Proxy(store, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || prop === 'close' || typeof prop !== 'string') return value;
      return (...args: unknown[]) => {
        byMethod[prop] = (byMethod[prop] ?? 0) + 1;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return {
    store: wrapped,
    counts: () => {
      const copy = { ...byMethod };
      const total = (keys: readonly string[]) => keys.reduce((n, k) => n + (copy[k] ?? 0), 0);
      return { requests: total(Object.keys(copy)), writes: total(WRITE_METHODS), byMethod: copy };
    },
  };
}
