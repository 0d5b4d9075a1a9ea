/**
 * Read-only checks against the source: server settings for logical replication, blocking
 * transactions, and every table and documents entry of the plan.
 */
import type pg from 'pg';
import type { DocumentPlan, Plan, TablePlan } from '../plan/defaults.js';
import { displayName, quoteIdent, quoteQualified, type QualifiedName } from '../plan/names.js';
import {
  blobNameKey,
  contentKind,
  OID_REFERENCE_TYPES,
  batchKey,
  inheritanceProblem,
  introspectTable,
  placeholderProblems,
  relkindName,
  type TableInfo,
} from '../source/introspect.js';
import { formatBytes, formatCount } from './format.js';
import type { CheckList } from './types.js';
import { identityNothing, leafIdentities } from '../sync/replicaIdentity.js';

export interface SourceFacts {
  versionNum: number;
  version: string;
  extensions: string[];
  tables: Map<string, TableInfo>;
}

/** Why documents tables cannot come from a SQL_ASCII source, and what to do (the dry run's check and the run's refusal). */
export const SQL_ASCII_SOURCE = {
  message: 'the source database is SQL_ASCII (its text has no declared encoding), and documents tables and live sync read it as UTF-8',
  hint: 'convert the database to UTF8 first, or copy its tables as plain tables (no documents entry) without live sync',
};

/**
 * Live sync's fence, heartbeats and switch markers are logical decoding messages, which pgoutput
 * sends from PostgreSQL 14: an older source would fail only once the copy is done.
 */
export function liveSyncVersionProblem(versionNum: number): { message: string; hint: string } | null {
  if (versionNum >= 140000) return null;
  return {
    message: `the source runs PostgreSQL ${Math.floor(versionNum / 10000)}, and live sync needs 14 or later (its fence and heartbeats are logical decoding messages, which pgoutput sends from 14)`,
    hint: 'upgrade the source first, or migrate without live sync (sync: { mode: none }) in a maintenance window',
  };
}

/** Where a SQL_ASCII source's text would be read as UTF-8 (and bytes that are not would be replaced without a word). */
export function readsSourceText(plan: Plan): boolean {
  return plan.documents.length > 0 || plan.sync.mode === 'logical';
}

