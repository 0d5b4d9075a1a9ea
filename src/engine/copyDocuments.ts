/**
 * Copies one batch of a documents table. The rows stream from the source as text COPY; each
 * row's document is uploaded to its blob, and the row goes to the target with the blob's name in
 * the kept column instead of the bytes. Invariants:
 * - the batch's target transaction commits only after every one of its documents is uploaded,
 *   so no committed row names a blob that does not exist;
 * - each uploaded document is recorded (size, MD5, SHA-256) in the state store after its blob is
 *   committed (in groups of RECORD_GROUP, and all of them before the batch commits); a retried
 *   batch skips documents whose blob is there with the recorded size and MD5 (or, not recorded
 *   yet when a kill stopped the attempt, with the size and MD5 the blob itself states) and whose
 *   source bytes still have them (a rerun reads a newer snapshot: bytea by the bytes the stream
 *   passes, a large object read again), and uploads the others again
 *   (deterministic names and block ids make that safe);
 * - bytea documents come in a second stream, one binary COPY of the batch's contents on its own
 *   session in the same snapshot, row for row with the rows (checked by key); a document is read
 *   when an upload slot is about to free, whole up to one block, in blocks by its upload beyond;
 *   a large object is read by its oid in blocks;
 * - the batch's checksum covers the row's columns as copied (without the content) and its kept
 *   blob name, in key order, as for any table: the target's rows are read back with the kept
 *   column, so a row that names another blob than its document's (a trigger left on the target
 *   rewrote it, say) is a mismatch.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import type { BlockBlobTier } from '@azure/storage-blob';
import type PQueue from 'p-queue';
import type pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import { printedText, quoteIdent } from '../plan/names.js';
import { batchSelect, keysPredicate } from '../source/ranges.js';
import { BatchContents, byteaContent, bytesContent, contentDigests, largeObjectContent } from '../source/documentContent.js';
import { escapeField, splitFields, unescapeField } from '../source/copyText.js';
import type { ClientPool } from '../pg/clientPool.js';
import type { RecordedDocument } from '../state/sql/documents.js';
import type { BatchRow } from '../state/types.js';
import { blobName, DocumentError, headerValue, renderTemplate, type RowValues } from '../target/blob/naming.js';
import type { DocumentContainer } from '../target/blob/container.js';
import {
  blobDigest,
  blobMatches,
  uploadDocument,
  type DocumentContent,
  type Uploaded,
  type UploadSettings,
} from '../target/blob/upload.js';
import type { DocumentPlan } from '../plan/defaults.js';
import { StreamDigest } from '../verify/rowDigest.js';
import { inBatchTransaction, type CopiedBatch, type CopyBatchContext } from './copyBatch.js';
import { beginInSnapshot } from './snapshot.js';
import type { BlockBuffers } from './blockBuffers.js';
import type { TableTask } from './tableTask.js';

const { from: copyFrom, to: copyTo } = pgCopyStreams;

/** Uploaded documents are recorded this many at a time (and all before their batch commits). */
const RECORD_GROUP = 32;
/** Documents read whole above this size go into a reused block buffer (smaller ones are mostly views of what PostgreSQL sent). */
const POOLED_FROM = 64 * 1024;

export interface UploadedDocument extends Uploaded {
  key: string[];
  name: string;
}

export interface DocumentStore {
  /** Documents of this relation already uploaded (by key JSON), for a retried batch. */
  recorded(relation: string, keys: string[][]): Promise<Map<string, RecordedDocument>>;
  record(relation: string, docs: UploadedDocument[], batchId: string): Promise<void>;
  /** Forgets the batch's records of documents other than these keys, while the claim holds; returns how many. */
  forgetOthers(relation: string, keys: string[][], claim: { batchId: string; workerId: string; snapshot: string | null }): Promise<number>;
}

