/**
 * Reading a document's bytes from the source in slices, never whole: bytea with substring(),
 * large objects with lo_get(). Each slice comes as raw bytes through binary COPY (copyValue),
 * not through node-postgres's query results, which carry bytea hex-encoded as text.
 */
import type pg from 'pg';
import { copyValue } from '../pg/copyValue.js';
import { DocumentError } from '../target/blob/naming.js';
import type { DocumentContent } from '../target/blob/upload.js';

/** A document already in memory (a small one that came with its row, or a changed row's value). */
export function bytesContent(bytes: Buffer): DocumentContent {
  return { read: (offset, length) => Promise.resolve(bytes.subarray(offset, offset + length)) };
}

/** A bytea field of a text-format COPY row (hex, its backslash escaped): its bytes, or null for NULL. */
export function copyTextBytea(field: string): Buffer | null {
  if (field === '\\N') return null;
  if (!field.startsWith('\\\\x')) throw new Error('a bytea value did not come hex-encoded (bytea_output must be hex)');
  return Buffer.from(field.slice(3), 'hex');
}

export function byteaContent(client: pg.Client, table: string, column: string, keyPredicate: string, describe: string): DocumentContent {
  return {
    async read(offset, length) {
      const got = await copyValue(
        client,
        `SELECT substring(${column} FROM ${offset + 1} FOR ${length}) FROM ${table} WHERE ${keyPredicate}`,
      );
      if (!got.row) throw new DocumentError(`${describe}: the row disappeared while its document was read`);
      return got.value ?? Buffer.alloc(0);
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