export async function checkSourceServer(client: pg.Client, plan: Plan, checks: CheckList, longTransactionMs: number): Promise<SourceFacts> {
  const { rows } = await client.query<{
    num: string;
    version: string;
    wal_level: string;
    slots: string;
    senders: string;
    used_slots: string;
    used_senders: string;
    can_replicate: boolean;
    encoding: string;
  }>(
    `SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS version,
            current_setting('wal_level') AS wal_level,
            current_setting('max_replication_slots') AS slots, current_setting('max_wal_senders') AS senders,
            (SELECT count(*) FROM pg_replication_slots)::text AS used_slots,
            (SELECT count(*) FROM pg_stat_replication)::text AS used_senders,
            (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS can_replicate,
            current_setting('server_encoding') AS encoding`,
  );
  const s = rows[0]!;
  const subject = 'source';
  checks.pass('source.connect', subject, `connected to PostgreSQL ${s.version}`);
  const versionNum = Number(s.num);

  if (plan.sync.mode === 'logical') {
    const old = liveSyncVersionProblem(versionNum);
    if (old) checks.fail('source.version', subject, `${old.message}: ${old.hint}`);
    if (s.wal_level === 'logical') checks.pass('source.wal_level', subject, 'wal_level is logical');
    else
      checks.fail(
        'source.wal_level',
        subject,
        `wal_level is ${s.wal_level}; live sync needs logical: ALTER SYSTEM SET wal_level = logical, then restart the server`,
      );

    const freeSlots = Number(s.slots) - Number(s.used_slots);
    if (freeSlots >= 2) checks.pass('source.replication_slots', subject, `${freeSlots} of ${s.slots} replication slots free`);
    else if (freeSlots === 1)
      checks.warn(
        'source.replication_slots',
        subject,
        `1 of ${s.slots} replication slots free: enough to start, but a copy resumed after a crash takes its newer snapshot from a second, temporary slot; raise max_replication_slots or drop an unused slot`,
      );
    else
      checks.fail(
        'source.replication_slots',
        subject,
        `no replication slot free (max_replication_slots = ${s.slots}, ${s.used_slots} in use): raise max_replication_slots or drop an unused slot`,
      );

    const freeSenders = Number(s.senders) - Number(s.used_senders);
    if (freeSenders >= 1) checks.pass('source.wal_senders', subject, `${freeSenders} of ${s.senders} WAL senders free`);
    else
      checks.fail(
        'source.wal_senders',
        subject,
        `no WAL sender free (max_wal_senders = ${s.senders}, ${s.used_senders} in use): raise max_wal_senders`,
      );

    if (s.can_replicate) checks.pass('source.replication_privilege', subject, 'the user has the REPLICATION privilege');
    else
      checks.fail(
        'source.replication_privilege',
        subject,
        'the user lacks the REPLICATION privilege that live sync needs: ALTER ROLE <user> REPLICATION',
      );

    await checkLongTransactions(client, checks, longTransactionMs);
  }

  // SQL_ASCII declares no encoding: the server passes its bytes on unconverted. A plain table's
  // rows go to the target as bytes (which refuses what is not UTF-8); a documents table's rows are
  // read as text to fill the templates, and live sync's changes come as text: there such bytes
  // would be replaced without a word.
  if (readsSourceText(plan) && s.encoding === 'SQL_ASCII')
    checks.fail('source.encoding', subject, `${SQL_ASCII_SOURCE.message}: ${SQL_ASCII_SOURCE.hint}`);

  const extensions = (
    await client.query<{ extname: string }>(`SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1`)
  ).rows.map((r) => r.extname);

  const tables = new Map<string, TableInfo>();
  for (const t of plan.tables) {
    const info = await checkTable(client, plan, t, s.encoding, checks);
    if (info) tables.set(displayName(t.name), info);
  }
  for (const d of plan.documents) {
    const key = displayName(d.table);
    const info = tables.get(key) ?? (await introspectTable(client, d.table));
    if (info && !tables.has(key)) {
      tables.set(key, info);
      // Published for live sync as any table: without an entry of its own, its key is checked here.
      if (info.kind !== 'other' && plan.sync.mode === 'logical') await checkKey(client, plan, undefined, info, key, checks);
      if (info.kind !== 'other') checkInheritance(info, key, checks);
    }
    checkDocuments(d, info, checks);
  }
  return { versionNum, version: s.version, extensions, tables };
}

async function checkLongTransactions(client: pg.Client, checks: CheckList, longTransactionMs: number): Promise<void> {
  const { rows } = await client.query<{
    pid: number;
    usename: string | null;
    datname: string | null;
    application_name: string;
    age: string;
    state: string | null;
  }>(
    `SELECT pid, usename, datname, application_name, state,
            to_char(clock_timestamp() - xact_start, 'HH24:MI:SS') AS age
       FROM pg_stat_activity
      WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
        AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)
        AND clock_timestamp() - xact_start > make_interval(secs => $1::float8 / 1000)
      ORDER BY xact_start`,
    [longTransactionMs],
  );
  if (rows.length === 0) {
    checks.pass('source.long_transactions', 'source', 'no long-running transaction would block creating the replication slot');
    return;
  }
  const list = rows
    .slice(0, 5)
    .map(
      (r) =>
        `pid ${r.pid} (user ${r.usename ?? '?'}, database ${r.datname ?? '?'}, application "${r.application_name}", open ${r.age}, ${r.state ?? 'unknown'})`,
    )
    .join('; ');
  checks.warn(
    'source.long_transactions',
    'source',
    `${rows.length} long-running transaction${rows.length === 1 ? '' : 's'} would block creating the replication slot: ${list}${rows.length > 5 ? '; …' : ''}. Let them finish or end them (SELECT pg_terminate_backend(pid)) before cloudshift run`,
  );
}

