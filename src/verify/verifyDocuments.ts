/**
 * Verifies a documents entry: every row's blob exists with the size and MD5 of the source's
 * bytes (read in slices, as the upload does), the target row's kept column holds the blob's name,
 * and no blob under the entry's name prefix is unexpected. With `repair`, missing or changed blobs
 * are uploaded again, extra ones deleted and kept names corrected. At most `maxFindings` are named
 * (and, with `repair`, mended) per run. Only keys and blob names are reported, never contents.
 */
import type pg from 'pg';
import { printedText, quoteIdent } from '../plan/names.js';
import { parseTemplate } from '../plan/templates.js';
import { byteaContent, contentDigests, largeObjectContent } from '../source/documentContent.js';
import { keysPredicate } from '../source/ranges.js';
import type { TableTask } from '../engine/tableTask.js';
import { uploadSettings } from '../engine/copyDocuments.js';
import { SAMPLE_EVERY, sampleMatches } from './documentSweep.js';
import type { DocumentContainer } from '../target/blob/container.js';
import { blobName, blobPrefix, nameMatcher, type RowValues } from '../target/blob/naming.js';
import { DEFAULT_BLOCK_SIZE, DEFAULT_BLOCKS, uploadDocument, type DocumentContent } from '../target/blob/upload.js';

export interface DocumentFinding {
  kind: 'blob missing' | 'blob different' | 'blob extra' | 'kept name different' | 'kept name without document';
  key: string[];
  blob: string;
  repaired: boolean;
}

interface SourceRow {
  key: string[];
  values: RowValues;
  name: string | null;
  /** The oid of a large object; null for bytea. */
  oid: string | null;
}

export interface DocumentVerifyOptions {
  repair: boolean;
  checkExtras: boolean;
  /** Stop after this many findings (the rest is not looked at, and the entry does not match). */
  maxFindings: number;
  /** One in this many documents whose size and MD5 match has a range of its bytes compared (default SAMPLE_EVERY). */
  sampleEvery?: number;
  /** Source rows read at a time (and their blobs and kept names looked up at a time). */
  chunkRows?: number;
}

const CHUNK_ROWS = 1000;
/** The listing, held on the target session for the length of one entry's verification. */
const LISTED = 'pg_temp.cloudshift_listed';

/**
 * Memory holds one listing page and one chunk of source rows: the listing goes into a temporary
 * table on the target session, and the source rows come through a cursor, a chunk at a time,
 * each chunk's blobs and kept names looked up by name and key.
 */
