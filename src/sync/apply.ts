/**
 * Applies decoded changes to the target. Invariants (DESIGN.md, "why a live copy converges"):
 * - one source transaction is one target transaction, applied in commit order; the applied
 *   position is saved inside that transaction, so a crash either keeps both or neither;
 * - apply is idempotent: an insert is an upsert on the key, updates and deletes go by key, an
 *   unchanged TOASTed column is left alone; a transaction at or below the applied position is
 *   skipped;
 * - an UPDATE or DELETE that matches no row is a divergence, reported, unless the transaction is
 *   older than the newest snapshot the copy used (then the row was legitimately gone already);
 * - values stay text, cast on the server to the target column's type;
 * - a relation whose columns differ from the target's (DDL on the source) stops the apply with
 *   a message naming the table and the difference;
 * - documents: a row naming a blob is applied only after the blob is uploaded; blobs of deleted
 *   rows are removed after the commit.
 */
import type pg from 'pg';
import { displayName, printedText, quoteIdent } from '../plan/names.js';
import { templateColumns } from '../plan/templates.js';
import { CloudshiftError, ExitCode } from '../errors.js';
import type { TableTask } from '../engine/tableTask.js';
import type { PgOutputMessage, Tuple, Value } from './pgoutput.js';
import { blockHexToBytes } from './hex.js';
import { BlobRelease, type ReleasedLedger } from './blobRelease.js';
import type { Lsn } from './lsn.js';

export class SyncStoppedError extends CloudshiftError {
  constructor(message: string, hint: string) {
    super('CS_SYNC_STOPPED', ExitCode.failed, message, { hint });
  }
}

/** Where the applied position lives; `save` runs inside the open target transaction. */
export interface Progress {
  load(target: pg.Client): Promise<Lsn>;
  save(target: pg.Client, lsn: Lsn, commitTime: Date): Promise<void>;
}

export interface Divergence {
  table: string;
  operation: 'UPDATE' | 'DELETE';
  key: string;
  lsn: Lsn;
}

/** A document's bytes as the WAL carries them (bytea), or the large object holding them. */
export type DocumentBytes = { bytes: Buffer } | { oid: string };

/** Documents in the sync: blobs written before their rows, removed after. */
export interface DocumentSink {
  /** The blob name the plan's template gives the row. */
  name(task: TableTask, row: Map<string, string | null>): string;
  /** Whether the row's content type, metadata or tags differ between these values of its columns. */
  propertiesChanged(task: TableTask, before: Map<string, string | null>, after: Map<string, string | null>): boolean;
  /** Uploads the row's document to `name`. `content` null: read the current bytes from the source. */
  upload(task: TableTask, row: Map<string, string | null>, name: string, content: DocumentBytes | null): Promise<void>;
  forget(task: TableTask, key: string[]): Promise<void>;
  remove(names: string[]): Promise<void>;
  /** Where released names wait, in the apply side's database (the state store). */
  released: ReleasedLedger;
}

export interface ApplierOptions {
  target: pg.Client;
  /** Source connection for type names and documents read back. */
  source: pg.Client;
  tables: readonly TableTask[];
  progress: Progress;
  /** Transactions committed before this position may find rows already gone. */
  tolerateUntil: Lsn | null;
  documents: DocumentSink | null;
  /**
   * Reverse sync (target → source at rollback): the changes come from the target, whose
   * documents tables keep a blob name where the source keeps the bytes; the named blob's bytes
   * are written into the source's content column.
   */
  reverse?: {
    readBlob(name: string): Promise<Buffer>;
    /** The blob's Content-MD5 (hex) and size, without its bytes; null when it has none or is gone. */
    blobDigest(name: string): Promise<{ md5: string; size: number } | null>;
  };
  onDivergence(d: Divergence): Promise<void>;
}

interface ColumnMap {
  name: string;
  /** Target type, for the cast of the text value. */
  type: string;
  /** Reverse sync: the value is a blob name; the blob's bytes are written, as bytea or as a new large object (oid, or a domain over oid such as contrib's lo). */
  fromBlob?: 'bytea' | 'oid';
  /** SQL around the value's parameter (the cast), computed once: `${pre}$n${post}`. */
  around: readonly [string, string];
}

