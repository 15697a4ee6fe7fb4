/**
 * `node --import test/harness/units-mock.mjs bin/corekube.js overlord --etcd-endpoints …`: `corekube overlord`
 * exactly as an operator runs it (its flags, leader election, health endpoint, signals, exit code), deploying
 * test/harness/test-units.ts's small real units instead of Kubernetes' — the child-process counterpart of
 * vi.mock('overlord/deploy/machine-units.ts'). A module resolution hook answers test-units.ts where the overlord imports
 * overlord/deploy/machine-units.ts; nothing else changes. For the e2e tests of the overlord's deploy mechanics, whose machines
 * have no cluster PKI for the real units to start with.
 */
import { register } from 'node:module';

const target = new URL('../../overlord/deploy/machine-units.ts', import.meta.url).href;
const replacement = new URL('./test-units.ts', import.meta.url).href;
const hooks = `export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  return resolved.url === ${JSON.stringify(target)} ? { ...resolved, url: ${JSON.stringify(replacement)} } : resolved;
}`;
register(`data:text/javascript,${encodeURIComponent(hooks)}`);
