/**
 * Checksums of COPY streams, computed while the bytes flow (no second read of the source, no
 * batch held in memory). Two kinds:
 * - `sha256`: SHA-256 of the stream itself. Both sides are read in key order (ORDER BY the batch
 *   key, COLLATE "C" for text), so equal rows give equal bytes. Rows are counted by the server
 *   (COPY's command tag). Cheap: the bytes are hashed once, not parsed.
 * - `sha256sum64`: each row's bytes hashed with SHA-256, the first 64 bits summed modulo 2^64,
 *   with a row count. Independent of row order, and additive: a table's digest is the sum of its
 *   batches'. Used for tables without a key, whose rows have no order both sides agree on. Rows
 *   are split per the COPY format: text (one row per line; data newlines are escaped by COPY) or
 *   binary (field-count-prefixed tuples).
 */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

export type DigestKind = 'sha256' | 'sha256sum64';

export interface Digest {
  kind: DigestKind;
  /** Hex: the stream's SHA-256, or the sum of the rows' SHA-256 prefixes mod 2^64. */
  value: string;
  rows: number;
}

const MASK = (1n << 64n) - 1n;
const BINARY_SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

function rowSum(rows: number, sum: bigint): Digest {
  return { kind: 'sha256sum64', value: sum.toString(16).padStart(16, '0'), rows };
}

/** Sum of two order-independent digests (a table from its batches). */
export function addDigests(a: Digest, b: Digest): Digest {
  if (a.kind !== 'sha256sum64' || b.kind !== 'sha256sum64') throw new Error('only sha256sum64 digests add up');
  return rowSum(a.rows + b.rows, (BigInt(`0x${a.value}`) + BigInt(`0x${b.value}`)) & MASK);
}

export const EMPTY_DIGEST: Digest = rowSum(0, 0n);

export function digestEquals(a: Digest, b: Digest): boolean {
  return a.kind === b.kind && a.rows === b.rows && a.value === b.value;
}

export function digestText(d: Digest): string {
  return `${d.kind}:${d.value}:${d.rows}`;
}

export function parseDigest(text: string | null): Digest {
  const m = /^(sha256|sha256sum64):([0-9a-f]+):(\d+)$/.exec(text ?? '');
  if (!m) throw new Error(`not a cloudshift checksum: ${String(text)}`);
  return { kind: m[1] as DigestKind, value: m[2]!, rows: Number(m[3]) };
}

/** Passes the stream through and hashes its bytes in order. */
export class StreamDigest extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.update(chunk);
    done(null, chunk);
  }

  /**
   * Hashes bytes that go elsewhere (a stream rewritten on the way, as a documents batch's rows):
   * written to the Transform instead, they would wait, unhashed, for a reader that never comes.
   */
  update(chunk: Buffer | string): void {
    this.bytes += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
    this.hash.update(chunk);
  }

  /** The digest, with the row count the server reported for the COPY. */
  result(rows: number): Digest {
    return { kind: 'sha256', value: this.hash.digest('hex'), rows };
  }
}

/** Passes the stream through and digests each COPY row, independent of row order. */
export class RowSumDigest extends Transform {
  private rows = 0;
  private sum = 0n;
  private pending: Buffer[] = [];
  private pendingLength = 0;
  private headerDone: boolean;
  private finished = false;
  /** Binary: pending bytes the row in progress needs before parsing it again is worth it. */
  private need = 0;
  bytes = 0;

  constructor(readonly format: 'text' | 'binary') {
    super();
    this.headerDone = format === 'text';
  }

  get digest(): Digest {
    return rowSum(this.rows, this.sum);
  }

  /** The digest; `serverRows` (COPY's command tag) must agree with the rows parsed. */
  result(serverRows: number): Digest {
    if (serverRows !== this.rows) throw new Error(`COPY reported ${serverRows} rows but ${this.rows} were parsed`);
    return this.digest;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length;
    try {
      if (this.format === 'text') this.text(chunk);
      else this.binary(chunk);
    } catch (err) {
      done(err as Error);
      return;
    }
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    if (this.pendingLength > 0 && this.format === 'text') this.addRow(this.takePending(this.pendingLength));
    if (this.format === 'binary' && this.pendingLength > 0 && !this.finished) {
      done(new Error(`COPY binary stream ended inside a tuple (${this.pendingLength} bytes left)`));
      return;
    }
    done();
  }

  private addRow(row: Buffer): void {
    const h = createHash('sha256').update(row).digest();
    this.sum = (this.sum + h.readBigUInt64BE(0)) & MASK;
    this.rows += 1;
  }

  private text(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      if (this.pendingLength > 0) {
        this.appendPending(chunk.subarray(start, nl));
        this.addRow(this.takePending(this.pendingLength));
      } else this.addRow(chunk.subarray(start, nl));
      start = nl + 1;
    }
    if (start < chunk.length) this.appendPending(chunk.subarray(start));
  }

  private appendPending(b: Buffer): void {
    this.pending.push(b);
    this.pendingLength += b.length;
  }

  /** Removes and returns the first n pending bytes. */
  private takePending(n: number): Buffer {
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingLength);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.pending = rest.length ? [rest] : [];
    this.pendingLength = rest.length;
    return out;
  }

  private peek(): Buffer {
    if (this.pending.length > 1) this.pending = [Buffer.concat(this.pending, this.pendingLength)];
    return this.pending[0] ?? Buffer.alloc(0);
  }

  private binary(chunk: Buffer): void {
    this.appendPending(chunk);
    // A big value arrives in many chunks: joining them all again for each would be quadratic.
    if (this.pendingLength < this.need) return;
    const buf = this.peek();
    let short = 0;
    let pos = 0;
    if (!this.headerDone) {
      if (buf.length < 19) return;
      if (!buf.subarray(0, 11).equals(BINARY_SIGNATURE)) throw new Error('not a COPY binary stream');
      const ext = buf.readUInt32BE(15);
      if (buf.length < 19 + ext) return;
      pos = 19 + ext;
      this.headerDone = true;
    }
    for (;;) {
      if (buf.length - pos < 2) {
        short = pos + 2;
        break;
      }
      const fields = buf.readInt16BE(pos);
      if (fields === -1) {
        this.finished = true;
        pos += 2;
        break;
      }
      let p = pos + 2;
      let complete = true;
      for (let f = 0; f < fields; f += 1) {
        if (buf.length - p < 4) {
          short = p + 4;
          complete = false;
          break;
        }
        const len = buf.readInt32BE(p);
        p += 4;
        if (len > 0) {
          if (buf.length - p < len) {
            short = p + len;
            complete = false;
            break;
          }
          p += len;
        }
      }
      if (!complete) break;
      this.addRow(buf.subarray(pos, p));
      pos = p;
    }
    const rest = buf.subarray(pos);
    this.pending = rest.length ? [rest] : [];
    this.pendingLength = rest.length;
    this.need = short > 0 ? short - pos : 0;
  }
}
