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

/**
 * Records uploaded documents (one statement for all of them) as uploaded, not yet verified; a
 * document recorded before is replaced. `batch`: the copy's batch they belong to (none in sync);
 * with its `claim`, recorded only while that worker holds it in the run's snapshot (as
 * markBatchCopied): a process that lost it, reading an older snapshot, must not write over what
 * the new holder recorded.
 */
export async function recordDocuments(
  db: pg.Pool | pg.Client,
  schema: string,
  runId: string,
  relation: string,
  docs: DocumentRecord[],
  batch: { id: string; claim?: { workerId: string; snapshot: string | null } } | null = null,
): Promise<void> {
  if (docs.length === 0) return;
  const s = quoteIdent(schema);
  await db.query(
    `INSERT INTO ${s}.documents (run_id, relation, key, blob_name, size, md5, sha256, batch_id)
     SELECT $1, $2, d.key, d.blob_name, d.size, d.md5, d.sha256, $8::bigint
       FROM unnest($3::jsonb[], $4::text[], $5::bigint[], $6::text[], $7::text[]) AS d(key, blob_name, size, md5, sha256)
      WHERE $9::text IS NULL
         OR (EXISTS (SELECT 1 FROM ${s}.batches b WHERE b.id = $8::bigint AND b.status = 'claimed' AND b.claimed_by = $9)
             AND ($10::text IS NULL OR EXISTS (SELECT 1 FROM ${s}.runs r WHERE r.id = $1 AND r.snapshot_name = $10)))
     ON CONFLICT (run_id, relation, key) DO UPDATE
       SET blob_name = EXCLUDED.blob_name, size = EXCLUDED.size, md5 = EXCLUDED.md5, sha256 = EXCLUDED.sha256,
           batch_id = EXCLUDED.batch_id, status = 'uploaded', uploaded_at = now(), verified_at = NULL`,
    [
      runId,
      relation,
      docs.map((d) => JSON.stringify(d.key)),
      docs.map((d) => d.name),
      docs.map((d) => d.size),
      docs.map((d) => d.md5),
      docs.map((d) => d.sha256),
      batch?.id ?? null,
      batch?.claim?.workerId ?? null,
      batch?.claim?.snapshot ?? null,
    ],
  );
}

export interface SweptDocument extends DocumentRecord {
  relation: string;
  batchId: string | null;
  /** Recorded as uploaded before the sweep began (so its blob was committed before the listing). */
  due: boolean;
  /** When this record was written (to the microsecond, as text): a later upload of the document is another record. */
  uploadedAt: string;
}

const SWEPT = (schema: string) =>
  `SELECT relation, key, blob_name, size::text AS size, md5, sha256, batch_id::text AS batch_id, uploaded_at::text AS uploaded_at,
          (status = 'uploaded' AND uploaded_at < $2 AND batch_id IS NOT NULL) AS due
     FROM ${quoteIdent(schema)}.documents`;

type SweptRow = {
  relation: string;
  key: string[];
  blob_name: string;
  size: string;
  md5: string;
  sha256: string;
  batch_id: string | null;
  uploaded_at: string;
  due: boolean;
};

const swept = (r: SweptRow): SweptDocument => ({
  relation: r.relation,
  key: r.key,
  name: r.blob_name,
  size: Number(r.size),
  md5: r.md5,
  sha256: r.sha256,
  batchId: r.batch_id,
  due: r.due,
  uploadedAt: r.uploaded_at,
});

/** The run's documents recorded under these blob names (any status). */
export async function documentsNamed(db: pg.Pool, schema: string, runId: string, since: Date, names: string[]): Promise<SweptDocument[]> {
  if (names.length === 0) return [];
  const { rows } = await db.query<SweptRow>(`${SWEPT(schema)} WHERE run_id = $1 AND blob_name = ANY($3::text[])`, [runId, since, names]);
  return rows.map(swept);
}

/** The copy's documents of these relations recorded as uploaded before `since` and still not verified. */
export async function documentsDue(db: pg.Pool, schema: string, runId: string, since: Date, relations: string[]): Promise<SweptDocument[]> {
  const { rows } = await db.query<SweptRow>(
    `${SWEPT(schema)} WHERE run_id = $1 AND status = 'uploaded' AND uploaded_at < $2 AND batch_id IS NOT NULL AND relation = ANY($3::text[])`,
    [runId, since, relations],
  );
  return rows.map(swept);
}

/** Documents of a run's relation by key: the condition ($1 run, $2 relation, $3 keys) and its parameters. */
const BY_KEYS = 'run_id = $1 AND relation = $2 AND key = ANY($3::jsonb[])';
const byKeys = (runId: string, relation: string, keys: string[][]) => [runId, relation, keys.map((k) => JSON.stringify(k))];

/**
 * The record of a document found wrong, if it is still the one that was found wrong (not one a
 * later attempt wrote since, another worker's sweep having returned the batch first): forgotten,
 * so its batch's next attempt uploads it again, or marked a mismatch. Returns whether it was.
 */
