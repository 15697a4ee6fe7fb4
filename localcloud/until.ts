/**
 * Waits until `probe` gives a value (anything but undefined), trying every `intervalMs`; throws naming what it
 * waited for, with `detail()` (a log excerpt), once `timeoutMs` has passed. For tests on real parts, which
 * take their own time: never a fixed sleep.
 */
export async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined> | T | undefined, detail: () => string = () => '', intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) {
      const more = detail();
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${more ? `\n${more}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
