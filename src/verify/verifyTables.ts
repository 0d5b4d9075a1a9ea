/**
 * `cloudshift verify`: compares source and target over key ranges with checksums (session
 * settings pinned on both sides), pinpoints differing rows by bisection, and with `repair`
 * re-copies exactly those rows and checks the range again. Without `repair` nothing is written
 * to the migrated tables. Results go to the state store's event log.
 */
import { requireRunDatabases } from '../engine/runDatabases.js';
import PQueue from 'p-queue';
import { UsageError } from '../errors.js';
import { displayName, parseQualifiedName } from '../plan/names.js';
import type { LoadedPlan } from '../plan/parse.js';
import { resolveSecrets, type Env } from '../plan/secrets.js';
import { connect } from '../pg/connect.js';
import { PairPool } from '../pg/pairPool.js';
import { splitTable } from '../source/splitTable.js';
import { digestRange } from '../engine/copyBatch.js';
import { tableTasks } from '../engine/planBatches.js';
import type { TableTask } from '../engine/tableTask.js';
import { clearTableMismatches } from '../state/sql/batchStatus.js';
import { StateStore } from '../state/store.js';
import { findDifferences, rangeDigests, type Difference, type KeyRange } from './differences.js';
import { repairRows, repairWhole } from './repair.js';
import { settleDivergences, syncRow } from '../state/sql/sync.js';
import { verifyDocuments, type DocumentFinding } from './verifyDocuments.js';
import { createContainerClient } from '../target/blob/client.js';
import { digestEquals } from './rowDigest.js';

export interface VerifyOptions {
  env: Env;
  /** Only these tables (schema.table). */
  tables?: string[];
  /** Check this percentage of each table's ranges, chosen at random. */
  samplePercent?: number;
  repair?: boolean;
  jobs?: number;
  /** Stop pinpointing a table (or a documents entry) after this many differing rows (or documents). */
  maxFindings?: number;
  /** Documents: source rows read at a time. */
  documentChunkRows?: number;
  /** One in this many matching documents has a range of its bytes read back (tests: 1). */
  documentSampleEvery?: number;
  /** Told before each table is checked (awaited). */
  onProgress?(message: string): void | Promise<void>;
}

export interface Finding {
  table: string;
  kind: 'missing' | 'extra' | 'different' | 'table' | DocumentFinding['kind'];
  /** Primary key values by column; empty for a keyless table's whole-table finding or an extra blob. */
  key: Record<string, string>;
  /** The blob concerned, for documents findings. */
  blob?: string;
  repaired: boolean;
}

export interface TableVerification {
  table: string;
  ranges: number;
  rangesChecked: number;
  rows: number;
  matched: boolean;
  differences: number;
  repaired: number;
  /** Documents checked in Blob Storage (documents tables only). */
  documents?: number;
}

export interface VerifyResult {
  ok: boolean;
  tables: TableVerification[];
  findings: Finding[];
  sampled: boolean;
}