async function checkTable(client: pg.Client, plan: Plan, t: TablePlan, encoding: string, checks: CheckList): Promise<TableInfo | null> {
  const subject = displayName(t.name);
  const info = await introspectTable(client, t.name);
  if (!info) {
    checks.fail('table.exists', subject, `table ${subject} does not exist on the source (plan tables[${t.index}])`);
    return null;
  }
  if (info.kind === 'other') {
    checks.fail('table.exists', subject, `${subject} is ${relkindName(info.relkind)}, not a table (plan tables[${t.index}])`);
    return null;
  }
  if (!info.canSelect) {
    checks.fail(
      'table.exists',
      subject,
      `permission denied: the source user may not SELECT from ${subject}; GRANT SELECT ON ${subject} TO <user>`,
    );
    return info;
  }
  checks.pass(
    'table.exists',
    subject,
    `${info.kind === 'partitioned' ? 'partitioned table' : 'table'} exists, about ${info.estimatedRows === null ? '? (not analysed since it was loaded)' : formatCount(info.estimatedRows)} rows, ${formatBytes(info.bytes)}`,
  );
  checkInheritance(info, subject, checks);
  await checkKey(client, plan, t, info, subject, checks);
  await checkKeyOrder(client, t, info, subject, checks);
  if (encoding !== 'UTF8' && encoding !== 'SQL_ASCII') checkKeyEncoding(info, encoding, subject, checks);
  checkTypes(
    info,
    subject,
    checks,
    plan.documents.filter((d) => displayName(d.table) === subject).map((d) => d.content),
  );

  const generated = info.columns.filter((c) => c.generated).map((c) => c.name);
  if (generated.length > 0)
    checks.pass(
      'table.generated',
      subject,
      `generated column${generated.length === 1 ? '' : 's'} ${generated.join(', ')}: not copied, computed by the target`,
    );
  if (info.kind === 'partitioned')
    checks.pass(
      'table.partitions',
      subject,
      `partitioned into ${info.partitionCount} partitions: copied partition by partition into the same layout`,
    );
  if (info.isPartition) checks.warn('table.partitions', subject, `${subject} is a partition; consider naming its parent table instead`);
  return info;
}

/** A parent of table inheritance cannot be copied (see inheritanceProblem); a child is, standing alone. */
function checkInheritance(info: TableInfo, subject: string, checks: CheckList): void {
  const problem = inheritanceProblem(info, subject);
  if (problem) checks.fail('table.inheritance', subject, `${problem.message}: ${problem.hint}`);
  else if (info.inherits.length > 0)
    checks.warn(
      'table.inheritance',
      subject,
      `${subject} inherits from ${info.inherits.join(', ')}: it is copied as a standalone table (on the target it inherits from nothing)`,
    );
}

/**
 * Collation "C" orders text byte by byte, in each server's encoding: a source in another encoding
 * than the target's UTF-8 orders keys with non-ASCII characters differently, so such a row can
 * fall in one batch's range on the source and another's on the target. Said before the copy.
 */
function checkKeyEncoding(info: TableInfo, encoding: string, subject: string, checks: CheckList): void {
  const texts = (batchKey(info)?.columns ?? []).filter((name) => info.columns.find((c) => c.name === name)?.collatable);
  if (texts.length === 0) return;
  checks.warn(
    'table.key_encoding',
    subject,
    `the source database is ${encoding} and the target UTF-8: key column${texts.length === 1 ? '' : 's'} ${texts.join(', ')} order${texts.length === 1 ? 's' : ''} byte by byte differently on the two where a value holds a non-ASCII character, and a batch holding such a key verifies as different (its rows are copied all the same); keys of plain ASCII are not affected`,
  );
}

/**
 * Batches compare and sort a text key in collation "C", the one order both servers agree on
 * whatever their locales. An index in another collation cannot serve that: each batch of a table
 * split into several reads all of it. Said before the copy, with the index that would serve.
 */
