/** core/untrusted.ts: bounded parsing, excerpts, key references and bounded memory for untrusted values. */
import { describe, expect, it } from 'vitest';
import { BoundedMemo, excerpt, jsonDepth, keyRef, parseBoundedJson } from '../../../core/untrusted.ts';

describe('untrusted input', () => {
  it('counts nesting on the text, ignoring brackets inside strings and escaped quotes', () => {
    expect(jsonDepth('{"a":"[[[{{{","b":"\\"[["}')).toBe(1);
    expect(jsonDepth('[[{"x":[1]}]]')).toBe(4);
    expect(jsonDepth('['.repeat(1_000_000), 2)).toBe(3); // stops counting past the limit
  });

  it('parses JSON only within the size and depth given, and never throws', () => {
    expect(parseBoundedJson('{"a":[1]}', { maxBytes: 100, maxDepth: 2 })).toEqual({ ok: true, value: { a: [1] } });
    expect(parseBoundedJson('x'.repeat(101), { maxBytes: 100, maxDepth: 2 })).toMatchObject({ ok: false, reason: 'is more than 100 bytes, more than a record may be' });
    expect(parseBoundedJson('"€€€€"', { maxBytes: 10, maxDepth: 2 })).toMatchObject({ ok: false }); // 14 UTF-8 bytes
    expect(parseBoundedJson('[[[1]]]', { maxBytes: 100, maxDepth: 2 })).toMatchObject({ ok: false, reason: 'nests more than 2 levels deep' });
    expect(parseBoundedJson('{', { maxBytes: 100, maxDepth: 2 })).toMatchObject({ ok: false, reason: 'is not JSON' });
  });

  it('shows a short escaped excerpt of a string and only the kind of anything else', () => {
    expect(excerpt('ok')).toBe('"ok"');
    expect(excerpt(`a\nb\u001b\u202e${'c'.repeat(100)}`)).toBe(`"a\\u000ab\\u001b\\u202e${'c'.repeat(43)}..." (105 characters)`);
    expect([excerpt(null), excerpt([1]), excerpt({}), excerpt(3), excerpt(NaN), excerpt(true)]).toEqual(['null', 'an array', 'an object', 'the number 3', 'a number', 'true']);
  });

  it('refers to a long or unprintable key by a digest', () => {
    expect(keyRef('0123456789abcdef0123456789abcdef')).toBe('0123456789abcdef0123456789abcdef');
    expect(keyRef('x'.repeat(65))).toMatch(/^sha256:[0-9a-f]{32}$/);
    expect(keyRef('a\nb')).toBe(keyRef('a\nb'));
    expect(keyRef('a\nb')).not.toBe(keyRef('a\nc'));
  });

  it('remembers at most its capacity, dropping the oldest, and says when a key is seen with a new value', () => {
    const memo = new BoundedMemo<string>(3);
    for (let i = 0; i < 1000; i++) memo.set(`k${i}`, 'v');
    expect(memo.size).toBe(3);
    expect([...memo.keys()]).toEqual(['k997', 'k998', 'k999']);
    expect(memo.firstTime('k999', 'v')).toBe(false);
    expect(memo.firstTime('k999', 'w')).toBe(true);
    expect(memo.firstTime('new', 'v')).toBe(true);
    expect(memo.has('k997')).toBe(false);
  });
});
