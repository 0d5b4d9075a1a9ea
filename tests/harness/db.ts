/**
 * Helpers for integration test files. The servers themselves are started once
 * per run by `tests/harness/globalSetup.ts`.
 *
 *   const dbs = await freshDatabases('copy');
 *   afterAll(() => dbs.drop());
 *   await sql('source', dbs.source, 'CREATE TABLE t (id int)');
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { TEMPLATE_DATABASES } from './types.js';
import type { HarnessInfo, PgServerInfo, Side } from './types.js';

export type { HarnessInfo, Side } from './types.js';

/** Connection details of the servers started by global setup. */
export function harness(): HarnessInfo {
  return inject('harness');
}

function server(side: Side): PgServerInfo {
  return harness()[side];
}

/** `postgres://postgres:<password>@127.0.0.1:<port>/<database>` */
export function connectionUrl(side: Side, database: string): string {
  const s = server(side);
  return (
    `postgres://${encodeURIComponent(s.user)}:${encodeURIComponent(s.password)}` + `@${s.host}:${s.port}/${encodeURIComponent(database)}`
  );
}

function newClient(side: Side, database: string): pg.Client {
  const s = server(side);
  const client = new pg.Client({ host: s.host, port: s.port, user: s.user, password: s.password, database });
  // A backend terminated behind an idle client (e.g. by drop()) emits 'error';
  // without a listener that would crash the worker. Query errors still reject.
  client.on('error', () => undefined);
  return client;
}

/** Opens a client on `database`, runs `fn`, and always closes the client. */
export async function withClient<T>(side: Side, database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = newClient(side, database);
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Runs one statement on a short-lived connection and returns its rows. */
export async function sql<R extends pg.QueryResultRow = Record<string, unknown>>(
  side: Side,
  database: string,
  text: string,
  params?: unknown[],
): Promise<R[]> {
  return withClient(side, database, async (c) => (await c.query<R>(text, params)).rows);
}

const MAX_IDENTIFIER = 63;

function randomSuffix(): string {
  return randomBytes(6).toString('hex'); // 12 chars of [0-9a-f]
}

/** `${prefix}_${random}`, lower case, a valid unquoted PostgreSQL identifier of ≤ 63 bytes. */
function databaseName(prefix: string): string {
  let p = prefix.toLowerCase().replace(/[^a-z0-9_]+/g, '_');
  if (!/^[a-z_]/.test(p)) p = `t_${p}`;
  const suffix = randomSuffix();
  p = p.slice(0, MAX_IDENTIFIER - suffix.length - 1);
  return `${p}_${suffix}`;
}

export interface FreshDatabases {
  /** Database name on the source server (PostgreSQL 15). */
  source: string;
  /** Database name on the target server (PostgreSQL 17). */
  target: string;
  /** Drops both databases (and whatever replication state keeps them alive). Idempotent. */
  drop(): Promise<void>;
}

/**
 * Creates a new, uniquely named database on each server, cloned from the
 * harness templates (`cs_template_source` / `cs_template_target`).
 */
export async function freshDatabases(prefix: string): Promise<FreshDatabases> {
  const names: Record<Side, string> = { source: databaseName(prefix), target: databaseName(prefix) };
  const sides: Side[] = ['source', 'target'];
  const results = await Promise.allSettled(
    sides.map((side) =>
      withClient(side, 'postgres', async (c) => {
        await c.query(`CREATE DATABASE ${c.escapeIdentifier(names[side])} TEMPLATE ${c.escapeIdentifier(TEMPLATE_DATABASES[side])}`);
      }),
    ),
  );
  const drop = async (): Promise<void> => {
    await Promise.all(sides.map((side) => dropDatabase(side, names[side])));
  };
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) {
    await drop().catch(() => undefined);
    throw failed.reason;
  }
  return { ...names, drop };
}

/**
 * Drops `database`, whatever is connected to it. Subscriptions (whose catalog
 * is shared) and logical replication slots block DROP DATABASE even WITH
 * (FORCE), so they are removed first.
 */
async function dropDatabase(side: Side, database: string): Promise<void> {
  // 1. Subscriptions living in the database: detach them from their remote slot
  //    (cleaned up on the other side by step 2) and drop them.
  try {
    await withClient(side, database, async (c) => {
      const subs = await c.query<{ subname: string }>(
        `SELECT subname FROM pg_subscription
          WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      );
      for (const { subname } of subs.rows) {
        const id = c.escapeIdentifier(subname);
        await c.query(`ALTER SUBSCRIPTION ${id} DISABLE`);
        await c.query(`ALTER SUBSCRIPTION ${id} SET (slot_name = NONE)`);
        await c.query(`DROP SUBSCRIPTION ${id}`);
      }
    });
  } catch (err) {
    if ((err as { code?: unknown }).code !== '3D000') throw err; // 3D000: database does not exist
  }

  await withClient(side, 'postgres', async (c) => {
    // 2. Sessions (including logical walsenders) using the database; wait up to 5 s each.
    await c.query(
      `SELECT pg_terminate_backend(pid, 5000)
         FROM pg_stat_activity
        WHERE datname = $1 AND pid <> pg_backend_pid()`,
      [database],
    );
    // 3. Replication slots of the database.
    await c.query(
      `SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots
        WHERE database = $1 AND active_pid IS NOT NULL`,
      [database],
    );
    await c.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, [database]);
    // 4. The database itself.
    await c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(database)} WITH (FORCE)`);
  });
}

/**
 * A unique, valid blob container name (`${prefix}-${random}`: 3–63 chars of
 * [a-z0-9-], no leading/trailing/double hyphen). The container is NOT created.
 */
export async function freshContainer(prefix: string): Promise<string> {
  const suffix = randomSuffix();
  let p = prefix
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  p = p.slice(0, 63 - suffix.length - 1).replace(/-+$/, '');
  return p === '' ? `c${suffix}` : `${p}-${suffix}`;
}

/**
 * A trigger on a target table that changes every row the copy inserts (`assignment`, e.g.
 * `NEW.name := NEW.name || '!'`), firing in replica mode too, as the copy's sessions write: the
 * target silently storing something else, which verification must notice.
 */
export async function rewritingTrigger(database: string, table: string, assignment: string): Promise<void> {
  await sql(
    'target',
    database,
    `CREATE FUNCTION public.rewrite() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN ${assignment}; RETURN NEW; END $$;
     CREATE TRIGGER rewrite BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION public.rewrite();
     ALTER TABLE ${table} ENABLE ALWAYS TRIGGER rewrite;`,
  );
}
