/**
 * Reading a document's bytes from the source, never whole: a batch's bytea documents stream in
 * one binary COPY (BatchContents); a single one is read in slices with substring(), a large
 * object with lo_get(). Bytes come raw through binary COPY, not through node-postgres's query
 * results, which carry bytea hex-encoded as text.
 */
import { createHash, type Hash } from 'node:crypto';
import type pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import { BinaryCopyReader, copyValue } from '../pg/copyBinary.js';
import { DocumentError } from '../target/blob/naming.js';
import type { DocumentContent } from '../target/blob/upload.js';

/** A document already in memory (a small one that came with its row, or a changed row's value). */
export function bytesContent(bytes: Buffer): DocumentContent {
  return { read: (offset, length) => Promise.resolve(bytes.subarray(offset, offset + length)) };
}

/**
 * The bytea documents of a batch in one binary COPY: per row, its key printed as COPY's text
 * prints it (format('%s')) and its bytes, in the order of the batch's rows, which the caller
 * reads alongside (the same snapshot, range and ORDER BY). Each document is read front to back
 * once, whole or in blocks, so memory holds what is being uploaded and no more.
 */
export class BatchContents {
  private constructor(private readonly reader: BinaryCopyReader) {}

  /** `select` returns the key columns through format('%s', …), then the content column. */
  static open(client: pg.Client, select: string): BatchContents {
    const stream = client.query(pgCopyStreams.to(`COPY (${select}) TO STDOUT (FORMAT binary)`));
    return new BatchContents(new BinaryCopyReader(stream as AsyncIterable<Buffer>));
  }

  /**
   * Moves to the next row, which must have this key and a document of this size (null for
   * NULL): the two streams disagreeing on a row is a bug, never a guess, and throws.
   */
  async row(key: string[], size: number | null, describe: string): Promise<void> {
    const row = await this.reader.next();
    const keyOf = (r: NonNullable<typeof row>) => r.leading.map((b) => b?.toString('utf8') ?? null);
    if (row === null || row.size !== size || keyOf(row).some((k, i) => k !== key[i]) || row.leading.length !== key.length) {
      const got = row === null ? 'no row' : `key (${keyOf(row).join(', ')}), ${row.size ?? 'NULL'} bytes`;
      throw new Error(`${describe}: the documents stream is out of step with the rows (${got}, expected ${size ?? 'NULL'} bytes)`);
    }
  }

  /** The current row's document, all of it (in the front of `into` when given). */
  whole(length: number, into?: Buffer): Promise<Buffer> {
    return this.reader.read(length, into);
  }

  /**
   * The current row's document, read by the upload; `consumed` settles when its last byte is
   * read, and the rows move on. Past that, a read finds the end without asking the stream, which
   * is by then at a later row.
   */
  streamed(size: number): { content: DocumentContent; consumed: Promise<void> } {
    let position = 0;
    let settle = () => {};
    const consumed = new Promise<void>((resolve) => (settle = resolve));
    const content: DocumentContent = {
      read: async (offset, length) => {
        if (offset !== position) throw new Error(`a streamed document is read in order (asked for byte ${offset}, at ${position})`);
        if (position === size) return Buffer.alloc(0);
        const bytes = await this.reader.read(Math.min(length, size - position));
        position += bytes.length;
        if (position === size) settle();
        return bytes;
      },
    };
    if (size === 0) settle();
    return { content, consumed };
  }

  /** Passes over the current row's document, returning its digests (as contentDigests). */
  async skipWithDigests(sha256: boolean): Promise<Digests> {
    const hashes = new Hashes(sha256);
    await this.reader.skip((piece) => hashes.update(piece));
    return hashes.digests();
  }

  /** After the batch's last row: no document is left over, and the COPY has run to its end. */
  async end(describe: string): Promise<void> {
    if ((await this.reader.next()) !== null) throw new Error(`${describe}: the documents stream has more rows than the batch`);
  }
}

/** A document's size, its MD5 (base64, as Azure reports it) and, when asked for, its SHA-256 (hex). */
export interface Digests {
  size: number;
  md5: string;
  sha256: string | null;
}

class Hashes {
  private readonly md5 = createHash('md5');
  private readonly sha: Hash | null;
  private size = 0;

  constructor(withSha256: boolean) {
    this.sha = withSha256 ? createHash('sha256') : null;
  }

  update(piece: Buffer): void {
    this.md5.update(piece);
    this.sha?.update(piece);
    this.size += piece.length;
  }

  digests(): Digests {
    return { size: this.size, md5: this.md5.digest('base64'), sha256: this.sha?.digest('hex') ?? null };
  }
}

/** A document's digests, read front to back in `blockSize` pieces. */
export async function contentDigests(content: DocumentContent, blockSize: number, sha256 = false): Promise<Digests> {
  const hashes = new Hashes(sha256);
  for (let size = 0; ;) {
    const piece = await content.read(size, blockSize);
    hashes.update(piece);
    size += piece.length;
    if (piece.length < blockSize) return hashes.digests();
  }
}

/** Bytes [offset, offset + length) of one row's bytea value (none for NULL); null when no row has that key. */
export async function byteaSlice(
  client: pg.Client,
  table: string,
  column: string,
  keyPredicate: string,
  offset: number,
  length: number,
): Promise<Buffer | null> {
  const got = await copyValue(client, `SELECT substring(${column} FROM ${offset + 1} FOR ${length}) FROM ${table} WHERE ${keyPredicate}`);
  return got.row ? (got.value ?? Buffer.alloc(0)) : null;
}

export function byteaContent(client: pg.Client, table: string, column: string, keyPredicate: string, describe: string): DocumentContent {
  return {
    async read(offset, length) {
      const bytes = await byteaSlice(client, table, column, keyPredicate, offset, length);
      if (bytes === null) throw new DocumentError(`${describe}: the row disappeared while its document was read`);
      return bytes;
    },
  };
}

export function largeObjectContent(client: pg.Client, oid: string, describe: string, column: string): DocumentContent {
  if (!/^\d+$/.test(oid)) throw new DocumentError(`${describe}: column "${column}" holds "${oid}", which is not a large object's oid`);
  return {
    async read(offset, length) {
      try {
        const got = await copyValue(client, `SELECT lo_get(${oid}::oid, ${offset}::bigint, ${length}::int)`);
        return got.row && got.value ? got.value : Buffer.alloc(0);
      } catch (err) {
        if ((err as { code?: string }).code === '42704') {
          throw new DocumentError(
            `${describe}: column "${column}" names large object ${oid}, which does not exist`,
            'restore the large object or clear the column; documents already uploaded are kept',
          );
        }
        throw err;
      }
    },
  };
}
