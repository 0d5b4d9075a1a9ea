/** What the copy knows about one table: where it is, how it is keyed, how it is copied. */
import type { DocumentPlan } from '../plan/defaults.js';
import { displayName, quoteQualified, type QualifiedName } from '../plan/names.js';
import type { BatchRange } from '../source/ranges.js';
import type { CopyShape } from '../source/splitTable.js';
import type { CopiedColumn } from '../target/postgres/existingShape.js';
import type { BatchRow } from '../state/types.js';

export interface DocumentsSpec {
  plan: DocumentPlan;
  /** bytea, or oid of a large object. */
  contentKind: 'bytea' | 'oid';
  /** Why the blob template can give two rows one name (no unique key among its columns), or null. */
  namesCollide: string | null;
}

export interface TableTask {
  name: QualifiedName;
  display: string;
  quoted: string;
  shape: CopyShape;
  where: string | undefined;
  batchRows: number;
  /** The target columns the copy writes, with their types: an existing target table must have them. */
  copied: CopiedColumn[];
  /** Set for a documents table: its content goes to Blob Storage, the row keeps the blob name. */
  documents?: DocumentsSpec;
}

export function tableTask(
  name: QualifiedName,
  shape: CopyShape,
  copied: CopiedColumn[],
  where: string | undefined,
  batchRows: number,
): TableTask {
  return { name, display: displayName(name), quoted: quoteQualified(name), shape, copied, where, batchRows };
}

export function rangeOf(task: TableTask, batch: Pick<BatchRow, 'key_low' | 'key_high'>): BatchRange {
  if (task.shape.keyColumns) return { kind: 'key', low: batch.key_low as string[] | null, high: batch.key_high as string[] | null };
  return { kind: 'ctid', lowPage: batch.key_low as number | null, highPage: batch.key_high as number | null };
}

export function rangeBounds(range: BatchRange): { low: unknown; high: unknown } {
  return range.kind === 'key' ? { low: range.low, high: range.high } : { low: range.lowPage, high: range.highPage };
}
