/**
 * The copy's document verification. One List Blobs request returns the stored size and MD5 of
 * up to 5,000 blobs, where a request per blob costs the service as much work as an upload of a
 * small document; so the copy lists each entry's name prefix once, after its batches, and checks
 * against the state store every document recorded as uploaded before the listing began (its
 * blob was committed before its record, so the listing must show it):
 * - listed with the recorded size and MD5: verified; one in SAMPLE_EVERY of those (the first
 *   always) also has a range of its bytes read back and compared with the source;
 * - not listed (checked once more by name, for a record committed while the listing ran), a
 *   different size or MD5, or sampled bytes that differ: wrong. Its batch gets another attempt;
 * - listed with no record in this run: extra, reported (unless a batch of these tables is being
 *   copied meanwhile: its uploads are recorded 32 at a time, after their blobs).
 * Memory holds one page of the listing at a time.
 */
import type pg from 'pg';
import { quoteIdent } from '../plan/names.js';
import type { ClientPool } from '../pg/clientPool.js';
import { byteaSlice, largeObjectContent } from '../source/documentContent.js';
import { keysPredicate } from '../source/ranges.js';
import { documentsDue, documentsNamed, markDocumentsVerified, type SweptDocument } from '../state/sql/documents.js';
import type { TableTask } from '../engine/tableTask.js';
import type { DocumentContainer } from '../target/blob/container.js';
import { blobPrefix, nameMatcher } from '../target/blob/naming.js';
import { blobMatches } from '../target/blob/upload.js';

export const SAMPLE_EVERY = 100;
const SAMPLE_BYTES = 64 * 1024;
const SAMPLE_CONCURRENCY = 8;

export interface SweepOptions {
  db: pg.Pool;
  schema: string;
  runId: string;
  container: DocumentContainer;
  /** The plan's documents tables. */
  tasks: TableTask[];
  /** Source sessions in the copy's snapshot, for the sampled reads. */
  content: ClientPool;
  /** One in this many verified documents has a range of its bytes compared (default SAMPLE_EVERY). */
  sampleEvery?: number;
}

export interface WrongDocument {
  relation: string;
  key: string[];
  name: string;
  batchId: string | null;
  reason: 'missing' | 'different size or MD5' | 'different bytes';
  /** The record found wrong (a later upload of the document is another record). */
  uploadedAt: string;
}

export interface SweepResult {
  verified: number;
  sampled: number;
  wrong: WrongDocument[];
  /** Blobs under the entries' prefixes that are no document of this run (first 20). */
  extra: string[];
  extraCount: number;
}