async function checkKeyOrder(client: pg.Client, t: TablePlan, info: TableInfo, subject: string, checks: CheckList): Promise<void> {
  const key = batchKey(info);
  if (!key || (info.estimatedRows !== null && info.estimatedRows <= t.batchRows)) return;
  const { rows } = await client.query<{ column: string; collation: string }>(
    `SELECT a.attname AS column, co.collname AS collation
       FROM pg_index i
       JOIN pg_class ic ON ic.oid = i.indexrelid
       CROSS JOIN LATERAL unnest(i.indkey::int2[], i.indcollation::oid[]) AS k(attnum, coll)
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
       JOIN pg_collation co ON co.oid = k.coll
      WHERE i.indrelid = $1 AND ic.relname = $2 AND co.collname NOT IN ('C', 'POSIX')`,
    [info.oid, key.name],
  );
  if (rows.length === 0) return;
  const columns = key.columns.map((c) => (rows.some((r) => r.column === c) ? `${quoteIdent(c)} COLLATE "C"` : quoteIdent(c)));
  checks.warn(
    'table.key_order',
    subject,
    `batches compare the key in collation "C" (the same order on both servers), and index ${key.name} orders ${rows.map((r) => `${r.column} by ${r.collation}`).join(', ')}: each batch would read the whole table; first CREATE UNIQUE INDEX CONCURRENTLY ON ${quoteQualified(t.name)} (${columns.join(', ')})`,
  );
}

/**
 * The key batches and live sync use. `t` is the table's entry (undefined for a documents table
 * without one): its replicaIdentity is what `cloudshift run` sets on the source before
 * publishing a table that has no primary key.
 */
async function checkKey(
  client: pg.Client,
  plan: Plan,
  t: TablePlan | undefined,
  info: TableInfo,
  subject: string,
  checks: CheckList,
): Promise<void> {
  const usableUnique = info.uniqueKeys.find((k) => !k.primary && k.usableAsIdentity);
  const pk = info.uniqueKeys.find((k) => k.primary);
  // A primary key whose table (or a partition of it) was set to REPLICA IDENTITY NOTHING.
  const nothing =
    plan.sync.mode === 'logical'
      ? identityNothing(info, subject, info.kind === 'partitioned' ? await leafIdentities(client, info.oid) : [])
      : [];
  if (nothing.length > 0 && t?.replicaIdentity === 'index' && info.kind === 'partitioned') {
    checks.fail(
      'table.key',
      subject,
      `REPLICA IDENTITY NOTHING on ${nothing.join(', ')}, and the table is partitioned: replicaIdentity: index would have to name an index of each partition (tables[${t.index}]); use full, or ALTER TABLE … REPLICA IDENTITY DEFAULT on ${nothing.length === 1 ? 'it' : 'each'}`,
    );
    return;
  }
  if (nothing.length > 0 && !t?.replicaIdentity) {
    checks.fail(
      'table.key',
      subject,
      `primary key (${info.primaryKey!.join(', ')}), but REPLICA IDENTITY NOTHING on ${nothing.join(', ')}: with live sync, UPDATE and DELETE on it would fail on the source. Fix: ALTER TABLE … REPLICA IDENTITY DEFAULT on ${nothing.length === 1 ? 'it' : 'each'}; or set replicaIdentity (full | index | insert-only) on ${t ? `tables[${t.index}]` : `a tables entry for ${subject}`}`,
    );
    return;
  }
  // A DEFERRABLE primary key still cuts batches, but is no replica identity for live sync.
  if (info.primaryKey && (pk?.usableAsIdentity || plan.sync.mode !== 'logical')) {
    checks.pass('table.key', subject, `primary key (${info.primaryKey.join(', ')})`);
    return;
  }
  const copyNote = info.primaryKey
    ? `its primary key is DEFERRABLE, which cuts batches but is no replica identity`
    : usableUnique
      ? `batches use unique index ${usableUnique.name}`
      : 'copied by ctid ranges';
  if (plan.sync.mode !== 'logical') {
    checks.warn('table.key', subject, `no primary key: ${copyNote}; live sync would need a key or REPLICA IDENTITY FULL`);
    return;
  }
  if (info.replicaIdentity === 'f' || t?.replicaIdentity === 'full') {
    const by = info.replicaIdentity === 'f' ? 'uses' : 'run sets';
    checks.warn(
      'table.key',
      subject,
      `no primary key: ${copyNote}; live sync ${by} REPLICA IDENTITY FULL on the source (every column identifies a row; slower updates)`,
    );
  } else if (info.replicaIdentity === 'i' || (t?.replicaIdentity === 'index' && usableUnique)) {
    const by =
      info.replicaIdentity === 'i'
        ? 'a unique index'
        : `unique index ${usableUnique!.name} (run sets it as REPLICA IDENTITY on the source)`;
    checks.pass('table.key', subject, `no primary key: ${copyNote}; live sync identifies rows by ${by}`);
  } else if (t?.replicaIdentity === 'insert-only') {
    checks.warn(
      'table.key',
      subject,
      `no primary key: ${copyNote}; declared insert-only, so an UPDATE or DELETE on the source would fail while the publication exists`,
    );
  } else {
    const fix = usableUnique
      ? `ALTER TABLE ${subject} REPLICA IDENTITY USING INDEX ${usableUnique.name}, or add a primary key`
      : `ALTER TABLE ${subject} ADD PRIMARY KEY (...), or ALTER TABLE ${subject} REPLICA IDENTITY FULL`;
    checks.fail(
      'table.key',
      subject,
      `no primary key or replica identity: with live sync, UPDATE and DELETE on this table would fail on the source. Fix: ${fix}; or set replicaIdentity (full | index | insert-only) on ${t ? `tables[${t.index}]` : `a tables entry for ${subject}`}`,
    );
  }
}

