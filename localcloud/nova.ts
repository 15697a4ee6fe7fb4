/**
 * The local cloud's Nova (and Neutron's DHCP): watches the stack for server stand-ins Heat is waiting for
 * (localcloud/heat/servers.ts pendingServers), boots one systemd-nspawn machine for each on the
 * cloud's bridge — with the user_data Heat resolved as its cloud-init NoCloud user-data, at the fixed IP its
 * port asks for or the next free address of the subnet's allocation pool — and reports it booted to Heat as
 * soon as it runs with its network up (the server becomes CREATE_COMPLETE, `first_address` resolves).
 * A machine that fails to boot is reported failed (Heat fails the server, like Nova's ERROR).
 */
import type { HeatClient, StackRef, StackResource } from '../cloud/heat-client.ts';
import { formatIpv4, parseIpv4 } from '../clusterspec/cidr.ts';
import { BOOT_HANDLE } from './heat/providers/compute.ts';
import { liveServerStacks, pendingServers, reportBooted, type LocalServer } from './heat/servers.ts';
import type { Fleet, Machine } from './machines/machines.ts';

export interface ServerBoot {
  readonly server: LocalServer;
  /** metadata corekube_role of the server (overlord, discovery, master, minion) */
  readonly role: string;
  readonly ip: string;
  /** epoch ms: Heat's stand-in seen waiting; the machine running with its network up (reported booted); systemd ready */
  readonly seenAt: number;
  startedAt: number | undefined;
  readyAt: number | undefined;
  machine: Machine | undefined;
  error: string | undefined;
  /** epoch ms: Heat deleted the server and its machine was powered off (Nova's delete) */
  deletedAt: number | undefined;
  /** resolves once the machine is ready (systemd running, sshd answering); rejects when its boot failed */
  readonly ready: Promise<Machine>;
}

export type NovaEvent =
  | { readonly kind: 'boot.start'; readonly boot: ServerBoot }
  | { readonly kind: 'boot.reported'; readonly boot: ServerBoot }
  | { readonly kind: 'boot.ready'; readonly boot: ServerBoot }
  | { readonly kind: 'boot.failed'; readonly boot: ServerBoot; readonly reason: string }
  | { readonly kind: 'server.deleted'; readonly boot: ServerBoot }
  | { readonly kind: 'poll.failed'; readonly reason: string };

export interface NovaOptions {
  readonly fleet: Fleet;
  /** what every machine's image brings besides the shared rootfs (apt sources, cloud-init config) */
  readonly imageFiles: readonly { path: string; content: string }[];
  readonly onEvent?: (event: NovaEvent) => void;
  /** between looks at the stack (default 1000 ms) */
  readonly pollMs?: number;
}

export class Nova {
  /** every server this Nova has booted or is booting, by the id of its stand-in stack */
  readonly boots = new Map<string, ServerBoot>();
  #pools: { start: number; end: number }[] | undefined;
  readonly #options: NovaOptions;
  #stopped = false;
  /** server stand-ins missing from Heat's listing, and in how many listings in a row */
  readonly #missing = new Map<string, number>();
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(options: NovaOptions) {
    this.#options = options;
  }

