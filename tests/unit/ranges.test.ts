import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { batchSelect, rangePredicate } from '../../src/source/ranges.js';
import { addDigests, EMPTY_DIGEST, parseDigest, RowSumDigest, StreamDigest, digestText } from '../../src/verify/rowDigest.js';

const id = [{ name: 'id', type: 'bigint', collate: false }];
const composite = [
  { name: 'patient_id', type: 'bigint', collate: false },
  { name: 'code', type: 'text', collate: true },
];

describe('range SQL', () => {
  it('builds half-open row comparisons with typed parameters', () => {
    expect(rangePredicate({ kind: 'key', low: ['10'], high: ['20'] }, id)).toEqual({
      sql: '"id" >= $1::bigint AND "id" < $2::bigint',
      params: ['10', '20'],
    });
    expect(rangePredicate({ kind: 'key', low: null, high: ['5', "o'brien"] }, composite)).toEqual({
      sql: '("patient_id", "code" COLLATE "C") < ($1::bigint, $2::text COLLATE "C")',
      params: ['5', "o'brien"],
    });
    expect(rangePredicate({ kind: 'key', low: null, high: null }, id)).toEqual({ sql: 'true', params: [] });
    expect(rangePredicate({ kind: 'ctid', lowPage: 100, highPage: null }, [])).toEqual({ sql: "ctid >= '(100,0)'::tid", params: [] });
  });

  it('inlines literals safely for COPY', () => {
    expect(
      batchSelect(
        '"public"."t"',
        ['id', 'x"y'],
        { kind: 'key', low: ["a'; drop table t; --"], high: null },
        [{ name: 'id', type: 'text', collate: true }],
        "id <> 'z'",
      ),
    ).toBe(
      `SELECT "id", "x""y" FROM "public"."t" WHERE "id" COLLATE "C" >= 'a''; drop table t; --'::text COLLATE "C" AND (id <> 'z') ORDER BY "id" COLLATE "C"`,
    );
    // Only the bounds are filled in: a column named k$1 and a where's '$1' stay as written.
    expect(
      batchSelect('"t"', ['k$1'], { kind: 'key', low: ['7'], high: null }, [{ name: 'k$1', type: 'integer', collate: false }], "n <> '$1'"),
    ).toBe(`SELECT "k$1" FROM "t" WHERE "k$1" >= '7'::integer AND (n <> '$1') ORDER BY "k$1"`);
  });
});

async function digestOf(format: 'text' | 'binary', chunks: Buffer[]) {
  const d = new RowSumDigest(format);
  await pipeline(Readable.from(chunks), d, new Writable({ write: (_c, _e, cb) => cb() }));
  return d.digest;
}

function binaryCopy(rows: Array<Array<Buffer | null>>): Buffer {
  const parts: Buffer[] = [Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.from([0, 0, 0, 0, 0, 0, 0, 0])];
  for (const r of rows) {
    const h = Buffer.alloc(2);
    h.writeInt16BE(r.length);
    parts.push(h);
    for (const f of r) {
      const l = Buffer.alloc(4);
      l.writeInt32BE(f === null ? -1 : f.length);
      parts.push(l);
      if (f) parts.push(f);
    }
  }
  parts.push(Buffer.from([0xff, 0xff]));
  return Buffer.concat(parts);
}

function splitEvery(b: Buffer, n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += n) out.push(b.subarray(i, i + n));
  return out;
}

describe('COPY stream digests', () => {
  const text = Buffer.from('1\talice\n2\tbob\\nsmith\n3\t\\N\n');

  it('does not depend on row order or chunking (text)', async () => {
    const a = await digestOf('text', [text]);
    const b = await digestOf('text', splitEvery(Buffer.from('3\t\\N\n1\talice\n2\tbob\\nsmith\n'), 3));
    expect(a.rows).toBe(3);
    expect(b).toEqual(a);
  });

  it('changes when one byte or one row changes', async () => {
    const a = await digestOf('text', [text]);
    expect(await digestOf('text', [Buffer.from('1\talicf\n2\tbob\\nsmith\n3\t\\N\n')])).not.toEqual(a);
    expect(await digestOf('text', [Buffer.from('1\talice\n2\tbob\\nsmith\n3\t\\N\n3\t\\N\n')])).not.toEqual(a);
  });

  it('parses binary COPY tuples across any chunk boundary, NULLs included', async () => {
    const rows = [
      [Buffer.from('a'), null, Buffer.alloc(300, 7)],
      [Buffer.from(''), Buffer.from('xyz'), null],
    ];
    const whole = await digestOf('binary', [binaryCopy(rows)]);
    expect(whole.rows).toBe(2);
    for (const size of [1, 2, 5, 17, 64]) expect(await digestOf('binary', splitEvery(binaryCopy(rows), size))).toEqual(whole);
    expect(await digestOf('binary', [binaryCopy([...rows].reverse())])).toEqual(whole);
  });

  it('joins a big binary value from its chunks once, not once per chunk', async () => {
    const big = binaryCopy([[Buffer.from('k'), Buffer.alloc(4 * 1024 * 1024, 9)]]);
    const concat = vi.spyOn(Buffer, 'concat');
    try {
      const d = await digestOf('binary', splitEvery(big, 16 * 1024));
      expect(d.rows).toBe(1);
      const joined = concat.mock.results.reduce((n, r) => n + (r.value as Buffer).length, 0);
      // 256 chunks: joined again each time they would come to about 512 MB
      expect(joined).toBeLessThan(3 * big.length);
    } finally {
      concat.mockRestore();
    }
  });

  it("stream digests hash the bytes in order, with the server's row count, and round-trip as text", async () => {
    const a = new StreamDigest();
    await pipeline(Readable.from([text]), a, new Writable({ write: (_c, _e, cb) => cb() }));
    const d = a.result(3);
    expect(d).toEqual({ kind: 'sha256', value: expect.stringMatching(/^[0-9a-f]{64}$/), rows: 3 });
    expect(parseDigest(digestText(d))).toEqual(d);
    const b = new StreamDigest();
    await pipeline(Readable.from([Buffer.from('2\tbob\\nsmith\n1\talice\n3\t\\N\n')]), b, new Writable({ write: (_c, _e, cb) => cb() }));
    expect(b.result(3).value).not.toBe(d.value);
  });

  it('refuses a row digest whose row count disagrees with the server', async () => {
    const d = new RowSumDigest('text');
    await pipeline(Readable.from([text]), d, new Writable({ write: (_c, _e, cb) => cb() }));
    expect(() => d.result(4)).toThrow('COPY reported 4 rows but 3 were parsed');
  });

  it('sums batch digests into a table digest', async () => {
    const one = await digestOf('text', [Buffer.from('1\talice\n')]);
    const two = await digestOf('text', [Buffer.from('2\tbob\\nsmith\n3\t\\N\n')]);
    expect(addDigests(addDigests(EMPTY_DIGEST, one), two)).toEqual(await digestOf('text', [text]));
  });
});