function checkTypes(info: TableInfo, subject: string, checks: CheckList, documentColumns: string[]): void {
  const unsupported = info.columns.filter((c) => OID_REFERENCE_TYPES.has(c.typeName.replace(/^_/, '')));
  if (unsupported.length > 0) {
    checks.fail(
      'table.types',
      subject,
      `unsupported column type${unsupported.length === 1 ? '' : 's'}: ${unsupported.map((c) => `${c.name} ${c.type}`).join(', ')} (values are OIDs of catalog objects that differ on the target); cast the column to text before migrating`,
    );
    return;
  }
  const oidColumns = info.columns.filter((c) => c.typeName === 'oid' && !documentColumns.includes(c.name));
  if (oidColumns.length > 0) {
    checks.warn(
      'table.types',
      subject,
      `column${oidColumns.length === 1 ? '' : 's'} ${oidColumns.map((c) => c.name).join(', ')} of type oid: copied as numbers; if they reference large objects, list them under documents`,
    );
    return;
  }
  checks.pass('table.types', subject, `all ${info.columns.length} column types can be copied`);
}

export function checkDocuments(d: DocumentPlan, info: TableInfo | null, checks: CheckList): void {
  const subject = `${displayName(d.table)}.${d.content}`;
  const where = `documents[${d.index}]`;
  if (!info || info.kind === 'other') {
    checks.fail('documents.table', subject, `table ${displayName(d.table)} does not exist on the source (${where}.table)`);
    return;
  }
  const byName = new Map(info.columns.map((c) => [c.name, c]));
  const content = byName.get(d.content);
  if (!content)
    checks.fail('documents.content', subject, `column "${d.content}" does not exist in ${displayName(d.table)} (${where}.content)`);
  else if (contentKind(content) === null) {
    checks.fail(
      'documents.content',
      subject,
      `column "${d.content}" is ${content.type}; a documents column must be bytea or oid (a large object) (${where}.content)`,
    );
  } else
    checks.pass('documents.content', subject, `content column is ${contentKind(content) === 'oid' ? 'a large object (oid)' : 'bytea'}`);

  const problems = placeholderProblems(d, info);
  if (problems.length > 0) checks.fail('documents.placeholders', subject, problems.join('; '));
  else checks.pass('documents.placeholders', subject, 'every template placeholder is a column');

  if (byName.has(d.keepColumn)) {
    checks.fail(
      'documents.keep_column',
      subject,
      `keep.column "${d.keepColumn}" already exists in ${displayName(d.table)}; choose a new column name (${where}.keep.column)`,
    );
  }

  const names = blobNameKey(d, info);
  if ('problem' in names) checks.fail('documents.unique_names', subject, names.problem);
  else {
    const k = names.key;
    checks.pass(
      'documents.unique_names',
      subject,
      `blob names are unique: the template includes ${k.primary ? 'the primary key' : `unique key ${k.name}`} (${k.columns.join(', ')})`,
    );
  }
}

export function subjectOf(name: QualifiedName): string {
  return displayName(name);
}
