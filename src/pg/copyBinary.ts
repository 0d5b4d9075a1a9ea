/**
 * Rows of `COPY (SELECT …) TO STDOUT (FORMAT binary)`, read as they arrive. node-postgres returns
 * query results as text (a bytea comes hex-encoded, twice its size, decoded through a string) and
 * its binary mode decodes every field as UTF-8, which corrupts bytea; binary COPY sends bytea as
 * its own bytes. The last field of a row is not taken whole: it is read in pieces of the caller's
 * size (a document's blocks), so a value of any size passes through bounded memory.
 *
 * Layout (PostgreSQL's COPY binary format): an 11-byte signature, flags (int32), a header
 * extension (int32 length, then bytes); per row a field count (int16) and per field a length
 * (int32, -1 for NULL) then the bytes; a trailer of field count -1.
 */
import type pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const EMPTY = Buffer.alloc(0);

export interface BinaryRow {
  /** Every field but the last, whole (null for NULL). */
  leading: Array<Buffer | null>;
  /** Byte length of the last field, to be read with read() or skip(); null for NULL. */
  size: number | null;
}

/** Exactly-n-bytes reads over a stream of chunks. */
class Bytes {
  private chunk: Buffer = EMPTY;
  private at = 0;

  constructor(private readonly chunks: AsyncIterator<Buffer>) {}

  /** n bytes: a view of the chunk they are in, or copied into `into` (or a new buffer). */
  async take(n: number, into?: Buffer): Promise<Buffer> {
    if (this.chunk.length - this.at >= n && !into) {
      this.at += n;
      return this.chunk.subarray(this.at - n, this.at);
    }
    const out = into ? into.subarray(0, n) : Buffer.allocUnsafe(n);
    for (let filled = 0; filled < n;) {
      if (this.at === this.chunk.length) await this.pull();
      const k = Math.min(n - filled, this.chunk.length - this.at);
      this.chunk.copy(out, filled, this.at, this.at + k);
      filled += k;
      this.at += k;
    }
    return out;
  }

  /** Passes over n bytes, showing each piece of them to `seen` (a view, valid only during the call). */
  async drop(n: number, seen?: (piece: Buffer) => void): Promise<void> {
    for (let left = n; left > 0;) {
      if (this.at === this.chunk.length) await this.pull();
      const k = Math.min(left, this.chunk.length - this.at);
      seen?.(this.chunk.subarray(this.at, this.at + k));
      this.at += k;
      left -= k;
    }
  }

  /** True when nothing is left (reads the stream to its end). */
  async ended(): Promise<boolean> {
    if (this.at < this.chunk.length) return false;
    const next = await this.chunks.next();
    if (next.done) return true;
    this.chunk = next.value;
    this.at = 0;
    return this.chunk.length === 0 ? this.ended() : false;
  }

  private async pull(): Promise<void> {
    const next = await this.chunks.next();
    if (next.done) throw new Error('binary COPY: the stream ended early');
    this.chunk = next.value;
    this.at = 0;
  }
}

export class BinaryCopyReader {
  private readonly bytes: Bytes;
  private started = false;
  private finished = false;
  /** Unread bytes of the current row's last field. */
  private left = 0;

  constructor(chunks: AsyncIterable<Buffer>) {
    this.bytes = new Bytes(chunks[Symbol.asyncIterator]());
  }

  /** The next row, or null after the last (the stream is then read to its end). */
  async next(): Promise<BinaryRow | null> {
    if (this.left > 0) throw new Error('binary COPY: the previous value was not read to its end');
    if (!this.started) await this.header();
    if (this.finished) return null;
    const fields = (await this.bytes.take(2)).readInt16BE(0);
    if (fields === -1) {
      this.finished = true;
      if (!(await this.bytes.ended())) throw new Error('binary COPY: data after the trailer');
      return null;
    }
    if (fields < 1) throw new Error(`binary COPY: a row of ${fields} fields`);
    const leading: Array<Buffer | null> = [];
    for (let i = 0; i < fields - 1; i += 1) {
      const length = await this.length();
      leading.push(length === null ? null : await this.bytes.take(length));
    }
    const size = await this.length();
    this.left = size ?? 0;
    return { leading, size };
  }

  /**
   * The next `length` bytes of the current row's last field (fewer at its end), in the front of
   * `into` when given (it must hold them).
   */
  async read(length: number, into?: Buffer): Promise<Buffer> {
    const n = Math.min(length, this.left);
    if (into && into.length < n) throw new RangeError(`a buffer of ${into.length} bytes cannot hold ${n}`);
    this.left -= n;
    return n === 0 ? EMPTY : this.bytes.take(n, into);
  }

  /** Passes over the rest of the current row's last field (shown to `seen` piece by piece). */
  async skip(seen?: (piece: Buffer) => void): Promise<void> {
    const n = this.left;
    this.left = 0;
    await this.bytes.drop(n, seen);
  }

  /** Reads whatever rows are left, so the COPY completes and the connection can be used again. */
  async finish(): Promise<void> {
    await this.skip();
    while ((await this.next()) !== null) await this.skip();
  }

  private async header(): Promise<void> {
    this.started = true;
    const head = await this.bytes.take(SIGNATURE.length + 8);
    if (!head.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw new Error('binary COPY: bad signature');
    await this.bytes.drop(head.readInt32BE(SIGNATURE.length + 4));
  }

  private async length(): Promise<number | null> {
    const length = (await this.bytes.take(4)).readInt32BE(0);
    return length === -1 ? null : length;
  }
}

/**
 * Runs a binary COPY of `select` and hands its rows to `fn`; when it returns, the COPY is read to
 * its end, so the session can be used again. If `fn` throws, the session is left inside the COPY.
 */
export async function copyRows<T>(client: pg.Client, select: string, fn: (rows: BinaryCopyReader) => Promise<T>): Promise<T> {
  const stream = client.query(pgCopyStreams.to(`COPY (${select}) TO STDOUT (FORMAT binary)`));
  const reader = new BinaryCopyReader(stream as AsyncIterable<Buffer>);
  const result = await fn(reader);
  await reader.finish();
  return result;
}

/** What a one-value query returned: no row, or its value (null for NULL). */
export type CopiedValue = { row: false } | { row: true; value: Buffer | null };

/** One value (the first column of at most one row) as raw bytes. */
export async function copyValue(client: pg.Client, select: string): Promise<CopiedValue> {
  return copyRows(client, select, async (rows) => {
    const row = await rows.next();
    if (row === null) return { row: false };
    if (row.leading.length > 0) throw new Error(`binary COPY: expected one column, got ${row.leading.length + 1}`);
    const value = row.size === null ? null : await rows.read(row.size);
    if ((await rows.next()) !== null) throw new Error('binary COPY: expected at most one row');
    return { row: true, value };
  });
}