export async function sweepDocuments(o: SweepOptions): Promise<SweepResult> {
  const tasks = new Map(o.tasks.map((t) => [t.display, t]));
  const { rows } = await o.db.query<{ now: Date }>('SELECT clock_timestamp() AS now');
  const since = rows[0]!.now;
  const result: SweepResult = { verified: 0, sampled: 0, wrong: [], extra: [], extraCount: 0 };
  let seen = 0;
  const good = async (docs: SweptDocument[]) => {
    const sorted = [...docs].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const sampled = sorted.filter((_, i) => (seen + i) % (o.sampleEvery ?? SAMPLE_EVERY) === 0);
    seen += sorted.length;
    const differ = new Set<SweptDocument>();
    // The sampled reads SAMPLE_CONCURRENCY at a time: each waits on the blob service and the source.
    for (let i = 0; i < sampled.length; i += SAMPLE_CONCURRENCY) {
      const group = sampled.slice(i, i + SAMPLE_CONCURRENCY);
      const same = await Promise.all(group.map((d) => sameBytes(o, tasks.get(d.relation)!, d)));
      group.forEach((d, k) => !same[k] && differ.add(d));
    }
    result.sampled += sampled.length;
    const checked = new Map<string, SweptDocument[]>();
    for (const d of sorted) {
      if (differ.has(d)) {
        result.wrong.push(wrong(d, 'different bytes'));
        continue;
      }
      result.verified += 1;
      const list = checked.get(d.relation) ?? [];
      list.push(d);
      checked.set(d.relation, list);
    }
    for (const [relation, docs] of checked) await markDocumentsVerified(o.db, o.schema, o.runId, relation, docs);
  };

  // A blob no entry's template could name is not an extra: the container may hold other things.
  const ours = o.tasks.map((t) => nameMatcher(t.documents!.plan.blob));
  for (const prefix of prefixes(o.tasks)) {
    for await (const page of o.container.listPages(prefix)) {
      const listed = new Map(page.map((b) => [b.name, b]));
      const recorded = await documentsNamed(o.db, o.schema, o.runId, since, [...listed.keys()]);
      const named = new Set(recorded.map((d) => d.name));
      for (const name of listed.keys()) {
        if (named.has(name) || !ours.some((matches) => matches(name))) continue;
        result.extraCount += 1;
        if (result.extra.length < 20) result.extra.push(name);
      }
      const due = recorded.filter((d) => d.due && tasks.has(d.relation));
      const matches = (d: SweptDocument) => listed.get(d.name)!.size === d.size && listed.get(d.name)!.md5 === d.md5;
      for (const d of due) if (!matches(d)) result.wrong.push(wrong(d, 'different size or MD5'));
      await good(due.filter(matches));
    }
  }
  // Recorded before the listing began but not seen in it.
  const wrongNames = new Set(result.wrong.map((w) => w.name));
  const unseen = (await documentsDue(o.db, o.schema, o.runId, since, [...tasks.keys()])).filter((d) => !wrongNames.has(d.name));
  const found: SweptDocument[] = [];
  for (const d of unseen) {
    if (await blobMatches(o.container, d)) found.push(d);
    else result.wrong.push(wrong(d, 'missing'));
  }
  await good(found);
  // A batch still being copied (by another process) has uploaded blobs it has not recorded yet:
  // extras are told only by a sweep with none in flight (the last one of the copy).
  const { rows: inFlight } = await o.db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${quoteIdent(o.schema)}.batches WHERE run_id = $1 AND relation = ANY($2::text[]) AND status = 'claimed'`,
    [o.runId, [...tasks.keys()]],
  );
  if (inFlight[0]!.n > 0) Object.assign(result, { extra: [], extraCount: 0 });
  return result;
}

/** Each entry's name prefix once, none inside another. */
function prefixes(tasks: TableTask[]): string[] {
  const all = [...new Set(tasks.map((t) => blobPrefix(t.documents!.plan.blob)))].sort();
  return all.filter((p, i) => !all.slice(0, i).some((q) => p.startsWith(q)));
}

function wrong(d: SweptDocument, reason: WrongDocument['reason']): WrongDocument {
  return { relation: d.relation, key: d.key, name: d.name, batchId: d.batchId, reason, uploadedAt: d.uploadedAt };
}

/** The range of a document a sampled read compares: its first bytes, or a range placed by its MD5. */
function sampleRange(doc: { size: number; md5: string }): { offset: number; length: number } {
  const length = Math.min(doc.size, SAMPLE_BYTES);
  const offset = doc.size > length ? Buffer.from(doc.md5, 'base64').readUInt32BE(0) % (doc.size - length + 1) : 0;
  return { offset, length };
}

/**
 * The blob's bytes in the sampled range equal `source`'s (read at the same time). A blob in the
 * Archive tier cannot be read until it is rehydrated: its stored size and MD5 are all there is
 * to check, and it passes.
 */
export async function sampleMatches(
  container: DocumentContainer,
  doc: { name: string; size: number; md5: string },
  source: (offset: number, length: number) => Promise<Buffer | null>,
): Promise<boolean> {
  const { offset, length } = sampleRange(doc);
  const [blob, bytes] = await Promise.all([
    length === 0
      ? Buffer.alloc(0)
      : container
          .getBlobClient(doc.name)
          .downloadToBuffer(offset, length)
          .catch((err: unknown) => {
            if ((err as { code?: string }).code === 'BlobArchived') return null;
            throw err;
          }),
    source(offset, length),
  ]);
  return bytes !== null && (blob === null || bytes.equals(blob));
}

/** A range of the blob equals the source's (read by key on a session of the snapshot). */
async function sameBytes(o: SweepOptions, task: TableTask, d: SweptDocument): Promise<boolean> {
  const spec = task.documents!;
  const keys = task.shape.keyColumns!;
  const where = keysPredicate(keys, [d.key]);
  const describe = `${task.display} ${keys.map((k, i) => `${k.name}=${d.key[i]}`).join(', ')}`;
  return sampleMatches(o.container, d, (offset, length) =>
    o.content.use(async (client) => {
      // A row gone since its document was uploaded (a resumed run reads a newer snapshot): not the same.
      if (spec.contentKind === 'bytea') return byteaSlice(client, task.quoted, quoteIdent(spec.plan.content), where, offset, length);
      const { rows } = await client.query<{ oid: string | null }>(
        `SELECT ${quoteIdent(spec.plan.content)}::text AS oid FROM ${task.quoted} WHERE ${where}`,
      );
      const oid = rows[0]?.oid;
      return oid ? largeObjectContent(client, oid, describe, spec.plan.content).read(offset, length) : null;
    }),
  );
}
