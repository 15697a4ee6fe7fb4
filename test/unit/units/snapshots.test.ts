import { describe, expect, it } from 'vitest';
import { renderUnits } from '../../../units/index.ts';
import { context, spec } from './fixtures.ts';

// Every rendered file as shipped, one snapshot file each, so a reviewer diffs real units and configs.
describe('rendered files (snapshots)', () => {
  for (const role of ['master', 'minion'] as const) {
    const rendered = renderUnits(context(role));
    for (const f of rendered.files) {
      it(`${role}: ${f.path}`, async () => {
        await expect(f.content).toMatchFileSnapshot(`__snapshots__/${role}${f.path}`);
      });
    }
    it(`${role}: start order and hash`, async () => {
      await expect(`${rendered.start.map((s) => `${s.unit} ${s.until}`).join('\n')}\nhash ${rendered.hash}\n`).toMatchFileSnapshot(`__snapshots__/${role}.start`);
    });
  }

  // a minion with the node-local API proxy: the files that differ from the minion's above (the proxy unit, the
  // units and kubeconfigs that name it, the release manifest with etcd)
  const plain = new Map(renderUnits(context('minion')).files.map((f) => [f.path, f.content]));
  const nodeLocal = renderUnits(context('minion', spec({ 'api-load-balancer': 'node-local' })));
  for (const f of nodeLocal.files.filter((x) => plain.get(x.path) !== x.content)) {
    it(`minion with apiLoadBalancer node-local: ${f.path}`, async () => {
      await expect(f.content).toMatchFileSnapshot(`__snapshots__/minion-node-local${f.path}`);
    });
  }
  it('minion with apiLoadBalancer node-local: start order and hash', async () => {
    await expect(`${nodeLocal.start.map((s) => `${s.unit} ${s.until}`).join('\n')}\nhash ${nodeLocal.hash}\n`).toMatchFileSnapshot('__snapshots__/minion-node-local.start');
  });
});