interface Relation {
  task: TableTask;
  /** Relation column index → target column (null: the document content column, not copied). */
  columns: Array<ColumnMap | null>;
  /** The table's key (batches, documents, insert conflicts), by relation column index. */
  keyIdx: number[];
  /**
   * The replica identity, which UPDATE and DELETE find their row by: the columns an old-key tuple
   * carries (the others are left out). The key itself when it is the identity or the identity is
   * FULL; empty for a keyless FULL table (found by all its values).
   */
  identIdx: number[];
  contentIdx: number;
  insertPrefix: string;
  insertSuffix: string;
  insertWidth: number;
  /** SQL around each inserted value's parameter, in insert column order: `${pre}$n${post}`. */
  insertValues: Array<readonly [string, string]>;
  /** Target columns GENERATED ALWAYS AS IDENTITY: inserted with OVERRIDING SYSTEM VALUE, never SET. */
  alwaysIdentity: ReadonlySet<string>;
  /** The inserted columns, in order. */
  insertColumns: string[];
  /** A deferrable key (no ON CONFLICT arbiter): rows are deleted by key first; where the key is among the inserted values, and its types. */
  deleteFirst: { keyAt: number[]; types: string[] } | null;
  /** The columns the documents entry's templates read (name, content type, metadata, tags), in relation order. */
  templated: string[];
}

/** A statement parameter: text, or bytes (a reverse document's, sent as binary bytea). */
type Param = string | Buffer | null;

const MAX_ROWS_PER_INSERT = 1000;
/**
 * Inserts are also bounded by their values' text: a transaction of 1,000 scans of 600 kB would
 * otherwise be one statement of 1.2 GB (bytea travels as hex), over PostgreSQL's 1 GB message
 * limit, and held in memory whole. A single larger row still goes alone.
 */
const MAX_TEXT_PER_INSERT = 16 * 1024 * 1024;

export interface ApplyStats {
  transactions: number;
  changes: number;
  divergences: number;
}

export class Applier {
  private readonly byName: Map<string, TableTask>;
  private readonly relations = new Map<number, Relation>();
  /** Tables the stream described that the plan does not migrate (a partition of a published root): relid → name. */
  private readonly unmapped = new Map<number, string>();
  private applied: Lsn = 0n;
  private inTx = false;
  private skipping = false;
  /** The target transaction of the source's current one has begun (at its first change). */
  private opened = false;
  private txLsn: Lsn = 0n;
  private pending: { rel: Relation; rows: Param[][]; keys: Set<string>; text: number } | null = null;
  /** Documents: the blobs each transaction lets go of. */
  private readonly blobs: BlobRelease | null;
  readonly stats: ApplyStats = { transactions: 0, changes: 0, divergences: 0 };

  constructor(private readonly o: ApplierOptions) {
    this.byName = new Map(o.tables.map((t) => [relationKey(t.name), t]));
    this.blobs = o.documents ? new BlobRelease(o.target, o.documents.released) : null;
  }

  async start(): Promise<Lsn> {
    // Replicated changes must not fire the target's triggers (their effects arrive replicated too).
    await this.o.target.query(`SET session_replication_role = replica`);
    this.applied = await this.o.progress.load(this.o.target);
    // Blobs a killed process let go of in a committed transaction, before any later one takes their names.
    await this.removeReleased();
    return this.applied;
  }

  get position(): Lsn {
    return this.applied;
  }

  get inTransaction(): boolean {
    return this.inTx;
  }

  /** Applies one message; returns the position to acknowledge when a transaction committed. */
  async handle(m: PgOutputMessage): Promise<Lsn | null> {
    switch (m.tag) {
      case 'begin':
        this.inTx = true;
        this.txLsn = m.finalLsn;
        this.skipping = m.finalLsn < this.applied;
        this.opened = false;
        return null;
      case 'commit': {
        this.inTx = false;
        // Nothing of it was for the plan's tables (before PostgreSQL 15, pgoutput sends every
        // transaction, empty or not): no target commit; heartbeats carry the position past it.
        if (this.skipping || !this.opened) return null;
        this.opened = false;
        try {
          await this.flushInserts();
          await this.blobs?.beforeCommit();
          await this.o.progress.save(this.o.target, m.endLsn, m.commitTime);
          await this.o.target.query('COMMIT');
        } catch (err) {
          await this.o.target.query('ROLLBACK').catch(() => undefined);
          throw err;
        }
        this.applied = m.endLsn;
        this.stats.transactions += 1;
        return m.endLsn;
      }
      case 'relation':
        await this.flushInserts();
        // A partition's description also comes before its root's changes (the publication
        // sends them as the root's): a table the plan does not migrate stops the sync only
        // when a change of its own arrives.
        if (this.byName.has(relationKey(m))) {
          this.relations.set(m.relid, await this.mapRelation(m));
          this.unmapped.delete(m.relid);
        } else {
          this.relations.delete(m.relid);
          this.unmapped.set(m.relid, displayName(m));
        }
        return null;
      case 'insert':
        if (this.skipping) return null;
        await this.change(m.relid, (rel) => this.insert(rel, m.row));
        return null;
      case 'update':
        if (this.skipping) return null;
        await this.flushInserts();
        await this.change(m.relid, (rel) => this.update(rel, m.key ?? m.old, m.row));
        return null;
      case 'delete':
        if (this.skipping) return null;
        await this.flushInserts();
        await this.change(m.relid, (rel) => this.delete(rel, (m.key ?? m.old)!));
        return null;
      case 'truncate':
        if (this.skipping) return null;
        await this.flushInserts();
        await this.truncate(
          m.relids.map((id) => this.rel(id)).filter((rel) => !this.inNewerCopy(rel)),
          m.restartIdentity,
        );
        return null;
      case 'message':
        return null;
      case 'type':
      case 'origin':
        return null;
    }
  }