export async function verifyPlan(loaded: LoadedPlan, options: VerifyOptions): Promise<VerifyResult> {
  const { plan } = loaded;
  const secrets = resolveSecrets(loaded, options.env, ['source', 'target', 'state', 'blobConnectionString', 'blobSas']);
  // Before its own connections: the check's are short-lived and none is open alongside them.
  const divergencesBefore = await beforeVerify(loaded, secrets);
  const source = await connect({ role: 'source', connectionString: secrets.source });
  let tasks: TableTask[];
  try {
    tasks = await tableTasks(source, plan);
    if (options.tables?.length) {
      const wanted = options.tables.map((t) => displayName(parseQualifiedName(t)));
      const unknown = wanted.filter((w) => !tasks.some((t) => t.display === w));
      if (unknown.length)
        throw new UsageError(`--table ${unknown.join(', ')}: not a table of the plan (${tasks.map((t) => t.display).join(', ')})`);
      tasks = tasks.filter((t) => wanted.includes(t.display));
    }
  } finally {
    await source.end();
  }
  const pool = new PairPool(options.jobs ?? plan.copy.jobs, { source: secrets.source, target: secrets.target }, 'cloudshift verify', [
    ['max_parallel_workers_per_gather', '0'],
  ]);
  const findings: Finding[] = [];
  const tables: TableVerification[] = [];
  try {
    const blob = plan.target.blob;
    const container = blob ? createContainerClient(blob, { connectionString: secrets.blobConnectionString, sas: secrets.blobSas }) : null;
    for (const task of tasks) {
      await options.onProgress?.(`verifying ${task.display}`);
      const table = await verifyTable(pool, task, options, findings, plan.sync.mode === 'logical');
      if (task.documents && container) {
        const docs = await pool.use((sides) =>
          verifyDocuments(sides, container, task, {
            repair: options.repair === true,
            // Each entry tells its own blobs by its template (validation keeps entries' names apart),
            // with --table too; a sample sees too few rows to call a blob no row names extra.
            checkExtras: options.samplePercent === undefined,
            maxFindings: options.maxFindings ?? 1000,
            ...(options.documentChunkRows ? { chunkRows: options.documentChunkRows } : {}),
            ...(options.documentSampleEvery ? { sampleEvery: options.documentSampleEvery } : {}),
          }),
        );
        for (const f of docs.findings) {
          findings.push({
            table: task.display,
            kind: f.kind,
            key: Object.fromEntries(task.shape.keyColumns!.map((k, i) => [k.name, f.key[i]!]).filter(([, v]) => v !== undefined)),
            blob: f.blob,
            repaired: f.repaired,
          });
        }
        table.documents = docs.documents;
        table.differences += docs.findings.length;
        table.repaired += docs.findings.filter((f) => f.repaired).length;
        if (!docs.complete || docs.findings.some((f) => !f.repaired)) table.matched = false;
      }
      tables.push(table);
    }
  } finally {
    await pool.close();
  }
  const order = new Map(tables.map((t, i) => [t.table, i]));
  findings.sort((a, b) => order.get(a.table)! - order.get(b.table)! || compareKeys(Object.values(a.key), Object.values(b.key)));
  const result: VerifyResult = { ok: tables.every((t) => t.matched), tables, findings, sampled: options.samplePercent !== undefined };
  await record(loaded, secrets.state, result, !options.tables?.length ? divergencesBefore : null);
  return result;
}

async function verifyTable(
  pool: PairPool,
  task: TableTask,
  options: VerifyOptions,
  findings: Finding[],
  live: boolean,
): Promise<TableVerification> {
  const limit = options.maxFindings ?? 1000;
  if (!task.shape.keyColumns) return verifyKeyless(pool, task, findings, options.repair === true && !live);
  const all = await pool.use(({ source }) => splitTable(source, task.name, task.shape, task.batchRows));
  const ranges = sample(all as Array<KeyRange & { kind: 'key' }>, options.samplePercent);
  // As many ranges at once as the pool has session pairs (--jobs, or the plan's copy.jobs).
  const queue = new PQueue({ concurrency: pool.size });
  let rows = 0;
  let differences = 0;
  let repaired = 0;
  let stillDifferent = false;
  await Promise.all(
    ranges.map((range) =>
      queue.add(() =>
        pool.use(async (sides) => {
          const d = await rangeDigests(sides, task, range);
          rows += d.source.rows;
          if (d.equal) return;
          // At most `limit` rows are named per table (a target missing a table of 100M rows is one
          // finding's worth of news, not 100M): past that a differing range is not bisected.
          const room = () => Math.max(0, limit - differences);
          if (room() === 0) {
            stillDifferent = true;
            return;
          }
          const bisected = await findDifferences(sides, task, range, { source: d.source.rows, target: d.target.rows }, room());
          const found = bisected.slice(0, room()); // other ranges may have filled the room meanwhile
          differences += found.length;
          let fixed = false;
          if (options.repair && found.length > 0) {
            await repairRows(sides, task, found);
            fixed = (await rangeDigests(sides, task, range)).equal;
            if (fixed) repaired += found.length;
          }
          if (!fixed) stillDifferent = true;
          findings.push(...found.map((f) => finding(task, f, fixed)));
        }),
      ),
    ),
  );
  return { table: task.display, ranges: all.length, rangesChecked: ranges.length, rows, matched: !stillDifferent, differences, repaired };
}

/**
 * A table without a key is compared whole. With `repair` (never under live sync, whose stream
 * would replay changes over the new copy) it is copied again whole, then compared again.
 */
