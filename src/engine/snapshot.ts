/**
 * One consistent view of the source for every batch. The holder keeps a REPEATABLE READ
 * transaction open and exports its snapshot; batch readers import it by name with SET
 * TRANSACTION SNAPSHOT. The live-sync milestone replaces this holder with the replication
 * connection that creates the slot (CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')), behind
 * the same interface. If the holder is gone (a crash), a new one exports a newer snapshot: the
 * batches already copied stay as they were.
 */
import type pg from 'pg';
import { connect } from '../pg/connect.js';

export interface SnapshotHolder {
  /** The exported snapshot's name, e.g. "00000003-0000001B-1". */
  readonly name: string;
  release(): Promise<void>;
}

export async function exportSnapshot(connectionString: string): Promise<SnapshotHolder> {
  const client: pg.Client = await connect({ role: 'source', connectionString, applicationName: 'cloudshift snapshot' });
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const { rows } = await client.query<{ name: string }>('SELECT pg_export_snapshot() AS name');
    const name = rows[0]!.name;
    return {
      name,
      release: async () => {
        await client.query('COMMIT').catch(() => undefined);
        await client.end().catch(() => undefined);
      },
    };
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
}

/** Starts a read-only transaction on `client` that sees the exported snapshot. */
export async function beginInSnapshot(client: pg.Client, snapshot: string | null): Promise<void> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  if (snapshot) await client.query(`SET TRANSACTION SNAPSHOT '${snapshot.replace(/'/g, "''")}'`);
}
