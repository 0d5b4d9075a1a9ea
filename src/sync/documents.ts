/**
 * Documents during live sync: an inserted or changed document is uploaded (to its deterministic
 * name, so a replayed change overwrites the same blob) before its row is applied, and recorded in
 * the state store; the blob of a deleted row is removed after the row's transaction committed.
 */
import type { DocumentContainer } from '../target/blob/container.js';
import type pg from 'pg';
import PQueue from 'p-queue';
import { quoteIdent } from '../plan/names.js';
import { keysPredicate } from '../source/ranges.js';
import { byteaContent, bytesContent, largeObjectContent } from '../source/documentContent.js';
import { uploadSettings } from '../engine/copyDocuments.js';
import type { TableTask } from '../engine/tableTask.js';
import { blobName, DocumentError, type RowValues } from '../target/blob/naming.js';
import { DEFAULT_BLOCKS, uploadDocument } from '../target/blob/upload.js';
import type { DocumentRecord } from '../state/sql/documents.js';
import type { DocumentBytes, DocumentSink } from './apply.js';
import type { ReleasedLedger } from './blobRelease.js';

export interface SyncDocumentStore {
  record(relation: string, doc: DocumentRecord): Promise<void>;
  forget(relation: string, key: string[]): Promise<void>;
  /** Where the apply session writes the names it lets go of (the state store is in the target). */
  released: ReleasedLedger;
}

/** Blobs deleted at once after a transaction that removed their rows. */
const REMOVE_CONCURRENCY = 16;

/** `signal` ends its uploads (the cutover pause's budget). */
export function documentSink(
  container: DocumentContainer,
  source: pg.Client,
  store: SyncDocumentStore,
  signal?: AbortSignal,
): DocumentSink {
  const rowValues = (task: TableTask, row: Map<string, string | null>): RowValues => {
    const keys = task.shape.keyColumns ?? [];
    return {
      get: (c) => row.get(c) ?? null,
      describe: `${task.display} ${keys.map((k) => `${k.name}=${row.get(k.name)}`).join(', ')}`,
    };
  };
  const keyOf = (task: TableTask, row: Map<string, string | null>) => (task.shape.keyColumns ?? []).map((k) => row.get(k.name) ?? '');
  /**
   * A document read from the source as it is now (a renamed row's unchanged bytea, a large
   * object) can be gone because of a later change: the row deleted or its key changed, the large
   * object replaced and unlinked. That change is further on in the stream and will be applied
   * (removing the row and its blob, or uploading the new document), so this upload is skipped.
   * A row that still holds what was asked for is a real error.
   */
  const superseded = async (task: TableTask, key: string[], oid: string | undefined) => {
    const where = keysPredicate(task.shape.keyColumns!, [key]);
    const same = oid === undefined ? '' : ` AND ${quoteIdent(task.documents!.plan.content)} = ${Number(oid)}::oid`;
    const { rows } = await source.query(`SELECT 1 FROM ${task.quoted} WHERE ${where}${same}`);
    return rows.length === 0;
  };
  /** The properties a row gives its blob (null if it cannot give them: a NULL placeholder). */
  const properties = (task: TableTask, row: Map<string, string | null>) => {
    try {
      const s = uploadSettings(task.documents!.plan, rowValues(task, row), DEFAULT_BLOCKS);
      return JSON.stringify([s.contentType, s.metadata, s.tags]);
    } catch {
      return null;
    }
  };
  return {
    name: (task, row) => blobName(task.documents!.plan.blob, rowValues(task, row)),
    propertiesChanged: (task, before, after) => properties(task, before) !== properties(task, after),
    async upload(task, row, name, content: DocumentBytes | null) {
      const spec = task.documents!;
      const values = rowValues(task, row);
      const key = keyOf(task, row);
      const from =
        content && 'bytes' in content
          ? bytesContent(content.bytes)
          : content && 'oid' in content
            ? largeObjectContent(source, content.oid, values.describe, spec.plan.content)
            : byteaContent(
                source,
                task.quoted,
                quoteIdent(spec.plan.content),
                keysPredicate(task.shape.keyColumns!, [key]),
                values.describe,
              );
      const settings = uploadSettings(spec.plan, values, signal ? { ...DEFAULT_BLOCKS, abortSignal: signal } : DEFAULT_BLOCKS);
      let uploaded;
      try {
        uploaded = await uploadDocument(container, name, from, settings);
      } catch (err) {
        // Only a document read from the source as it is now can have been superseded.
        const oid = content && 'oid' in content ? content.oid : undefined;
        if (err instanceof DocumentError && (content === null || oid !== undefined) && (await superseded(task, key, oid))) return;
        throw err;
      }
      await store.record(task.display, { ...uploaded, key, name });
    },
    forget: (task, key) => store.forget(task.display, key),
    released: store.released,
    async remove(names) {
      // A TRUNCATE's chunk of a thousand would take seconds one at a time.
      const queue = new PQueue({ concurrency: REMOVE_CONCURRENCY });
      await Promise.all(names.map((n) => queue.add(() => container.getBlobClient(n).deleteIfExists())));
    },
  };
}
