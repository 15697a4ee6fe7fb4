/**
 * Integration tests skip cleanly when a real part is missing on a developer's machine, and fail loudly in CI
 * (where `CI` is set), so a CI image that lost a package never turns into a green run that tested nothing.
 *
 *   const skip = missingParts(etcdMissing(), machinesMissing());
 *   describe.skipIf(skip)('…', () => { … });
 */
export function missingParts(...reasons: (string | undefined)[]): string | false {
  const missing = reasons.filter((r): r is string => r !== undefined);
  if (missing.length === 0) return false;
  const text = missing.join('; ');
  if (process.env.CI) throw new Error(`CI is set but a required part is missing: ${text}`);
  process.stderr.write(`skipping: ${text}\n`);
  return text;
}
