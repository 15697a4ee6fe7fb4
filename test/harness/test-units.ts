import { createHash } from 'node:crypto';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import type { Role } from '../../contracts/roles.ts';
import type { RenderedUnits } from '../../contracts/step.ts';
import type { Machine } from './machines.ts';

/**
 * Small REAL systemd units for the tests of the overlord's deploy mechanics on real machines (test/e2e,
 * test/adversarial): what the overlord does with any units — write them with a file naming the machine they were
 * rendered for (DEPLOYED_FOR), reload systemd, start them in order and wait for each, a oneshot until it exited
 * (like the download), services until active (like etcd or the kubelet) — without Kubernetes' programs, which
 * need the cluster's PKI and pod network (test/e2e/local-cloud.test.ts deploys those).
 *
 *   corekube-test.service            oneshot, RemainAfterExit (TEST_UNIT)
 *   corekube-test-<name>.service     `sleep infinity`, per role (TEST_SERVICES), each after the oneshot
 *
 * What ran, and how often, is read from systemd itself (unitFacts): the unit's InvocationID and start time, its
 * automatic restarts, and every invocation of this boot in the journal. A service refuses to start while
 * FAULT_FILE exists on the machine, printing the file's content to its journal: a unit that fails, for real.
 */
export const DEPLOYED_FOR = '/etc/corekube-test/deployed-for';
export const FAULT_FILE = '/etc/corekube-test/fault';
export const TEST_UNIT = 'corekube-test.service';
/** the services of each role, in start order (as many as the real units, so a deploy has as many steps) */
export const TEST_SERVICES: Readonly<Record<Role, readonly string[]>> = Object.freeze({
  master: ['corekube-test-store.service', 'corekube-test-api.service', 'corekube-test-control.service', 'corekube-test-network.service'],
  minion: ['corekube-test-network.service', 'corekube-test-runtime.service', 'corekube-test-node.service'],
});

export interface TestUnitsOptions {
  /** part of what is rendered: a new version redeploys every machine (default 1) */
  readonly version?: () => number;
  /** the role's services too (default true); false: the oneshot alone */
  readonly services?: boolean;
  /**
   * per unit, an edition written into its unit file (`Environment=COREKUBE_TEST_EDITION=<n>`): a new edition
   * changes that unit's inputs alone, so a redeploy restarts it and nothing else (overlord/deploy/unit-inputs.ts)
   */
  readonly editions?: () => Readonly<Record<string, number>>;
}

/** Every unit a machine of `role` gets, in start order. */
export function testUnitNames(role: Role, options: TestUnitsOptions = {}): string[] {
  return [TEST_UNIT, ...(options.services === false ? [] : TEST_SERVICES[role])];
}

const ONESHOT = `[Unit]
Description=corekube test deployment (a oneshot, like the download)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
[Install]
WantedBy=multi-user.target
`;

const service = () => `[Unit]
Description=corekube test service (runs until stopped, like a component)
After=${TEST_UNIT}
Requires=${TEST_UNIT}
[Service]
Type=simple
ExecStartPre=/bin/sh -c 'test ! -e ${FAULT_FILE} || { echo "corekube-test: refusing to start: $$(cat ${FAULT_FILE})" >&2; exit 2; }'
ExecStart=/bin/sleep infinity
Restart=on-failure
RestartSec=2
[Install]
WantedBy=multi-user.target
`;

/** The overlord's `unitsFor` for test units: what a machine gets depends on its record (like Kubernetes' units on its address). */
export function testUnits(options: TestUnitsOptions = {}): (record: MachineRecord) => RenderedUnits {
  return (record) => {
    const units = testUnitNames(record.role, options);
    const editions = options.editions?.() ?? {};
    const edited = (u: string, text: string) => (editions[u] === undefined ? text : text.replace('[Service]\n', `[Service]\nEnvironment=COREKUBE_TEST_EDITION=${editions[u]}\n`));
    const files = [
      { path: DEPLOYED_FOR, content: `${record.id} ${record.hostname} ${record.role} ${record.ip} v${options.version?.() ?? 1}\n`, mode: '0644' },
      ...units.map((u) => ({ path: `/etc/systemd/system/${u}`, content: edited(u, u === TEST_UNIT ? ONESHOT : service()), mode: '0644' })),
    ];
    return {
      files,
      start: units.map((u) => ({ unit: u, until: u === TEST_UNIT ? ('exited' as const) : ('active' as const) })),
      hash: createHash('sha256').update(JSON.stringify(files)).digest('hex').slice(0, 16),
    };
  };
}

/**
 * `unitsForSpec` for `corekube overlord` run with test/harness/units-mock.mjs: the CLI process, exactly as an
 * operator runs it, deploying these test units instead of Kubernetes' (overlord/deploy/machine-units.ts's signature).
 */
export function unitsForSpec(): (record: MachineRecord) => RenderedUnits {
  return testUnits();
}

/** What systemd knows of one unit on one machine. */
export interface UnitFacts {
  readonly activeState: string;
  readonly subState: string;
  /** this run's id: a new one at each start */
  readonly invocationId: string;
  /** when its main process started (monotonic µs; 0 for a oneshot that has exited) */
  readonly startedAt: string;
  /** automatic restarts (Restart=) */
  readonly restarts: number;
  /** its invocations in this boot, from the journal (each start is a new invocation) */
  readonly invocations: number;
  readonly enabled: string;
}

/** unitFacts for each unit, read on the machine. */
export async function unitFacts(machine: Machine, units: readonly string[]): Promise<Record<string, UnitFacts>> {
  const out: Record<string, UnitFacts> = {};
  for (const unit of units) {
    const show = await machine.exec(['systemctl', 'show', '-p', 'ActiveState,SubState,InvocationID,ExecMainStartTimestampMonotonic,NRestarts,UnitFileState', unit]);
    const p = Object.fromEntries(show.stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    const journal = await machine.exec(['journalctl', '-b', '-u', unit, '-o', 'json', '--output-fields=INVOCATION_ID', '--no-pager']);
    const ids = new Set(journal.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { INVOCATION_ID?: string }).INVOCATION_ID).filter((id) => id !== undefined));
    out[unit] = {
      activeState: p.ActiveState ?? '',
      subState: p.SubState ?? '',
      invocationId: p.InvocationID ?? '',
      startedAt: p.ExecMainStartTimestampMonotonic ?? '',
      restarts: Number(p.NRestarts ?? NaN),
      invocations: ids.size,
      enabled: p.UnitFileState ?? '',
    };
  }
  return out;
}

/** Facts of a unit deployed once and untouched since: running (or exited, the oneshot), started once this boot, enabled. */
export function deployedOnce(unit: string): Partial<UnitFacts> {
  return unit === TEST_UNIT
    ? { activeState: 'active', subState: 'exited', restarts: 0, invocations: 1, enabled: 'enabled' }
    : { activeState: 'active', subState: 'running', restarts: 0, invocations: 1, enabled: 'enabled' };
}
