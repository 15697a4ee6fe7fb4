/**
 * Prints how long `corekube heat generate` takes to build and serialise the cluster template, for 5 and 500
 * minions, and the template sizes (which must be equal but for the count's digits). Run: npx tsx bench/generate.ts
 */
import { performance } from 'node:perf_hooks';
import { renderUserData } from '../cloud-config/index.ts';
import { renderClusterTemplate } from '../heat/cluster-template.ts';
import { parseClusterSpec } from '../clusterspec/cluster-spec.ts';

const RUNS = 50;
for (const minions of [5, 500]) {
  const times: number[] = [];
  let size = 0;
  for (let i = 0; i < RUNS; i++) {
    const start = performance.now();
    const spec = parseClusterSpec({ flags: { masters: '5', minions: String(minions) } });
    size = renderClusterTemplate(spec, renderUserData).length;
    times.push(performance.now() - start);
  }
  const first = times[0]!.toFixed(2);
  times.sort((a, b) => a - b);
  const ms = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]!.toFixed(2);
  console.log(`heat generate, 5 masters, ${minions} minions: first run ${first} ms, median ${ms(0.5)} ms, p95 ${ms(0.95)} ms, max ${ms(1)} ms over ${RUNS} runs; template ${size} bytes`);
}
