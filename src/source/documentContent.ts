/**
 * Reading a document's bytes from the source in slices, never whole: bytea with substring(),
 * large objects with lo_get(). Values come back through node-postgres's text protocol (hex
 * decoded to a Buffer), never its binary mode, which corrupts bytea.
 */
import type pg from 'pg';
import { DocumentError } from '../target/blob/naming.js';
import type { DocumentContent } from '../target/blob/upload.js';

export function byteaContent(client: pg.Client, table: string, column: string, keyPredicate: string, describe: string): DocumentContent {
  return {
    async read(offset, length) {
      const { rows } = await client.query<{ b: Buffer | null }>(
        `SELECT substring(${column} FROM ${offset + 1} FOR ${length}) AS b FROM ${table} WHERE ${keyPredicate}`,
      );
      if (rows.length === 0) throw new DocumentError(`${describe}: the row disappeared while its document was read`);
      return rows[0]!.b ?? Buffer.alloc(0);
    },
  };
}

export function largeObjectContent(client: pg.Client, oid: string, describe: string, column: string): DocumentContent {
  return {
    async read(offset, length) {
      try {
        const { rows } = await client.query<{ b: Buffer }>(`SELECT lo_get($1::oid, $2::bigint, $3::int) AS b`, [oid, offset, length]);
        return rows[0]!.b;
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