  /** Records a position reached outside any transaction (a heartbeat or fence message). */
  async reach(lsn: Lsn, at: Date): Promise<Lsn | null> {
    if (this.inTx || lsn <= this.applied) return null;
    await this.o.target.query('BEGIN');
    try {
      await this.o.progress.save(this.o.target, lsn, at);
      await this.o.target.query('COMMIT');
    } catch (err) {
      await this.o.target.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    this.applied = lsn;
    return lsn;
  }

  /** After a commit (outside any transaction): removes the blobs it let go of. */
  async removeReleased(): Promise<void> {
    const docs = this.o.documents;
    if (docs) await this.blobs?.removeCommitted((names) => docs.remove(names));
  }

  /** Abandons an open transaction (the stream broke or a stop was asked): nothing of it is kept. */
  async abandon(): Promise<void> {
    if (this.inTx && this.opened) await this.o.target.query('ROLLBACK').catch(() => undefined);
    this.inTx = false;
    this.opened = false;
    this.pending = null;
    this.blobs?.forget();
  }

  /** One row's change; a value too long for text stops the sync with its table named. */
  private async change(relid: number, apply: (rel: Relation) => Promise<void>): Promise<void> {
    const rel = this.rel(relid);
    if (this.inNewerCopy(rel)) return;
    await this.open();
    try {
      await apply(rel);
    } catch (err) {
      if (!(err instanceof LongValueError)) throw err;
      throw new SyncStoppedError(
        `${rel.task.display}: ${err.message}; live sync stopped`,
        'live sync cannot apply such a value (every rerun meets it again): move this column to Blob Storage with a documents entry, whose bytes never become text, and migrate this table again',
      );
    }
  }

  /** Begins the target transaction at the source transaction's first change for the plan. */
  private async open(): Promise<void> {
    if (this.opened) return;
    await this.o.target.query('BEGIN');
    this.opened = true;
  }

  /** Before the newest snapshot the copy was resumed from: rows may already show this change. */
  private get tolerating(): boolean {
    return this.o.tolerateUntil !== null && this.txLsn < this.o.tolerateUntil;
  }

  /**
   * A keyless table's change that its copy already holds: such a table is copied again whole
   * from a resumed copy's snapshot, whose consistent point is exact (see recopyKeyless).
   */
  private inNewerCopy(rel: Relation): boolean {
    return rel.keyIdx.length === 0 && this.tolerating;
  }

  private rel(relid: number): Relation {
    const unmapped = this.unmapped.get(relid);
    if (unmapped !== undefined)
      throw new SyncStoppedError(
        `the publication sends changes of ${unmapped}, which the plan does not migrate`,
        'run `cloudshift cleanup` and start again, or add the table to the plan',
      );
    const r = this.relations.get(relid);
    if (!r) throw new Error(`pgoutput: change for relation ${relid} before its description`);
    return r;
  }

  private async mapRelation(m: Extract<PgOutputMessage, { tag: 'relation' }>): Promise<Relation> {
    const task = this.byName.get(relationKey(m))!;
    const { rows } = await this.o.target.query<{ name: string; type: string; generated: boolean; always: boolean }>(
      `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attgenerated <> '' AS generated,
              a.attidentity = 'a' AS always
         FROM pg_attribute a
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum`,
      [task.quoted],
    );
    const target = new Map(rows.filter((r) => !r.generated).map((r) => [r.name, r]));
    const always = new Set(rows.filter((r) => r.always).map((r) => r.name));
    const reverse = this.o.reverse !== undefined;
    const content = task.documents?.plan.content;
    const keep = task.documents?.plan.keepColumn;
    // Forward, the stream carries the content column and the target has the kept blob name
    // instead; reverse, the other way round.
    const streamOnly = reverse ? keep : content;
    const applyOnly = reverse ? content : keep;
    const sourceNames = m.columns.map((c) => c.name);
    const added = sourceNames.filter((n) => n !== streamOnly && !target.has(n));
    const dropped = [...target.keys()].filter((n) => n !== applyOnly && !sourceNames.includes(n));
    const types = await this.sourceTypes(m.columns);
    const changed = m.columns.filter((c, i) => c.name !== streamOnly && target.has(c.name) && target.get(c.name)!.type !== types[i]);
    if (added.length + dropped.length + changed.length > 0) {
      const what = [
        ...added.map((n) => `column "${n}" added`),
        ...dropped.map((n) => `column "${n}" dropped`),
        ...changed.map((c) => `column "${c.name}" is now ${types[m.columns.indexOf(c)]} (target: ${target.get(c.name)!.type})`),
      ];
      throw new SyncStoppedError(
        `${task.display} changed on the source since it was copied (DDL): ${what.join('; ')}; live sync stopped`,
        `apply the same change to ${task.display} on the target, then \`cloudshift run\` resumes the sync where it stopped`,
      );
    }
    const columns = m.columns.map((c): ColumnMap | null => {
      if (c.name !== streamOnly) return column(c.name, target.get(c.name)!.type, false);
      return reverse ? column(content!, target.get(content!)!.type, task.documents!.contentKind) : null;
    });
    const keyNames = task.shape.keyColumns?.map((k) => k.name) ?? null;
    const keyIdx = keyNames ? keyNames.map((k) => sourceNames.indexOf(k)) : [];
    if (keyNames && keyIdx.some((i) => i < 0)) throw new Error(`${task.display}: a key column is missing from the replicated columns`);
    const written = columns.filter((c): c is ColumnMap => c !== null);
    const extra = !reverse && keep ? keep : null;
    const targetCols = [...written.map((c) => c.name), ...(extra ? [extra] : [])];
    // An ALWAYS identity can be SET only to DEFAULT: a row applied again keeps its value anyway.
    const nonKey = targetCols.filter((c) => !keyNames?.includes(c) && !always.has(c));
    // ON CONFLICT takes no deferrable key as its arbiter: such a table's rows are deleted by key
    // before they are inserted (the same end state as the upsert).
    const deferrable = keyNames !== null && !(await this.immediateKey(task, keyNames));
    const keyAt = deferrable ? keyNames.map((k) => targetCols.indexOf(k)) : [];
    const conflict =
      keyNames && !deferrable
        ? ` ON CONFLICT (${keyNames.map(quoteIdent).join(', ')}) DO ${
            nonKey.length ? `UPDATE SET ${nonKey.map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`).join(', ')}` : 'NOTHING'
          }`
        : '';
    // pgoutput flags the identity's columns: all of them for FULL, none for NOTHING.
    const flagged = m.columns.flatMap((c, i) => (c.key ? [i] : []));
    // FULL with a DEFERRABLE key: one statement can shift keys (id = id + 1), leaving two rows
    // under one key inside the transaction, so rows are found by all their old values instead.
    const identIdx = flagged.length === 0 ? keyIdx : flagged.length === m.columns.length ? (deferrable ? [] : keyIdx) : flagged;
    return {
      task,
      columns,
      keyIdx,
      identIdx,
      contentIdx: content && !reverse ? sourceNames.indexOf(content) : -1,
      // The source's identity values are the rows' own: an ALWAYS identity takes them only so.
      insertPrefix: `INSERT INTO ${task.quoted} (${targetCols.map(quoteIdent).join(', ')})${
        targetCols.some((c) => always.has(c)) ? ' OVERRIDING SYSTEM VALUE' : ''
      } VALUES `,
      insertSuffix: conflict,
      insertWidth: targetCols.length,
      insertValues: [...written.map((c) => c.around), ...(extra ? [column(extra, 'text', false).around] : [])],
      alwaysIdentity: always,
      insertColumns: targetCols,
      deleteFirst: deferrable ? { keyAt, types: keyAt.map((i) => written[i]!.type) } : null,
      templated: templatedIn(task, columns),
    };
  }

  /** The target has an immediate (not deferrable) unique index on exactly these columns. */
  private async immediateKey(task: TableTask, keyNames: string[]): Promise<boolean> {
    const { rows } = await this.o.target.query(
      `SELECT 1 FROM pg_index i
        WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indimmediate AND i.indpred IS NULL
          AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
                WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) k)
          AND i.indnkeyatts = cardinality($2::text[])`,
      [task.quoted, keyNames],
    );
    return rows.length > 0;
  }

  private async sourceTypes(columns: ReadonlyArray<{ typeOid: number; typeMod: number }>): Promise<string[]> {
    const { rows } = await this.o.source.query<{ t: string }>(
      `SELECT format_type(o, m) AS t FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY AS x(o, m, i) ORDER BY i`,
      [columns.map((c) => c.typeOid), columns.map((c) => c.typeMod)],
    );
    return rows.map((r) => r.t);
  }

  private keyOf(rel: Relation, t: Tuple): string[] {
    return rel.keyIdx.map((i) => textOf(t[i]!) ?? '');
  }

  /** The identity a change names its row by, e.g. `id=5`. */
  private describe(rel: Relation, ident: Tuple): string {
    return rel.identIdx.map((i) => `${rel.columns[i]?.name ?? '?'}=${textOf(ident[i]) ?? ''}`).join(', ');
  }

  /**
   * The row's columns by name. An unchanged TOASTed value is not in the stream: it is the target
   * row's (`current`, read before this change is applied, so still the value it had), else
   * `previous`'s (an old tuple carries it only with REPLICA IDENTITY FULL).
   */
  private rowValues(
    rel: Relation,
    row: Tuple,
    previous: Tuple | null,
    current: Map<string, string | null> | null,
  ): Map<string, string | null> {
    const values = new Map<string, string | null>();
    row.forEach((v, i) => {
      const c = rel.columns[i];
      if (!c) return;
      if (v.kind !== 'unchanged') values.set(c.name, textOf(v));
      else values.set(c.name, current?.has(c.name) ? current.get(c.name)! : textOf(previous?.[i]));
    });
    return values;
  }

  /**
   * Uploads the row's document when it is new, changed, or moves to another name, and returns
   * the blob name for the kept column (null: no document; undefined: not a documents table).
   */
  private async document(
    rel: Relation,
    row: Tuple,
    previous: Tuple | null,
    prior: { name: string | null; values: Map<string, string | null> } | null,
  ): Promise<string | null | undefined> {
    const docs = this.o.documents;
    if (!docs || rel.contentIdx < 0) return undefined;
    const content = row[rel.contentIdx]!;
    if (content.kind === 'null') return null;
    const priorName = prior?.name ?? null;
    const values = this.rowValues(rel, row, previous, prior?.values ?? null);
    const name = docs.name(rel.task, values);
    if (content.kind === 'unchanged') {
      // Bytes unchanged: uploaded again (read from the source) under a new name, or when a column
      // its content type, metadata or tags come from changed (the blob's would be stale).
      const restated = name !== priorName || (prior !== null && docs.propertiesChanged(rel.task, prior.values, values));
      if (restated) await docs.upload(rel.task, values, name, null);
    } else {
      const bytes =
        rel.task.documents!.contentKind === 'bytea'
          ? { bytes: content.kind === 'long' ? blockHexToBytes(content.raw) : Buffer.from(content.text.slice(2), 'hex') }
          : { oid: textOf(content)! };
      await docs.upload(rel.task, values, name, bytes);
    }
    return name;
  }

  /**
   * A value as written: its text, or for a reverse documents column the named blob's bytes (as
   * bytes: never hex text). A blob that is gone because of a later change (the row deleted or
   * naming another blob since, as forward's superseded()) leaves the column empty: that change is
   * further on in the stream. A row that still names the missing blob is a real error.
   */
  private async valueOf(rel: Relation, c: ColumnMap, v: Value | undefined): Promise<Param> {
    const text = textOf(v);
    if (!c.fromBlob || text === null) return text;
    try {
      return await this.o.reverse!.readBlob(text);
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw err;
      const keep = quoteIdent(rel.task.documents!.plan.keepColumn);
      const named = await this.o.source.query(`SELECT 1 FROM ${rel.task.quoted} WHERE ${keep} = $1 LIMIT 1`, [text]);
      if (named.rows.length > 0) {
        throw new SyncStoppedError(
          `${rel.task.display}: blob "${text}", named by a row on the target, does not exist; reverse sync stopped`,
          'upload the document to that blob again (or correct the row), then run the rollback again: it resumes where it stopped',
        );
      }
      return Buffer.alloc(0);
    }
  }

  private async insert(rel: Relation, row: Tuple): Promise<void> {
    const name = await this.document(rel, row, null, null);
    if (typeof name === 'string') this.blobs?.take(name);
    const values: Param[] = [];
    for (let i = 0; i < row.length; i++) {
      const c = rel.columns[i];
      if (c) values.push(c.fromBlob ? await this.valueOf(rel, c, row[i]) : textOf(row[i]));
    }
    if (name !== undefined) values.push(name as string);
    const key = JSON.stringify(this.keyOf(rel, row));
    if (this.pending && (this.pending.rel !== rel || this.pending.keys.has(key))) await this.flushInserts();
    this.pending ??= { rel, rows: [], keys: new Set(), text: 0 };
    this.pending.rows.push(values);
    this.pending.text += values.reduce((n, v) => n + (v?.length ?? 0), 0);
    if (rel.keyIdx.length) this.pending.keys.add(key);
    this.stats.changes += 1;
    const limit = Math.min(MAX_ROWS_PER_INSERT, Math.floor(60_000 / Math.max(1, rel.insertWidth)));
    if (this.pending.rows.length >= limit || this.pending.text >= MAX_TEXT_PER_INSERT) await this.flushInserts();
  }

  private async flushInserts(): Promise<void> {
    const p = this.pending;
    if (!p || p.rows.length === 0) return;
    this.pending = null;
    const around = p.rel.insertValues;
    const params: Param[] = [];
    const tuples = p.rows.map((r) => {
      const start = params.length;
      params.push(...r);
      return `(${r.map((_, i) => `${around[i]![0]}$${start + i + 1}${around[i]![1]}`).join(', ')})`;
    });
    // Only where a change may be applied again (its row copied from a newer snapshot): otherwise
    // each insert is new, and a row already under its key is one the transaction moves on later
    // (a DEFERRED key two rows share for a moment), never to be deleted.
    const d = this.tolerating ? p.rel.deleteFirst : null;
    if (d) {
      const keys: Param[] = [];
      const rows = p.rows.map((r) => `(${d.keyAt.map((at, k) => `$${keys.push(r[at]!)}::${d.types[k]}`).join(', ')})`);
      const cols = d.keyAt.map((at) => p.rel.insertColumns[at]!).map(quoteIdent);
      await this.o.target.query(`DELETE FROM ${p.rel.task.quoted} WHERE (${cols.join(', ')}) IN (VALUES ${rows.join(', ')})`, keys);
    }
    await this.o.target.query(`${p.rel.insertPrefix}${tuples.join(', ')}${p.rel.insertSuffix}`, params);
  }

  /** `c1 = $n AND …` over the columns at `at` (the key by default) with the tuple's values. */
  private keyWhere(rel: Relation, t: Tuple, params: Param[], at: number[] = rel.keyIdx): string {
    return at
      .map((i) => {
        params.push(textOf(t[i]!));
        return `${quoteIdent(rel.columns[i]!.name)} = $${params.length}::${rel.columns[i]!.type}`;
      })
      .join(' AND ');
  }

  private where(rel: Relation, ident: Tuple, params: Param[]): string {
    if (rel.identIdx.length) return this.keyWhere(rel, ident, params, rel.identIdx);
    // REPLICA IDENTITY FULL without a key: the first row equal in every column.
    const conds = ident
      .map((v, i) => {
        const c = rel.columns[i];
        if (!c) return null;
        params.push(textOf(v));
        // By their text, as the target prints them: a type's equality is looser than sameness
        // (numeric 1.0 = 1.00, interval '1 day' = '24 hours', citext, box compares areas), and
        // some types have none at all (json, xml, point, a domain or composite over them).
        return `${quoteIdent(c.name)}::text IS NOT DISTINCT FROM ($${params.length}::${c.type})::text`;
      })
      .filter((x): x is string => x !== null);
    // With tableoid: in a partitioned table, a ctid names a row in each partition.
    return `(tableoid, ctid) = (SELECT tableoid, ctid FROM ${rel.task.quoted} WHERE ${conds.join(' AND ')} LIMIT 1)`;
  }

  /** A column's value in the target row `ident` names, as text (undefined: no such row). */
  private async targetText(rel: Relation, ident: Tuple, column: string): Promise<string | null | undefined> {
    const params: Param[] = [];
    const { rows } = await this.o.target.query<{ v: string | null }>(
      `SELECT ${printedText(column)} AS v FROM ${rel.task.quoted} WHERE ${this.where(rel, ident, params)}`,
      params,
    );
    return rows[0] === undefined ? undefined : rows[0].v;
  }

  private async update(rel: Relation, oldIdent: Tuple | null, row: Tuple): Promise<void> {
    const ident = oldIdent ?? row;
    const keep = rel.task.documents?.plan.keepColumn;
    let prior: { name: string | null; values: Map<string, string | null> } | null = null;
    if (keep && this.o.documents) {
      // The target row as it is before this change: its blob name, and the values of the columns
      // the templates use (those the stream left out, and those whose change may restate the blob).
      const templated = rel.templated;
      const p: Param[] = [];
      const { rows } = await this.o.target.query<Record<string, string | null>>(
        `SELECT ${quoteIdent(keep)} AS blob${templated.map((n, k) => `, ${printedText(n)} AS v${k}`).join('')}
           FROM ${rel.task.quoted} WHERE ${this.where(rel, ident, p)}`,
        p,
      );
      const r = rows[0];
      if (r) prior = { name: r.blob ?? null, values: new Map(templated.map((n, k) => [n, r[`v${k}`] ?? null])) };
    }
    const priorName = prior?.name ?? null;
    const name = await this.document(rel, row, oldIdent, prior);
    const params: Param[] = [];
    const sets: string[] = [];
    for (let i = 0; i < row.length; i++) {
      const c = rel.columns[i];
      const v = row[i]!;
      if (!c || v.kind === 'unchanged') continue;
      // An ALWAYS identity can be SET only to DEFAULT: left as it is, unless the change changed it
      // (told by the old row when the stream has it, else by the target's value: a column not in
      // the replica identity comes without its old value).
      if (rel.alwaysIdentity.has(c.name)) {
        // In the replica identity (a key), with no old row in the change: the identity did not change.
        if (oldIdent === null && rel.identIdx.includes(i)) continue;
        const before = oldIdent?.[i];
        const was = before?.kind === 'text' ? textOf(before) : await this.targetText(rel, ident, c.name);
        if (was === undefined || was === textOf(v)) continue;
        throw new SyncStoppedError(
          `${rel.task.display}: an UPDATE changed ${c.name}, a GENERATED ALWAYS identity column, which the target takes only as DEFAULT; live sync stopped`,
          `make ${c.name} GENERATED BY DEFAULT on the target (ALTER TABLE … ALTER COLUMN … SET GENERATED BY DEFAULT), then \`cloudshift run\` resumes the sync`,
        );
      }
      // Reverse: a document whose bytes are unchanged is neither downloaded nor written again (a
      // large object would be a new one each time, the last left behind): other columns changed.
      if (c.fromBlob && (await this.holds(rel, c, ident, v))) continue;
      params.push(c.fromBlob ? await this.valueOf(rel, c, v) : textOf(v));
      sets.push(`${quoteIdent(c.name)} = ${c.around[0]}$${params.length}${c.around[1]}`);
    }
    if (keep && name !== undefined) {
      params.push(name);
      sets.push(`${quoteIdent(keep)} = $${params.length}`);
    }
    this.stats.changes += 1;
    if (sets.length === 0) return;
    if (this.tolerating && oldIdent && rel.keyIdx.length) await this.clearNewKey(rel, oldIdent, row);
    const { rowCount } = await this.o.target.query(
      `UPDATE ${rel.task.quoted} SET ${sets.join(', ')} WHERE ${this.where(rel, ident, params)}`,
      params,
    );
    if (rowCount === 0) {
      // Gone under its old key in the newer copy, and not there under its new one (its range was
      // copied before): the whole row is in the change, which puts it there.
      if (this.tolerating && row.every((v) => v.kind !== 'unchanged')) {
        this.stats.changes -= 1;
        return this.insert(rel, row);
      }
      // Without the row's unchanged TOASTed values it cannot be put there: said, not passed over,
      // unless the row is gone from the source too (a later change removes or moves it).
      return this.diverged(rel, 'UPDATE', ident, this.tolerating && (await this.lost(rel, row)));
    }
    if (typeof name === 'string') this.blobs?.take(name);
    if (priorName !== null && priorName !== name) this.blobs?.release(priorName);
  }

  /**
   * Under a resumed copy's tolerance, an update found no row: it is lost only when the target has
   * no row under its new key (a newer copy would hold it) and the source still has one.
   */
  private async lost(rel: Relation, row: Tuple): Promise<boolean> {
    if (rel.keyIdx.length === 0) return true;
    const params: Param[] = [];
    const byKey = this.keyWhere(rel, row, params);
    const exists = async (client: pg.Client) =>
      (await client.query(`SELECT 1 FROM ${rel.task.quoted} WHERE ${byKey}`, params)).rows.length > 0;
    return !(await exists(this.o.target)) && (await exists(this.o.source));
  }

  /**
   * A key-changing UPDATE replayed over a resumed copy: the newer snapshot may hold the row under
   * its new key already (that range was copied after the change) while the old row is still here
   * (its range was copied before). The copy under the new key goes; the update makes it again.
   */
  private async clearNewKey(rel: Relation, oldIdent: Tuple, row: Tuple): Promise<void> {
    const params: Param[] = [];
    const newKey = this.keyWhere(rel, row, params);
    // Only while the old row is here: otherwise the row under the new key is the one this change
    // made (both ranges copied after it), or the key did not change at all (an identity that is
    // not the key changed), and it stays.
    const old = this.where(rel, oldIdent, params);
    await this.o.target.query(
      `DELETE FROM ${rel.task.quoted} WHERE ${newKey} AND NOT (${old})
          AND EXISTS (SELECT 1 FROM ${rel.task.quoted} WHERE ${old})`,
      params,
    );
  }

  /** The applied-to row's document column already holds the named blob's bytes (by their MD5). */
  private async holds(rel: Relation, c: ColumnMap, ident: Tuple, v: Value): Promise<boolean> {
    const name = textOf(v);
    const blob = name === null ? null : await this.o.reverse!.blobDigest(name);
    if (!blob) return false;
    const col = quoteIdent(c.name);
    const params: Param[] = [];
    const where = this.where(rel, ident, params);
    let current = `md5(${col})`;
    if (c.fromBlob === 'oid') {
      // Read only if it exists (an error would end the transaction), and one byte past the blob's at most.
      params.push(String(blob.size + 1));
      current = `CASE WHEN EXISTS (SELECT 1 FROM pg_largeobject_metadata m WHERE m.oid = ${col}) THEN md5(lo_get(${col}, 0, $${params.length}::int)) END`;
    }
    const { rows } = await this.o.target.query<{ md5: string | null }>(
      `SELECT ${current} AS md5 FROM ${rel.task.quoted} WHERE ${where}`,
      params,
    );
    return rows[0]?.md5 === blob.md5;
  }

  private async delete(rel: Relation, ident: Tuple): Promise<void> {
    const params: Param[] = [];
    // Forward only: the table applied to keeps blob names (in reverse it holds the bytes).
    const keep = this.o.documents ? rel.task.documents?.plan.keepColumn : undefined;
    // The row's key from the row itself: an identity other than the key leaves it out of the change.
    const keyCols = rel.keyIdx.map((i, k) => `${printedText(rel.columns[i]!.name)} AS k${k}`);
    const returning = keep ? ` RETURNING ${[`${quoteIdent(keep)} AS blob`, ...keyCols].join(', ')}` : '';
    const res = await this.o.target.query<Record<string, string | null>>(
      `DELETE FROM ${rel.task.quoted} WHERE ${this.where(rel, ident, params)}${returning}`,
      params,
    );
    this.stats.changes += 1;
    if (res.rowCount === 0) return this.diverged(rel, 'DELETE', ident);
    if (keep && this.o.documents) {
      for (const r of res.rows) {
        if (r.blob) this.blobs?.release(r.blob);
        await this.o.documents.forget(
          rel.task,
          rel.keyIdx.map((_, k) => r[`k${k}`] ?? ''),
        );
      }
    }
  }

  /**
   * Never CASCADE, as PostgreSQL's own apply does not: the message already lists every published
   * table the side it came from truncated (cascaded ones too), and on this side CASCADE would
   * also empty tables the plan does not migrate (on the source, at rollback). A table outside
   * the plan that references one of them makes the TRUNCATE fail, and the sync stops naming it.
   */
  private async truncate(rels: Relation[], restart: boolean): Promise<void> {
    if (rels.length === 0) return;
    await this.open();
    for (const rel of rels) {
      const keep = rel.task.documents?.plan.keepColumn;
      if (keep) await this.blobs?.truncate(rel.task.quoted, quoteIdent(keep));
    }
    // One TRUNCATE message covers several tables (foreign keys between them): one statement.
    try {
      await this.o.target.query(`TRUNCATE ${rels.map((r) => r.task.quoted).join(', ')}${restart ? ' RESTART IDENTITY' : ''}`);
    } catch (err) {
      const e = err as { code?: string; message?: string; detail?: string };
      if (e.code !== '0A000') throw err;
      throw new SyncStoppedError(
        `TRUNCATE of ${rels.map((r) => r.task.display).join(', ')} from the stream: ${e.message}${e.detail ? ` (${e.detail})` : ''}; live sync stopped`,
        'a table the plan does not migrate refers to them: drop its foreign key (or add the table to the plan), then `cloudshift run` resumes the sync',
      );
    }
    this.stats.changes += rels.length;
  }

  private async diverged(rel: Relation, operation: 'UPDATE' | 'DELETE', ident: Tuple, evenTolerating = false): Promise<void> {
    if (this.tolerating && !evenTolerating) return;
    this.stats.divergences += 1;
    await this.o.onDivergence({
      table: rel.task.display,
      operation,
      key: rel.identIdx.length ? this.describe(rel, ident) : '(whole row, no key)',
      lsn: this.txLsn,
    });
  }
}

