import type { RemoteFile, RenderedUnits } from '../../contracts/step.ts';
import { hashFiles, LAYOUT } from '../../units/index.ts';

/**
 * PURE: what each started unit of a machine reads among its rendered files, as one hash per unit — so a
 * redeploy restarts exactly the units whose inputs changed (planner.ts) and the ledger records per unit what
 * it applied (contracts/ledger-entry.ts `applied`).
 *
 * A unit's inputs are its unit file (and drop-ins), then every file that any input names — by its path, or by
 * a directory it lies under (containerd's `config_path`, a kubelet `--config-dir`) — until nothing new is
 * named: kubelet.service names its config.yaml and kubeconfig, which name the CA, its certificate and key.
 * A name counts only as a whole path (the next character ends the path), and a directory only three levels
 * deep or more (`/etc/corekube/containerd/certs.d`, never `/etc/corekube`), so one unit does not swallow every file.
 */
export function unitInputs(units: RenderedUnits): ReadonlyMap<string, string> {
  let out = computed.get(units);
  if (out === undefined) {
    out = new Map(units.start.map(({ unit }) => [unit, hashFiles(inputFilesOf(unit, units.files))]));
    computed.set(units, out);
  }
  return out;
}

/** per rendering (units are frozen once rendered, and planned again at every ledger change) */
const computed = new WeakMap<RenderedUnits, ReadonlyMap<string, string>>();

/** The files `unit` reads (see unitInputs), its unit file first. */
export function inputFilesOf(unit: string, files: readonly RemoteFile[]): RemoteFile[] {
  const own = `${LAYOUT.unitDir}/${unit}`;
  const inputs = files.filter((f) => f.path === own || f.path.startsWith(`${own}.d/`));
  const rest = files.filter((f) => !inputs.includes(f));
  for (let i = 0; i < inputs.length; i++) {
    const text = inputs[i]!.content;
    for (let j = rest.length - 1; j >= 0; j--) {
      if (names(text, rest[j]!.path)) inputs.push(...rest.splice(j, 1));
    }
  }
  return inputs;
}

/** Whether `text` names `path` or a directory (three levels or deeper) that holds it, as a whole path. */
function names(text: string, path: string): boolean {
  const parts = path.split('/');
  for (let depth = parts.length; depth >= 4; depth--) {
    if (namesWhole(text, parts.slice(0, depth).join('/'))) return true;
  }
  return false;
}

function namesWhole(text: string, path: string): boolean {
  for (let at = text.indexOf(path); at !== -1; at = text.indexOf(path, at + 1)) {
    const next = text[at + path.length];
    if (next === undefined || !/[\w./-]/.test(next)) return true;
  }
  return false;
}