async function wrongRecord(
  db: pg.Pool | pg.ClientBase,
  schema: string,
  runId: string,
  doc: { relation: string; key: string[]; uploadedAt: string },
  action: 'forget' | 'mismatch',
): Promise<boolean> {
  const table = `${quoteIdent(schema)}.documents`;
  const statement = action === 'forget' ? `DELETE FROM ${table}` : `UPDATE ${table} SET status = 'mismatch', verified_at = now()`;
  const { rowCount } = await db.query(`${statement} WHERE ${BY_KEYS} AND uploaded_at = $4::timestamptz`, [
    ...byKeys(runId, doc.relation, [doc.key]),
    doc.uploadedAt,
  ]);
  return rowCount === 1;
}

type WrongRecord = Parameters<typeof wrongRecord>;
export const forgetRecord = (db: WrongRecord[0], schema: string, runId: string, doc: WrongRecord[3]) =>
  wrongRecord(db, schema, runId, doc, 'forget');
export const markRecordMismatch = (db: WrongRecord[0], schema: string, runId: string, doc: WrongRecord[3]) =>
  wrongRecord(db, schema, runId, doc, 'mismatch');

/** Forgets documents found wrong, so their batch's next attempt uploads them again. */
export async function forgetDocuments(
  db: pg.Pool | pg.ClientBase,
  schema: string,
  runId: string,
  relation: string,
  keys: string[][],
): Promise<void> {
  if (keys.length === 0) return;
  await db.query(`DELETE FROM ${quoteIdent(schema)}.documents WHERE ${BY_KEYS}`, byKeys(runId, relation, keys));
}

/**
 * Forgets the records of a batch's documents other than `keys` (the documents its attempt just
 * uploaded or kept): rows deleted, or whose document became NULL, since an earlier attempt read
 * an older snapshot. Their blobs are then no document of this run, which the sweep reports. Only
 * while `claim` still holds the batch in the run's snapshot (as markBatchCopied): a process that
 * lost it, reading an older snapshot, must not forget what the new holder records.
 */
export async function forgetOtherDocuments(
  db: pg.Pool | pg.ClientBase,
  schema: string,
  runId: string,
  relation: string,
  keys: string[][],
  claim: { batchId: string; workerId: string; snapshot: string | null },
): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM ${quoteIdent(schema)}.documents d WHERE run_id = $1 AND relation = $2 AND batch_id = $4 AND NOT (key = ANY($3::jsonb[]))
        AND EXISTS (SELECT 1 FROM ${quoteIdent(schema)}.batches b WHERE b.id = $4 AND b.status = 'claimed' AND b.claimed_by = $5)
        AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM ${quoteIdent(schema)}.runs r WHERE r.id = d.run_id AND r.snapshot_name = $6))`,
    [...byKeys(runId, relation, keys), claim.batchId, claim.workerId, claim.snapshot],
  );
  return rowCount ?? 0;
}

/** A document recorded before, and whether the sweep found its blob wrong (it must be uploaded again). */
export interface RecordedDocument extends DocumentRecord {
  foundWrong: boolean;
}

export async function recordedDocuments(
  db: pg.Pool | pg.Client,
  schema: string,
  runId: string,
  relation: string,
  keys: string[][],
): Promise<Map<string, RecordedDocument>> {
  if (keys.length === 0) return new Map();
  const { rows } = await db.query<{ key: string[]; blob_name: string; size: string; md5: string; sha256: string; wrong: boolean }>(
    `SELECT key, blob_name, size::text AS size, md5, sha256, status = 'mismatch' AS wrong FROM ${quoteIdent(schema)}.documents WHERE ${BY_KEYS}`,
    byKeys(runId, relation, keys),
  );
  return new Map(
    rows.map((r) => [
      JSON.stringify(r.key),
      { key: r.key, name: r.blob_name, size: Number(r.size), md5: r.md5, sha256: r.sha256, foundWrong: r.wrong },
    ]),
  );
}

/** Marks the records the sweep checked verified: those records, not one another upload wrote since. */
export async function markDocumentsVerified(
  db: pg.Pool | pg.Client,
  schema: string,
  runId: string,
  relation: string,
  docs: Array<{ key: string[]; uploadedAt: string }>,
): Promise<void> {
  if (docs.length === 0) return;
  await db.query(
    `UPDATE ${quoteIdent(schema)}.documents d SET status = 'verified', verified_at = now()
       FROM unnest($3::jsonb[], $4::timestamptz[]) AS c(key, uploaded_at)
      WHERE d.run_id = $1 AND d.relation = $2 AND d.key = c.key AND d.uploaded_at = c.uploaded_at`,
    [runId, relation, docs.map((d) => JSON.stringify(d.key)), docs.map((d) => d.uploadedAt)],
  );
}