export async function verifyDocuments(
  sides: { source: pg.Client; target: pg.Client },
  container: DocumentContainer,
  task: TableTask,
  options: DocumentVerifyOptions,
): Promise<{ documents: number; findings: DocumentFinding[]; complete: boolean }> {
  const spec = task.documents!;
  const keys = task.shape.keyColumns!;
  const content = quoteIdent(spec.plan.content);
  const templates = [spec.plan.blob, spec.plan.contentType, ...Object.values(spec.plan.metadata), ...Object.values(spec.plan.tags)];
  const cols = [
    ...new Set([
      ...keys.map((k) => k.name),
      ...templates.flatMap((t) => parseTemplate(t).flatMap((p) => (p.kind === 'column' ? [p.column] : []))),
    ]),
  ];
  const where = task.where ? ` WHERE ${task.where}` : '';
  const toRow = (r: Record<string, string | null>): SourceRow => {
    const get = (c: string) => r[`c${cols.indexOf(c)}`] ?? null;
    const key = keys.map((k) => get(k.name) ?? '');
    const values: RowValues = { get, describe: `${task.display} ${keys.map((k, i) => `${k.name}=${key[i]}`).join(', ')}` };
    const present = spec.contentKind === 'oid' ? r.content !== null : r.content === 'true';
    return {
      key,
      values,
      name: present ? blobName(spec.plan.blob, values) : null,
      oid: spec.contentKind === 'oid' ? (r.content ?? null) : null,
    };
  };

  const findings: DocumentFinding[] = [];
  const full = () => findings.length >= options.maxFindings;
  let documents = 0;
  await sides.target.query(`DROP TABLE IF EXISTS ${LISTED}`);
  await sides.target.query(
    `CREATE TEMP TABLE ${LISTED} (name text COLLATE "C" PRIMARY KEY, size bigint NOT NULL, md5 text NOT NULL, seen boolean NOT NULL DEFAULT false)`,
  );
  await sides.source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    // Only names this entry's template could give: other blobs under its prefix are not its own.
    const ours = nameMatcher(spec.plan.blob);
    for await (const listed of container.listPages(blobPrefix(spec.plan.blob))) {
      const page = listed.filter((b) => ours(b.name));
      await sides.target.query(`INSERT INTO ${LISTED} (name, size, md5) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])`, [
        page.map((b) => b.name),
        page.map((b) => b.size),
        page.map((b) => b.md5),
      ]);
    }
    // Each value as COPY and the stream print it, from which run and live sync named the blobs.
    await sides.source.query(
      `DECLARE cloudshift_documents NO SCROLL CURSOR FOR SELECT ${cols.map((c, i) => `${printedText(c)} AS c${i}`).join(', ')}, ${spec.contentKind === 'oid' ? `${content}::text` : `(${content} IS NOT NULL)::text`} AS content FROM ${task.quoted}${where}`,
    );
    while (!full()) {
      const { rows } = await sides.source.query<Record<string, string | null>>(
        `FETCH ${options.chunkRows ?? CHUNK_ROWS} FROM cloudshift_documents`,
      );
      if (rows.length === 0) break;
      const chunk = rows.map(toRow);
      const names = chunk.flatMap((r) => (r.name === null ? [] : [r.name]));
      const listed = new Map(
        (
          await sides.target.query<{ name: string; size: string; md5: string }>(
            `UPDATE ${LISTED} SET seen = true WHERE name = ANY($1::text[]) RETURNING name, size::text AS size, md5`,
            [names],
          )
        ).rows.map((b) => [b.name, { size: Number(b.size), md5: b.md5 }]),
      );
      const kept = new Map(
        (
          await sides.target.query<Record<string, string | null>>(
            `SELECT ${keys.map((k, i) => `${quoteIdent(k.name)}::text AS k${i}`).join(', ')}, ${quoteIdent(spec.plan.keepColumn)} AS kept FROM ${task.quoted} WHERE ${keysPredicate(
              keys,
              chunk.map((r) => r.key),
            )}`,
          )
        ).rows.map((r) => [JSON.stringify(keys.map((_, i) => r[`k${i}`] ?? '')), r.kept ?? null]),
      );
      for (const row of chunk) {
        if (full()) break;
        if (row.name === null) {
          // No document on the source: the target's row must name no blob either.
          const stale = kept.get(JSON.stringify(row.key));
          if (!stale) continue;
          if (options.repair) {
            await sides.target.query(
              `UPDATE ${task.quoted} SET ${quoteIdent(spec.plan.keepColumn)} = NULL WHERE ${keysPredicate(keys, [row.key])}`,
            );
          }
          findings.push({ kind: 'kept name without document', key: row.key, blob: stale, repaired: options.repair });
          continue;
        }
        documents += 1;
        const reader: DocumentContent =
          row.oid !== null
            ? largeObjectContent(sides.source, row.oid, row.values.describe, spec.plan.content)
            : byteaContent(sides.source, task.quoted, content, keysPredicate(keys, [row.key]), row.values.describe);
        const blob = listed.get(row.name);
        let finding: DocumentFinding['kind'] | null = null;
        if (!blob) finding = 'blob missing';
        else {
          const { size, md5 } = await contentDigests(reader, DEFAULT_BLOCK_SIZE);
          if (size !== blob.size || md5 !== blob.md5) finding = 'blob different';
          // The listed MD5 is what was set at commit, never checked by the service: one document in
          // SAMPLE_EVERY also has a range of its bytes read back and compared.
          else if ((documents - 1) % (options.sampleEvery ?? SAMPLE_EVERY) === 0) {
            if (!(await sampleMatches(container, { name: row.name, ...blob }, (offset, length) => reader.read(offset, length))))
              finding = 'blob different';
          }
        }
        if (finding) {
          if (options.repair) await reupload(container, task, row, reader);
          findings.push({ kind: finding, key: row.key, blob: row.name, repaired: options.repair });
        }
        const k = JSON.stringify(row.key);
        if (kept.has(k) && kept.get(k) !== row.name && !full()) {
          if (options.repair) {
            await sides.target.query(
              `UPDATE ${task.quoted} SET ${quoteIdent(spec.plan.keepColumn)} = $1 WHERE ${keysPredicate(keys, [row.key])}`,
              [row.name],
            );
          }
          findings.push({ kind: 'kept name different', key: row.key, blob: row.name, repaired: options.repair });
        }
      }
    }
    if (full() || !options.checkExtras) return { documents, findings, complete: !full() };
    // Blobs no row named, as many as there is room for (and one more, to know whether that was all).
    const room = options.maxFindings - findings.length;
    const { rows } = await sides.target.query<{ name: string }>(
      `SELECT name FROM ${LISTED} WHERE NOT seen ORDER BY name LIMIT ${room + 1}`,
    );
    for (const { name } of rows.slice(0, room)) {
      if (options.repair) await container.deleteBlob(name);
      findings.push({ kind: 'blob extra', key: [], blob: name, repaired: options.repair });
    }
    return { documents, findings, complete: rows.length <= room };
  } finally {
    await sides.source.query('ROLLBACK').catch(() => undefined);
    await sides.target.query(`DROP TABLE IF EXISTS ${LISTED}`).catch(() => undefined);
  }
}

async function reupload(container: DocumentContainer, task: TableTask, row: SourceRow, reader: DocumentContent): Promise<void> {
  const settings = uploadSettings(task.documents!.plan, row.values, DEFAULT_BLOCKS);
  await uploadDocument(container, row.name!, reader, settings);
}