async function verifyKeyless(pool: PairPool, task: TableTask, findings: Finding[], repair: boolean): Promise<TableVerification> {
  const digests = () =>
    pool.use((sides) => Promise.all([digestRange(sides.source, task, null, task.where), digestRange(sides.target, task, null)]));
  let [s, t] = await digests();
  const differed = !digestEquals(s, t);
  if (differed && repair) {
    await pool.use((sides) => repairWhole(sides, task));
    [s, t] = await digests();
  }
  const matched = digestEquals(s, t);
  if (differed) findings.push({ table: task.display, kind: 'table', key: {}, repaired: matched });
  const repaired = differed && matched ? 1 : 0;
  return { table: task.display, ranges: 1, rangesChecked: 1, rows: s.rows, matched, differences: differed ? 1 : 0, repaired };
}

function finding(task: TableTask, d: Difference, repaired: boolean): Finding {
  const key = Object.fromEntries(task.shape.keyColumns!.map((k, i) => [k.name, d.key[i]!]));
  return { table: task.display, kind: d.kind, key, repaired };
}

function sample<T>(ranges: T[], percent: number | undefined): T[] {
  if (percent === undefined || percent >= 100) return ranges;
  const n = Math.max(1, Math.ceil((ranges.length * percent) / 100));
  const shuffled = [...ranges];
  for (let i = shuffled.length - 1; i > 0; i -= 1) {
    const j = Math.floor(Math.random() * (i + 1));
    [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
  }
  return shuffled.slice(0, n);
}

/**
 * Before a verification: one (above all a repair) against other databases than the plan's run
 * began on says nothing of that run, or makes its target match the wrong source: refused (exit
 * 4). Nothing is checked without an active run, or when it has no record. Returns the sync's
 * divergences counted so far (the most a verification of every table can settle).
 */
async function beforeVerify(loaded: LoadedPlan, secrets: { source: string; target: string; state: string }): Promise<number> {
  const store = await StateStore.open({ connectionString: secrets.state, schema: loaded.plan.state.schema });
  try {
    if (!(await store.inspect()).exists) return 0;
    // An active run only: one that ended (a rehearsal cleaned up) says nothing of where the plan points now.
    const run = await store.getActiveRun(loaded.plan.name);
    if (!run) return 0;
    await requireRunDatabases(store, run, secrets);
    return (await syncRow(store.knex, run.id))?.divergences ?? 0;
  } finally {
    await store.close();
  }
}

/**
 * Stores the result in the event log; a table now fully matching clears its mismatched batches,
 * and a full verify finding everything matching settles the sync's divergences counted before it
 * began (`divergences`; null when not every table was checked). One counted while it ran may be
 * in a table it had checked already: that one stays.
 */
async function record(loaded: LoadedPlan, stateUrl: string, result: VerifyResult, divergences: number | null): Promise<void> {
  const store = await StateStore.open({ connectionString: stateUrl, schema: loaded.plan.state.schema });
  try {
    const status = await store.inspect();
    if (!status.exists) return;
    const run = (await store.getActiveRun(loaded.plan.name)) ?? (await store.getLatestRun(loaded.plan.name));
    if (!run) return;
    const differing = result.findings.filter((f) => !f.repaired).length;
    await store.appendEvent(
      run.id,
      'verify:result',
      `verify${result.sampled ? ' (sample)' : ''}: ${result.ok ? 'all tables match' : `${differing} differences remain`}; ${result.findings.filter((f) => f.repaired).length} rows repaired`,
      { tables: result.tables, findings: result.findings.slice(0, 1000) },
    );
    if (!result.sampled) {
      for (const t of result.tables.filter((x) => x.matched)) await clearTableMismatches(store.db, store.schema, run.id, t.table);
      // Only a check of every table clears the sync's divergences (the cutover's gate).
      if (result.ok && divergences !== null) await settleDivergences(store.knex, run.id, divergences);
    }
  } finally {
    await store.close();
  }
}

function compareKeys(a: string[], b: string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i += 1) {
    const c = a[i]!.localeCompare(b[i]!, 'en', { numeric: true });
    if (c !== 0) return c;
  }
  return a.length - b.length;
}
