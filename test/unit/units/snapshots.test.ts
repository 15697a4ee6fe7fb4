import { describe, expect, it } from 'vitest';
import { renderUnits } from '../../../units/index.ts';
import { context } from './fixtures.ts';

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
});