  /** Starts watching `stack` through `heat`; `stop()` ends it. */
  start(heat: HeatClient, stack: StackRef): void {
    if (this.#loop) throw new Error('Nova watches a stack already');
    this.#loop = this.#run(heat, stack);
  }

  /** Stops watching; with waitForBoots (default) also waits until the boots under way end. */
  async stop(options: { waitForBoots?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    if (options.waitForBoots ?? true) await Promise.allSettled([...this.boots.values()].map((b) => b.ready));
  }

  /** The boot of the first server matching `pick`, once Nova has seen it (polls this object, not Heat). */
  async boot(pick: (b: ServerBoot) => boolean, signal?: AbortSignal): Promise<ServerBoot> {
    for (;;) {
      const found = [...this.boots.values()].find(pick);
      if (found) return found;
      signal?.throwIfAborted();
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async #run(heat: HeatClient, stack: StackRef): Promise<void> {
    const { onEvent } = this.#options;
    while (!this.#stopped) {
      try {
        const resources = await heat.resources(stack, { nestedDepth: 5 });
        await this.#deleteGone(resources);
        const pending = await pendingServers(heat, stack, { except: new Set(this.boots.keys()), resources });
        for (const server of pending) {
          if (this.#stopped) break;
          const ip = server.requestedAddress || (await this.#lease(heat, stack));
          this.#startBoot(heat, server, ip);
        }
      } catch (err) {
        if (!this.#stopped) onEvent?.({ kind: 'poll.failed', reason: err instanceof Error ? err.message : String(err) });
      }
      if (this.#stopped) break;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.#options.pollMs ?? 1000);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /**
   * Nova's delete: a machine whose server Heat deleted (a stack update lowered a count) is powered off, seen
   * missing twice in a row (one listing taken mid-update must not power off a machine). Its disk and address
   * stay with the fleet until teardown, and its address is not leased again.
   */
  async #deleteGone(resources: readonly StackResource[]): Promise<void> {
    const live = liveServerStacks(resources);
    for (const [id, boot] of this.boots) {
      if (live.has(id) || boot.deletedAt !== undefined || !boot.machine || boot.readyAt === undefined) {
        this.#missing.delete(id);
        continue;
      }
      const seen = (this.#missing.get(id) ?? 0) + 1;
      this.#missing.set(id, seen);
      if (seen < 2) continue;
      boot.deletedAt = Date.now();
      this.#options.onEvent?.({ kind: 'server.deleted', boot });
      await boot.machine.stop('SIGTERM').catch(() => undefined);
    }
  }

  #startBoot(heat: HeatClient, server: LocalServer, ip: string): void {
    const { fleet, onEvent } = this.#options;
    let resolveReady!: (m: Machine) => void;
    let rejectReady!: (e: Error) => void;
    const ready = new Promise<Machine>((res, rej) => {
      resolveReady = res;
      rejectReady = rej;
    });
    ready.catch(() => undefined); // observed through the event and by whoever awaits it
    const boot: ServerBoot = {
      server, ip, role: String(server.metadata.corekube_role ?? 'unknown'), seenAt: Date.now(),
      startedAt: undefined, readyAt: undefined, machine: undefined, error: undefined, deletedAt: undefined, ready,
    };
    this.boots.set(server.stack.id, boot);
    onEvent?.({ kind: 'boot.start', boot });
    const hostname = server.name.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63);
    const metaData = `instance-id: ${server.stack.id}\nlocal-hostname: ${hostname}\n`;
    let reported: Promise<void> = Promise.resolve();
    fleet
      .add([{ hostname, ip, cloudInit: { userData: server.userData, metaData }, files: this.#options.imageFiles }], {
        onStarted: (m) => {
          boot.machine = m;
          boot.startedAt = Date.now();
          reported = reportBooted(heat, server, ip).then(() => onEvent?.({ kind: 'boot.reported', boot }));
        },
      })
      .then(async ([m]) => {
        await reported;
        boot.machine = m;
        boot.readyAt = Date.now();
        onEvent?.({ kind: 'boot.ready', boot });
        resolveReady(m!);
      })
      .catch(async (err: unknown) => {
        const reason = err instanceof Error ? err.message : String(err);
        boot.error = reason;
        rejectReady(new Error(`${hostname} (${ip}) did not boot: ${reason}`));
        if (this.#stopped) return; // torn down while it booted: nothing to tell anyone
        onEvent?.({ kind: 'boot.failed', boot, reason });
        // like Nova's ERROR: Heat fails the server (a boot reported already cannot be taken back)
        if (boot.startedAt === undefined) {
          await heat.signal(server.stack, BOOT_HANDLE, { status: 'FAILURE', reason: `the machine did not boot: ${reason.split('\n')[0]}`, id: '1', data: '' }).catch(() => undefined);
        }
      });
  }

  /** The lowest address of the subnet's allocation pools that no machine has (Neutron's DHCP). */
  async #lease(heat: HeatClient, stack: StackRef): Promise<string> {
    this.#pools ??= await allocationPools(heat, stack);
    const taken = new Set([...this.boots.values()].map((b) => b.ip));
    for (const pool of this.#pools) {
      for (let a = pool.start; a <= pool.end; a++) {
        const ip = formatIpv4(a);
        if (!taken.has(ip)) return ip;
      }
    }
    throw new Error('the subnet\'s allocation pools are exhausted');
  }

}

/** The allocation pools of the stack's one subnet (its stand-in's outputs), as address numbers. */
async function allocationPools(heat: HeatClient, stack: StackRef): Promise<{ start: number; end: number }[]> {
  const subnets = (await heat.resources(stack, { nestedDepth: 1 })).filter((r) => r.type === 'OS::Neutron::Subnet' && r.nested);
  if (subnets.length !== 1) throw new Error(`expected one subnet in stack ${stack.name}, found ${subnets.length}`);
  const pools = (await heat.outputs(subnets[0]!.nested!)).allocation_pools as { start?: string; end?: string }[] | null;
  const parsed = (pools ?? []).map((p) => ({ start: parseIpv4(p.start ?? ''), end: parseIpv4(p.end ?? '') }));
  if (parsed.length === 0 || parsed.some((p) => p.start === undefined || p.end === undefined)) throw new Error(`the subnet has no usable allocation_pools: ${JSON.stringify(pools)}`);
  return parsed as { start: number; end: number }[];
}