export interface DocumentsContext {
  container: DocumentContainer;
  /**
   * Shared by every batch: blobConcurrency documents in flight in all, and one more per batch
   * waiting for a slot (their bytes in memory, up to a block each).
   */
  uploads: PQueue;
  /** Source sessions in the copy's snapshot: large objects, and the sweep's sampled reads. */
  content: ClientPool;
  blobConcurrency: number;
  blockSize: number;
  blockConcurrency: number;
  /** Block-sized buffers for documents read whole (over POOLED_FROM bytes). */
  buffers: BlockBuffers;
  store: DocumentStore;
  abortSignal?: AbortSignal;
}

export interface CopiedDocumentsBatch extends CopiedBatch {
  documents: UploadedDocument[];
}

export async function copyDocumentsBatch(
  ctx: CopyBatchContext,
  docs: DocumentsContext,
  task: TableTask,
  batch: BatchRow,
  retry: boolean,
  /** For bytea documents: a source session of the batch's own, for their stream (BatchContents). */
  contentSession: pg.Client | null,
): Promise<CopiedDocumentsBatch> {
  const spec = task.documents!;
  const keyCols = task.shape.keyColumns!;
  const content = quoteIdent(spec.plan.content);
  const columns = task.shape.columns;
  const index = new Map(columns.map((c, i) => [c, i]));
  const keyIndex = keyCols.map((k) => index.get(k.name)!);
  const streamed = spec.contentKind === 'bytea';
  if (streamed && !contentSession) throw new Error(`${task.display}: bytea documents need a session for their stream`);
  // bytea: its size (NULL for NULL); oid: the large object's oid.
  const marker = streamed ? `octet_length(${content})` : `${content}::text`;

  const result = await inBatchTransaction(ctx, task, batch, retry, async (range) => {
    const select = batchSelect(task.quoted, columns, range, keyCols, task.where, [marker]);
    let contents: BatchContents | null = null;
    if (contentSession) {
      await beginInSnapshot(contentSession, ctx.snapshot);
      const keys = keyCols.map((k) => printedText(k.name));
      contents = BatchContents.open(contentSession, batchSelect(task.quoted, [], range, keyCols, task.where, [...keys, content]));
    }
    const digest = new StreamDigest();
    const uploads = docs.uploads;
    const mine: Array<Promise<void>> = [];
    const uploaded: UploadedDocument[] = [];
    let unrecorded: UploadedDocument[] = [];
    let recording = Promise.resolve();
    const recordPending = () => {
      const group = unrecorded;
      unrecorded = [];
      recording = recording.then(() => docs.store.record(task.display, group, batch.id));
      return recording;
    };
    // Rows of a retry in a row whose unrecorded document has no blob (see below).
    let misses = 0;
    const lookupsPastLastFound = RECORD_GROUP + 2 * docs.blobConcurrency;
    /** A document whose blob is there: counted, and recorded with the next group. */
    const keep = async (doc: UploadedDocument) => {
      uploaded.push(doc);
      unrecorded.push(doc);
      if (unrecorded.length >= RECORD_GROUP) await recordPending();
    };
    let failure: unknown = null;
    // Set once the streams are over (a failure among them): a row's work still under way adds
    // no upload after that, so none outlives the attempt unawaited and unrecorded.
    let abandoned = false;
    const goOn = () => {
      if (abandoned) throw new Error(`${task.display} batch ${batch.seq}: abandoned`);
    };
    let rows = 0;
    let pendingLine = '';
    const decoder = new StringDecoder('utf8');
    const already = retry ? null : new Map<string, RecordedDocument>();
    const known = async (keys: string[][]) => already ?? docs.store.recorded(task.display, keys);

    const rowsToTarget = new Transform({
      transform(chunk: Buffer, _enc, done: TransformCallback) {
        // The stream's chunks end wherever a socket read did, inside a character too.
        const text = pendingLine + decoder.write(chunk);
        const lines = text.split('\n');
        pendingLine = lines.pop()!;
        void (async () => {
          const out: string[] = [];
          const parsed = lines.map(splitFields);
          const recorded = await known(parsed.map((f) => keyIndex.map((i) => unescapeField(f[i]!) ?? '')));
          for (const f of parsed) {
            goOn();
            const copyLine = f.slice(0, columns.length).join('\t');
            rows += 1;
            const flag = f[columns.length]!;
            const key = keyIndex.map((i) => unescapeField(f[i]!) ?? '');
            const values: RowValues = {
              get: (c) => {
                const i = index.get(c);
                return i === undefined ? null : unescapeField(f[i]!);
              },
              describe: `${task.display} ${keyCols.map((k, i) => `${k.name}=${key[i]}`).join(', ')}`,
            };
            const name = flag === '\\N' ? null : blobName(spec.plan.blob, values);
            const line = `${copyLine}\t${escapeField(name)}\n`;
            // The row as the target must hold it, its blob's name too.
            digest.update(line);
            out.push(line);
            const size = name === null ? null : Number(flag); // bytea: octet_length
            await contents?.row(key, size, values.describe);
            if (name === null) continue;
            const settings = uploadSettings(spec.plan, values, docs);
            const record = recorded.get(JSON.stringify(key));
            // One the sweep found wrong goes up again, whatever its blob says of itself.
            const recordedDoc = record?.foundWrong ? undefined : record;
            // A process killed mid-batch leaves blobs it uploaded but had not recorded yet (up to
            // a group of them, among its last uploads): a retry finds them by name and checks them
            // as it checks recorded ones, so only the uploads the kill cut short go up again. Past
            // that many rows in a row with no blob, the rest were never uploaded: no more asking.
            const asks = !record && already === null && misses < lookupsPastLastFound;
            const found = asks ? await blobDigest(docs.container, name, docs.abortSignal) : null;
            if (asks) misses = found ? 0 : misses + 1;
            const prior = recordedDoc ?? (found && { ...found, name });
            // A document changed since it was recorded (a rerun reads a newer snapshot) goes up
            // again: a bytea document's size tells, or else the MD5 of its bytes, which the stream
            // passes anyway; a large object (replaced by another, or rewritten where it is) is read
            // for its MD5, with no upload. So does one whose content type, metadata or tag columns changed.
            let passed = false;
            if (prior && prior.name === name && (!streamed || prior.size === size)) {
              passed = contents !== null;
              // A found blob is recorded as if uploaded now: its SHA-256 too.
              const now = contents
                ? await contents.skipWithDigests(!recordedDoc)
                : await docs.content.use((client: pg.Client) =>
                    contentDigests(largeObjectContent(client, flag, values.describe, spec.plan.content), docs.blockSize, !recordedDoc),
                  );
              if (now.md5 === prior.md5 && now.size === prior.size && (await blobMatches(docs.container, prior, settings))) {
                if (recordedDoc) uploaded.push(recordedDoc);
                else await keep({ key, name, size: now.size, md5: now.md5, sha256: now.sha256! });
                continue;
              }
            }
            const send = async (source: DocumentContent) => {
              const doc = { ...(await uploadDocument(docs.container, name, source, settings)), key, name };
              // A bytea document's size came with its row: an upload of any other size is a bug, never kept.
              if (streamed && doc.size !== size)
                throw new Error(`${values.describe}: uploaded ${doc.size} bytes of a ${size}-byte document`);
              await ctx.hooks.afterDocumentUpload?.({ table: task.display, name });
              await keep(doc);
            };
            // Bounded memory: a document's bytes are read when no other waits for an upload slot.
            await uploads.onSizeLessThan(1);
            let consumed: Promise<void> | null = null;
            // null: read by its upload on a session of the snapshot (a large object, or a bytea
            // document the stream has passed), by oid or by key.
            let source: DocumentContent | null = null;
            let buffer: Buffer | undefined;
            if (contents && !passed && size !== null && size < docs.blockSize) {
              buffer = size > POOLED_FROM ? docs.buffers.take() : undefined;
              source = bytesContent(await contents.whole(size, buffer));
            } else if (contents && !passed && size !== null) ({ content: source, consumed } = contents.streamed(size));
            const bySession = (client: pg.Client) =>
              streamed
                ? byteaContent(client, task.quoted, content, keysPredicate(keyCols, [key]), values.describe)
                : largeObjectContent(client, flag, values.describe, spec.plan.content);
            goOn();
            const upload = uploads
              .add(() => (source ? send(source) : docs.content.use((client: pg.Client) => send(bySession(client)))))
              .catch((err: unknown) => {
                failure ??= err;
              })
              .finally(() => buffer && docs.buffers.give(buffer));
            mine.push(upload);
            // The stream moves on to the next document once the upload has read this one.
            if (consumed) await Promise.race([consumed, upload]);
            if (failure !== null) throw failure;
          }
          return out.join('');
        })().then(
          (out) => done(null, out),
          (err: unknown) => done(err as Error),
        );
      },
      flush(done: TransformCallback) {
        if (pendingLine.length > 0 || decoder.end().length > 0) done(new Error('COPY text stream ended inside a row'));
        else done();
      },
    });

    const out = ctx.source.query(copyTo(`COPY (${select}) TO STDOUT (FORMAT text)`));
    const into = ctx.target.query(
      copyFrom(`COPY ${task.quoted} (${[...columns, spec.plan.keepColumn].map(quoteIdent).join(', ')}) FROM STDIN (FORMAT text)`),
    );
    try {
      await pipeline(out, rowsToTarget, into);
      if (contents) {
        await contents.end(`${task.display} batch ${batch.seq}`);
        await contentSession!.query('COMMIT');
      }
    } finally {
      abandoned = true;
      // Whatever happened, the documents uploaded so far are recorded, so a retry skips them.
      await Promise.all(mine);
      await recordPending();
    }
    if (failure !== null) throw failure;
    // An earlier attempt read an older snapshot: a document it recorded whose row is gone, or
    // holds NULL now, is no document of the run (the sweep reports its blob as extra).
    if (retry)
      await docs.store.forgetOthers(
        task.display,
        uploaded.map((d) => d.key),
        { batchId: batch.id, workerId: ctx.workerId, snapshot: ctx.snapshot },
      );
    return { digest: digest.result(rows), bytes: uploaded.reduce((n, x) => n + x.size, 0), documents: uploaded };
  });
  return { ...result, documents: result.documents ?? [] };
}

