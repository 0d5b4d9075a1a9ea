/**
 * Verifies a documents entry: every row's blob exists with the size and MD5 of the source's
 * bytes (read in slices, as the upload does), the target row's kept column holds the blob's name,
 * and no blob under the entry's name prefix is unexpected. With `repair`, missing or changed blobs
 * are uploaded again, extra ones deleted and kept names corrected. Only keys and blob names are
 * reported, never contents.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { quoteIdent } from '../plan/names.js';
import { parseTemplate } from '../plan/templates.js';
import { byteaContent, largeObjectContent } from '../source/documentContent.js';
import { keysPredicate } from '../source/ranges.js';
import type { TableTask } from '../engine/tableTask.js';
import { uploadSettings } from '../engine/copyDocuments.js';
import type { DocumentContainer } from '../target/blob/container.js';
import type { ListedBlob } from '../target/blob/listing.js';
import { blobName, blobPrefix, type RowValues } from '../target/blob/naming.js';
import { DEFAULT_BLOCK_SIZE, DEFAULT_BLOCKS, uploadDocument, type DocumentContent } from '../target/blob/upload.js';

export interface DocumentFinding {
  kind: 'blob missing' | 'blob different' | 'blob extra' | 'kept name different';
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

export async function verifyDocuments(
  sides: { source: pg.Client; target: pg.Client },
  container: DocumentContainer,
  task: TableTask,
  options: { repair: boolean; checkExtras: boolean },
): Promise<{ documents: number; findings: DocumentFinding[] }> {
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
  const { rows } = await sides.source.query<Record<string, string | null>>(
    `SELECT ${cols.map((c, i) => `${quoteIdent(c)}::text AS c${i}`).join(', ')}, ${spec.contentKind === 'oid' ? `${content}::text` : `(${content} IS NOT NULL)::text`} AS content FROM ${task.quoted}${where}`,
  );
  const source: SourceRow[] = rows.map((r) => {
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
  });

  const prefix = blobPrefix(spec.plan.blob);
  const listed = new Map<string, ListedBlob>();
  for await (const page of container.listPages(prefix)) for (const b of page) listed.set(b.name, b);
  const kept = new Map<string, string | null>();
  const t = await sides.target.query<Record<string, string | null>>(
    `SELECT ${keys.map((k, i) => `${quoteIdent(k.name)}::text AS k${i}`).join(', ')}, ${quoteIdent(spec.plan.keepColumn)} AS kept FROM ${task.quoted}`,
  );
  for (const r of t.rows) kept.set(JSON.stringify(keys.map((_, i) => r[`k${i}`] ?? '')), r.kept ?? null);

  const findings: DocumentFinding[] = [];
  const expected = new Set<string>();
  for (const row of source) {
    if (row.name === null) continue;
    expected.add(row.name);
    const reader: DocumentContent =
      row.oid !== null
        ? largeObjectContent(sides.source, row.oid, row.values.describe, spec.plan.content)
        : byteaContent(sides.source, task.quoted, content, keysPredicate(keys, [row.key]), row.values.describe);
    const blob = listed.get(row.name);
    let finding: DocumentFinding['kind'] | null = null;
    if (!blob) finding = 'blob missing';
    else {
      const { size, md5 } = await digestOf(reader);
      if (size !== blob.size || md5 !== blob.md5) finding = 'blob different';
    }
    if (finding) {
      if (options.repair) await reupload(container, task, row, reader);
      findings.push({ kind: finding, key: row.key, blob: row.name, repaired: options.repair });
    }
    const k = JSON.stringify(row.key);
    if (kept.has(k) && kept.get(k) !== row.name) {
      if (options.repair) {
        await sides.target.query(
          `UPDATE ${task.quoted} SET ${quoteIdent(spec.plan.keepColumn)} = $1 WHERE ${keysPredicate(keys, [row.key])}`,
          [row.name],
        );
      }
      findings.push({ kind: 'kept name different', key: row.key, blob: row.name, repaired: options.repair });
    }
  }
  if (options.checkExtras) {
    for (const name of listed.keys()) {
      if (expected.has(name)) continue;
      if (options.repair) await container.deleteBlob(name);
      findings.push({ kind: 'blob extra', key: [], blob: name, repaired: options.repair });
    }
  }
  return { documents: expected.size, findings };
}

async function digestOf(reader: DocumentContent): Promise<{ size: number; md5: string }> {
  const md5 = createHash('md5');
  let size = 0;
  for (;;) {
    const chunk = await reader.read(size, DEFAULT_BLOCK_SIZE);
    md5.update(chunk);
    size += chunk.length;
    if (chunk.length < DEFAULT_BLOCK_SIZE) break;
  }
  return { size, md5: md5.digest('base64') };
}

async function reupload(container: DocumentContainer, task: TableTask, row: SourceRow, reader: DocumentContent): Promise<void> {
  const settings = uploadSettings(task.documents!.plan, row.values, DEFAULT_BLOCKS);
  await uploadDocument(container, row.name!, reader, settings);
}
