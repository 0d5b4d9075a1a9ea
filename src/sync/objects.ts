/**
 * Slots and publications: created, found, measured and dropped. Each is recorded in the state
 * store before it is created ('creating') and after ('created'), so nothing cloudshift makes can
 * be forgotten: `cleanup`, abort and rollback drop every recorded object that still exists.
 */
import type { Side } from '../pg/identity.js';
import type pg from 'pg';
import { PreconditionError } from '../errors.js';
import { quoteIdent, quoteQualified, type QualifiedName } from '../plan/names.js';
import { serverVersion } from '../pg/connect.js';
import { parseLsn, type Lsn } from './lsn.js';

export type { Side };
export type Direction = 'forward' | 'reverse';

export interface ReplicationObject {
  side: Side;
  kind: 'slot' | 'publication' | 'origin' | 'write-fence';
  name: string;
  direction: Direction;
}

/** Where objects are recorded (the state store). */
export interface ObjectLedger {
  record(obj: ReplicationObject, status: 'creating' | 'created' | 'dropped'): Promise<void>;
}

export async function ensurePublication(
  client: pg.Client,
  ledger: ObjectLedger,
  obj: ReplicationObject,
  tables: readonly QualifiedName[],
): Promise<void> {
  const list = tables.map(quoteQualified).join(', ');
  await ledger.record(obj, 'creating');
  const { rows } = await client.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [obj.name]);
  // A partitioned table's changes are published as the plan's table, not as the partition a row
  // is in (which the plan does not name); the option is PostgreSQL 13's.
  const version = await serverVersion(client);
  const viaRoot = version >= 130000 ? ' (publish_via_partition_root = true)' : '';
  const name = quoteIdent(obj.name);
  if (rows.length > 0) {
    await client.query(`ALTER PUBLICATION ${name} SET TABLE ${list}`);
    if (viaRoot) await client.query(`ALTER PUBLICATION ${name} SET${viaRoot}`);
  } else await client.query(`CREATE PUBLICATION ${name} FOR TABLE ${list}${viaRoot ? ` WITH${viaRoot}` : ''}`);
  await ledger.record(obj, 'created');
}

/**
 * The tables (quoted names) that are not in the publication as they are now: dropped, or dropped
 * and created again, or swapped in by a rename. A publication holds tables by oid, and a table
 * that is not in it sends no changes and no word of them.
 */
export async function unpublishedTables(client: pg.Client, publication: string, tables: readonly string[]): Promise<string[]> {
  const { rows } = await client.query<{ name: string }>(
    `SELECT t.name FROM unnest($2::text[]) WITH ORDINALITY AS t(name, i)
      WHERE to_regclass(t.name) IS NULL
         OR NOT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                         WHERE p.pubname = $1 AND pr.prrelid = to_regclass(t.name))
      ORDER BY t.i`,
    [publication, tables],
  );
  return rows.map((r) => r.name);
}

/** Changes a look into a slot decodes at most (each transaction's BEGIN and COMMIT count too). */
const PEEK_CHANGES = 100_000;

/**
 * Whether a slot holds a row change (INSERT, UPDATE, DELETE or TRUNCATE of its publication's
 * tables), read without consuming it; false when the slot is gone. Bounded to the first
 * PEEK_CHANGES messages from PostgreSQL 15, which sends no empty transactions; before it, every
 * transaction is a BEGIN and a COMMIT, so all are read. Nothing may stream from the slot meanwhile.
 */
export async function slotHasChanges(client: pg.Client, slot: string, publication: string): Promise<boolean> {
  if (!(await slotState(client, slot)).exists) return false;
  const version = await serverVersion(client);
  // pgoutput's message types: I, U, D, T.
  const { rows } = await client.query<{ found: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_logical_slot_peek_binary_changes($1, NULL, $3, 'proto_version', '1', 'publication_names', $2)
                     WHERE get_byte(data, 0) IN (73, 85, 68, 84)) AS found`,
    [slot, quoteIdent(publication), version >= 150000 ? PEEK_CHANGES : null],
  );
  return rows[0]!.found;
}

export interface SlotState {
  exists: boolean;
  /** Held by a walsender right now (another process streams from it). */
  activePid: number | null;
  walStatus: string | null;
  confirmedFlush: Lsn | null;
  /** WAL the source keeps for this slot, bytes. */
  retainedBytes: number | null;
}

/** The slot a run streams from is gone, and the changes since the copy began went with it. */
export function slotGone(slot: string, side: string): PreconditionError {
  return new PreconditionError(`replication slot "${slot}" does not exist on the ${side} database`, {
    hint: 'the changes since the copy began are lost: start a fresh copy (`cloudshift rollback --drop-target`, then `cloudshift run`)',
  });
}

export async function slotState(client: pg.Client, slot: string): Promise<SlotState> {
  const { rows } = await client.query<{
    active_pid: number | null;
    wal_status: string | null;
    confirmed_flush_lsn: string | null;
    retained: string | null;
  }>(
    `SELECT active_pid, wal_status, confirmed_flush_lsn::text,
            pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text AS retained
       FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  const r = rows[0];
  if (!r) return { exists: false, activePid: null, walStatus: null, confirmedFlush: null, retainedBytes: null };
  return {
    exists: true,
    activePid: r.active_pid,
    walStatus: r.wal_status,
    confirmedFlush: r.confirmed_flush_lsn ? parseLsn(r.confirmed_flush_lsn) : null,
    retainedBytes: r.retained === null ? null : Number(r.retained),
  };
}

