import { CorekubeError } from '../../core/errors.ts';
import type { HostTarget } from '../edges/host-runner.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import type { HostKeyPolicy } from '../edges/ssh-runner.ts';
import type { Fence, Store } from '../edges/store.ts';

/**
 * Trust on first use, recorded in etcd: when a machine's record pins no host key, the first key the
 * overlord sees is stored at `<prefix>/hostkeys/<id>` (create-if-absent), and every later connection —
 * by this overlord, a restarted one or a standby — must present the same key. Another key recorded
 * meanwhile (two overlords racing) is a mismatch, E_SSH_HOSTKEY.
 */
export function etcdHostKeys(store: Store, keys: ClusterKeys, fence: () => Fence | undefined = () => undefined): HostKeyPolicy {
  return {
    async expected(target: HostTarget): Promise<string | undefined> {
      const kv = await store.get(keys.hostkeyOf(target.id));
      return kv ? kv.value.trim() : undefined;
    },
    async remember(target: HostTarget, key: string): Promise<void> {
      const f = fence();
      try {
        await store.put(keys.hostkeyOf(target.id), key, { expectModRevision: '0', ...(f ? { fence: f } : {}) });
      } catch (err) {
        if (!(err instanceof CorekubeError) || err.code !== 'E_ETCD_CONFLICT') throw err;
        const kv = await store.get(keys.hostkeyOf(target.id));
        if (kv && kv.value.trim() === key.trim()) return;
        throw new CorekubeError('E_SSH_HOSTKEY', `machine ${target.id} (${target.ip}) presented a host key other than the one recorded for it meanwhile`, {
          hint: `if the machine was reinstalled, delete ${keys.hostkeyOf(target.id)} in etcd`,
        });
      }
    },
  };
}
