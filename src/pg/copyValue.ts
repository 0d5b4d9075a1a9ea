/**
 * One value read as raw bytes: `COPY (SELECT one column) TO STDOUT (FORMAT binary)`. node-postgres
 * returns query results as text (a bytea comes hex-encoded, twice its size, decoded on the
 * client through a string) and its binary mode decodes every field as UTF-8, which corrupts
 * bytea; binary COPY sends bytea as its own bytes, which are copied once into the result.
 * Layout (PostgreSQL's COPY binary format): an 11-byte signature, flags (int32), a header
 * extension (int32 length, then bytes); per row a field count (int16) and per field a length
 * (int32, -1 for NULL) then the bytes; a trailer of field count -1.
 */
import type pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/** What the query returned: no row, or its value (null for NULL). */
export type CopiedValue = { row: false } | { row: true; value: Buffer | null };

export async function copyValue(client: pg.Client, select: string): Promise<CopiedValue> {
  const parser = new ValueParser();
  for await (const chunk of client.query(pgCopyStreams.to(`COPY (${select}) TO STDOUT (FORMAT binary)`))) {
    parser.push(chunk as Buffer);
  }
  return parser.result();
}

class ValueParser {
  /** Bytes of the fixed-size part being read (header, field count, length). */
  private small = Buffer.alloc(0);
  private state: 'signature' | 'extension' | 'count' | 'length' | 'value' | 'end' = 'signature';
  private value: Buffer | null = null;
  private filled = 0;
  private rows = 0;
  private extension = 0;

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.state === 'value') {
        const n = Math.min(this.value!.length - this.filled, chunk.length - at);
        chunk.copy(this.value!, this.filled, at, at + n);
        this.filled += n;
        at += n;
        if (this.filled === this.value!.length) this.state = 'count';
        continue;
      }
      if (this.state === 'end') throw new Error('binary COPY: data after the trailer');
      const need = this.needed();
      const n = Math.min(need - this.small.length, chunk.length - at);
      this.small = Buffer.concat([this.small, chunk.subarray(at, at + n)]);
      at += n;
      if (this.small.length === need) {
        const part = this.small;
        this.small = Buffer.alloc(0);
        this.take(part);
      }
    }
  }

  result(): CopiedValue {
    if (this.state !== 'end') throw new Error('binary COPY: the stream ended early');
    return this.rows === 0 ? { row: false } : { row: true, value: this.value };
  }

  private needed(): number {
    switch (this.state) {
      case 'signature':
        return SIGNATURE.length + 8;
      case 'extension':
        return this.extension;
      case 'count':
        return 2;
      default:
        return 4;
    }
  }

  private take(part: Buffer): void {
    switch (this.state) {
      case 'signature':
        if (!part.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw new Error('binary COPY: bad signature');
        this.extension = part.readInt32BE(SIGNATURE.length + 4);
        this.state = this.extension > 0 ? 'extension' : 'count';
        return;
      case 'extension':
        this.state = 'count';
        return;
      case 'count': {
        const fields = part.readInt16BE(0);
        if (fields === -1) this.state = 'end';
        else if (fields !== 1) throw new Error(`binary COPY: expected one column, got ${fields}`);
        else if (++this.rows > 1) throw new Error('binary COPY: expected at most one row');
        else this.state = 'length';
        return;
      }
      case 'length': {
        const length = part.readInt32BE(0);
        if (length === -1) {
          this.value = null;
          this.state = 'count';
        } else {
          this.value = Buffer.allocUnsafe(length);
          this.filled = 0;
          this.state = length === 0 ? 'count' : 'value';
        }
        return;
      }
    }
  }
}