/**
 * What a slot holds on its server now, null when it does not exist: the WAL it retains, and how
 * far the server is past its confirmed position (what a sync would have to catch up).
 */
export async function slotBacklog(
  client: pg.Client,
  slot: string,
): Promise<{ retainedBytes: number | null; behindBytes: number | null } | null> {
  const st = await slotState(client, slot);
  if (!st.exists) return null;
  const now = await currentWalLsn(client);
  const behindBytes = st.confirmedFlush === null ? null : Number(now > st.confirmedFlush ? now - st.confirmedFlush : 0n);
  return { retainedBytes: st.retainedBytes, behindBytes };
}

/** Drops an object if it exists; a slot held by a walsender is released first. */
export async function dropObject(client: pg.Client, ledger: ObjectLedger, obj: ReplicationObject): Promise<boolean> {
  let dropped = false;
  if (obj.kind === 'slot') {
    const s = await slotState(client, obj.name);
    if (s.exists) {
      if (s.activePid !== null) await client.query(`SELECT pg_terminate_backend($1)`, [s.activePid]);
      await waitInactive(client, obj.name);
      // A slot still being made when its backend ended vanishes by itself.
      const { rows } = await client.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [
        obj.name,
      ]);
      dropped = rows.length > 0;
    }
  } else if (obj.kind === 'publication') {
    const { rows } = await client.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [obj.name]);
    if (rows.length > 0) {
      await client.query(`DROP PUBLICATION ${quoteIdent(obj.name)}`);
      dropped = true;
    }
  } else if (obj.kind === 'origin') {
    const { rows } = await client.query(`SELECT 1 FROM pg_replication_origin WHERE roname = $1`, [obj.name]);
    if (rows.length > 0) {
      await client.query(`SELECT pg_replication_origin_drop($1)`, [obj.name]);
      dropped = true;
    }
  }
  await ledger.record(obj, 'dropped');
  return dropped;
}

async function waitInactive(client: pg.Client, slot: string): Promise<void> {
  // A terminated walsender releases its slot as it exits: a few milliseconds.
  for (let i = 0; i < 200; i++) {
    const { rows } = await client.query<{ active: boolean }>(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
    if (!rows[0]?.active) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`replication slot "${slot}" is still held by a walsender after 5 s`);
}

/**
 * The oldest transaction id (xid8, as text) still running on the source: any write from it on may
 * be newer than what was copied. Large-object documents are reconciled from there (their writes
 * are not in the WAL stream).
 */
export async function takeHorizon(source: pg.Client): Promise<string> {
  const { rows } = await source.query<{ x: string }>(`SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS x`);
  return rows[0]!.x;
}

/**
 * Writes a non-transactional logical message (heartbeat, cutover fence) and returns its position,
 * flushed: a walsender only sends flushed WAL, and such a message forces no flush of its own (a
 * `flush` argument exists from PostgreSQL 17 only), so it could wait for the WAL writer or the
 * next commit (hundreds of ms inside a cutover pause). The same statement takes a transaction id,
 * so its commit flushes the WAL up to the message: the session must run with FLUSH_SETTINGS.
 */
export const FLUSH_SETTINGS: ReadonlyArray<readonly [string, string]> = [['synchronous_commit', 'on']];

export async function emitMessage(client: pg.Client, prefix: string, body: unknown): Promise<Lsn> {
  const { rows } = await client.query<{ lsn: string }>(
    `SELECT pg_logical_emit_message(false, $1, $2)::text AS lsn, pg_current_xact_id()::text AS xid`,
    [prefix, JSON.stringify(body)],
  );
  return parseLsn(rows[0]!.lsn);
}

/** Said once a slot retains more WAL than sync.warnRetainedWalBytes, with what to do about it. */
export function retainedWalWarning(bytes: number, slot: string, threshold: number, advice: string): string {
  const mb = (n: number) => Math.round(n / 1048576);
  return `the source retains ${mb(bytes)} MB of WAL for slot "${slot}" (warning threshold ${mb(threshold)} MB): ${advice}`;
}

export async function currentWalLsn(client: pg.Client): Promise<Lsn> {
  const { rows } = await client.query<{ lsn: string }>(`SELECT pg_current_wal_insert_lsn()::text AS lsn`);
  return parseLsn(rows[0]!.lsn);
}