/** A target column; its value is cast to its type, and a reverse large-object document becomes a new large object. */
function column(name: string, type: string, fromBlob: 'bytea' | 'oid' | false): ColumnMap {
  // A new large object's oid, cast to the column's type (oid, or a domain over it).
  const around = fromBlob === 'oid' ? (['lo_from_bytea(0, ', `::bytea)::${type}`] as const) : (['', `::${type}`] as const);
  return { name, type, around, ...(fromBlob ? { fromBlob } : {}) };
}

/** The columns of a relation its documents entry's templates read (name, content type, metadata, tags). */
function templatedIn(task: TableTask, columns: ReadonlyArray<ColumnMap | null>): string[] {
  const plan = task.documents?.plan;
  if (!plan) return [];
  const used = new Set(
    [plan.blob, plan.contentType, ...Object.values(plan.metadata), ...Object.values(plan.tags)].flatMap(templateColumns),
  );
  return columns.flatMap((c) => (c && used.has(c.name) ? [c.name] : []));
}

class LongValueError extends Error {}

function textOf(v: Value | undefined): string | null {
  if (v?.kind === 'text') return v.text;
  if (v?.kind !== 'long') return null;
  try {
    return v.raw.toString('utf8');
  } catch {
    throw new LongValueError(
      `a value of ${Math.round(v.raw.length / 1024 / 1024)} MB of text is longer than JavaScript can hold as one string`,
    );
  }
}

/** A table's schema and name as one key: "a.b"."c" and "a"."b.c" are two tables, not one "a.b.c". */
function relationKey(t: { schema: string; name: string }): string {
  return JSON.stringify([t.schema, t.name]);
}
