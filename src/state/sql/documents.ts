/** Uploaded documents in the state store (migration 20261123000002). */
import type pg from 'pg';
import { quoteIdent } from '../../plan/names.js';

export interface DocumentRecord {
  key: string[];
  name: string;
  size: number;
  md5: string;
  sha256: string;
}

export async function recordDocument(
  db: pg.Pool | pg.Client,
  schema: string,
  runId: string,
  relation: string,
  d: DocumentRecord,
): Promise<void> {
  await db.query(
    `INSERT INTO ${quoteIdent(schema)}.documents (run_id, relation, key, blob_name, size, md5, sha256)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (run_id, relation, key) DO UPDATE
       SET blob_name = EXCLUDED.blob_name, size = EXCLUDED.size, md5 = EXCLUDED.md5, sha256 = EXCLUDED.sha256,
           status = 'uploaded', uploaded_at = now(), verified_at = NULL`,
    [runId, relation, JSON.stringify(d.key), d.name, d.size, d.md5, d.sha256],
  );
}

export async function recordedDocuments(
  db: pg.Pool | pg.Client,
  schema: string,
  runId: string,
  relation: string,
  keys: string[][],
): Promise<Map<string, DocumentRecord>> {
  if (keys.length === 0) return new Map();
  const { rows } = await db.query<{ key: string[]; blob_name: string; size: string; md5: string; sha256: string }>(
    `SELECT key, blob_name, size::text AS size, md5, sha256 FROM ${quoteIdent(schema)}.documents
      WHERE run_id = $1 AND relation = $2 AND key = ANY($3::jsonb[])`,
    [runId, relation, keys.map((k) => JSON.stringify(k))],
  );
  return new Map(
    rows.map((r) => [JSON.stringify(r.key), { key: r.key, name: r.blob_name, size: Number(r.size), md5: r.md5, sha256: r.sha256 }]),
  );
}

export async function markDocumentsVerified(
  db: pg.Pool | pg.Client,
  schema: string,
  runId: string,
  relation: string,
  keys: string[][],
  status: 'verified' | 'mismatch',
): Promise<void> {
  if (keys.length === 0) return;
  await db.query(
    `UPDATE ${quoteIdent(schema)}.documents SET status = $4, verified_at = now() WHERE run_id = $1 AND relation = $2 AND key = ANY($3::jsonb[])`,
    [runId, relation, keys.map((k) => JSON.stringify(k)), status],
  );
}

export async function forgetDocument(
  db: pg.Pool | pg.Client,
  schema: string,
  runId: string,
  relation: string,
  key: string[],
): Promise<void> {
  await db.query(`DELETE FROM ${quoteIdent(schema)}.documents WHERE run_id = $1 AND relation = $2 AND key = $3::jsonb`, [
    runId,
    relation,
    JSON.stringify(key),
  ]);
}