/** How one row's document is uploaded: its content type, metadata, tags and tier from the plan's templates. */
export function uploadSettings(
  plan: DocumentPlan,
  values: RowValues,
  docs: Pick<DocumentsContext, 'blockSize' | 'blockConcurrency' | 'abortSignal'>,
): UploadSettings {
  const header = (t: string, field: string) => headerValue(renderTemplate(t, values, field, (v) => v));
  return {
    blockSize: docs.blockSize,
    blockConcurrency: docs.blockConcurrency,
    // A header: a value with a line break or beyond ASCII is sent percent-encoded, never refused.
    contentType: header(plan.contentType, 'contentType'),
    metadata: Object.fromEntries(Object.entries(plan.metadata).map(([k, t]) => [k, header(t, `metadata.${k}`)])),
    tags: Object.fromEntries(Object.entries(plan.tags).map(([k, t]) => [k, tagValue(t, values, k)])),
    tier: plan.tier as BlockBlobTier | undefined,
    ...(docs.abortSignal ? { abortSignal: docs.abortSignal } : {}),
  };
}

/** Azure takes a tag value of up to 256 of these characters, and refuses the request otherwise. */
const TAG_VALUE = /^[A-Za-z0-9 +\-./:=_]{0,256}$/;

/** A tag's value from its template, refused at its row (naming it) if Azure would refuse it. */
function tagValue(template: string, values: RowValues, tag: string): string {
  const value = renderTemplate(template, values, `tags.${tag}`, (v) => v);
  if (TAG_VALUE.test(value)) return value;
  throw new DocumentError(
    `${values.describe}: tag "${tag}" would be "${value.length > 60 ? `${value.slice(0, 60)}…` : value}", which Azure refuses in a tag (up to 256 letters, digits, spaces and + - . / : = _)`,
    `change the template of tags.${tag} ("${template}") to columns whose values fit, or leave the tag out; documents already uploaded are kept`,
  );
}
