import { describe, expect, it } from 'vitest';
import { BinaryCopyReader } from '../../src/pg/copyBinary.js';

/** A binary COPY stream as PostgreSQL writes it (with a header extension, to be skipped). */
function copyStream(rows: Array<Array<Buffer | null>>, extension = Buffer.from('ext')): Buffer {
  const parts: Buffer[] = [Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), int32(0), int32(extension.length), extension];
  for (const row of rows) {
    const count = Buffer.alloc(2);
    count.writeInt16BE(row.length);
    parts.push(count);
    for (const f of row) parts.push(f === null ? int32(-1) : Buffer.concat([int32(f.length), f]));
  }
  parts.push(Buffer.from([0xff, 0xff]));
  return Buffer.concat(parts);
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

async function* chunks(bytes: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}

const big = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
const rows = [
  [Buffer.from('1'), Buffer.from('hello')],
  [Buffer.from('2'), null],
  [Buffer.from('3'), Buffer.alloc(0)],
  [Buffer.from('4'), big],
  [null, Buffer.from('x')],
];

describe('BinaryCopyReader', () => {
  it.each([1, 2, 3, 5, 7, 64, 4096])('reads rows whatever the chunk boundaries (chunks of %i bytes)', async (size) => {
    const reader = new BinaryCopyReader(chunks(copyStream(rows), size));
    const got: Array<{ key: string | null; value: string | null }> = [];
    for (let row = await reader.next(); row !== null; row = await reader.next()) {
      let value: Buffer | null = null;
      if (row.size !== null) {
        // The last field in pieces of 300 bytes, as an upload reads blocks.
        const pieces: Buffer[] = [];
        for (let piece = await reader.read(300); piece.length > 0; piece = await reader.read(300)) pieces.push(piece);
        value = Buffer.concat(pieces);
        expect(value.length).toBe(row.size);
      }
      got.push({ key: row.leading[0]?.toString() ?? null, value: value?.toString('hex') ?? null });
    }
    expect(got).toEqual(rows.map(([k, v]) => ({ key: k?.toString() ?? null, value: v?.toString('hex') ?? null })));
  });

  it('skips a value and refuses to move on past one half read', async () => {
    const reader = new BinaryCopyReader(chunks(copyStream(rows), 7));
    await reader.next();
    await reader.read(2);
    await expect(reader.next()).rejects.toThrow('was not read to its end');
    await reader.skip();
    expect((await reader.next())?.size).toBeNull();
    await reader.finish();
    expect(await reader.next()).toBeNull();
  });

  it('names a stream that ends early, and data after the trailer', async () => {
    const whole = copyStream(rows);
    const truncated = new BinaryCopyReader(chunks(whole.subarray(0, whole.length - 40), 16));
    await expect(truncated.finish()).rejects.toThrow('the stream ended early');
    const trailing = new BinaryCopyReader(chunks(Buffer.concat([whole, Buffer.from('junk')]), 16));
    await expect(trailing.finish()).rejects.toThrow('data after the trailer');
  });

  it('refuses what is not binary COPY', async () => {
    const reader = new BinaryCopyReader(chunks(Buffer.from('id\tname\n1\tAda\n'.repeat(3)), 8));
    await expect(reader.next()).rejects.toThrow('bad signature');
  });
});
