/**
 * Last-resort cleanup of what the harness started (processes, mounts, namespaces, bridges, cgroups), run
 * synchronously when the process exits — also when a test failed or a hook threw before its afterAll ran.
 * Each harness resource registers a synchronous undo here when it starts and unregisters it once its
 * orderly async teardown has run, so nothing is undone twice. A SIGKILL of the test process cannot be
 * caught: `scripts/machines down --all` removes what such a run left behind.
 */
type Undo = () => void;

const pending = new Map<number, { what: string; undo: Undo }>();
let nextId = 1;
let installed = false;

function runAll(): void {
  // newest first: a machine is torn down before the bridge it hangs on
  for (const [id, { what, undo }] of [...pending.entries()].reverse()) {
    pending.delete(id);
    try {
      undo();
    } catch (err) {
      process.stderr.write(`harness: cleanup of ${what} failed: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
}

/** Registers a synchronous undo; returns the function that unregisters it. */
export function onExit(what: string, undo: Undo): () => void {
  if (!installed) {
    installed = true;
    process.on('exit', runAll);
  }
  const id = nextId++;
  pending.set(id, { what, undo });
  return () => {
    pending.delete(id);
  };
}

/** Runs every registered undo now (the `scripts/machines` CLI calls this on SIGINT/SIGTERM). */
export function cleanupNow(): void {
  runAll();
}
