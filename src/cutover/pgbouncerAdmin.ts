/**
 * PgBouncer's admin console (the `pgbouncer` pseudo-database): PAUSE, RESUME, RELOAD and the
 * SHOW commands cutover needs. Invariants (DESIGN.md, pitfalls):
 * - PAUSE has no timeout of its own: it is bounded here. A PAUSE that cannot finish in time is
 *   abandoned by closing the connection that sent it, and only then is RESUME sent, on a new
 *   connection: a RESUME while a PAUSE is pending would leave that PAUSE hanging (PgBouncer
 *   issue 715). PgBouncer keeps the database paused after the pausing connection closes, so the
 *   RESUME is always needed.
 * - Only the simple query protocol, no session settings: the console accepts nothing else.
 */
import type pg from 'pg';
import { connect } from '../pg/connect.js';

export interface ServerConnection {
  database: string;
  user: string;
  state: string;
  /** Backend process id on the server, to name the session holding a PAUSE up. */
  remotePid: number | null;
}

export type PauseOutcome = { paused: true; ms: number } | { paused: false; ms: number; busy: ServerConnection[] };

export class PgBouncerAdmin {
  private constructor(
    private readonly url: string,
    private client: pg.Client,
  ) {}

  static async open(url: string, connectTimeoutMs?: number): Promise<PgBouncerAdmin> {
    return new PgBouncerAdmin(url, await openConsole(url, connectTimeoutMs));
  }

  /**
   * PAUSE `database`, waiting at most `timeoutMs` for its transactions to finish. On timeout the
   * busy server connections are listed (on a second connection, while the PAUSE still waits),
   * the pausing connection is closed, and the database is RESUMEd: nothing stays paused.
   */
  async pause(database: string, timeoutMs: number): Promise<PauseOutcome> {
    const started = performance.now();
    const pending = this.client.query(`PAUSE ${consoleIdent(database)}`).then(
      () => 'done' as const,
      (err: unknown) => err,
    );
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const first = await Promise.race([pending, timeout]);
    clearTimeout(timer);
    if (first === 'done') return { paused: true, ms: performance.now() - started };
    if (first !== 'timeout') throw first;
    const other = await openConsole(this.url);
    try {
      const busy = (await serverConnections(other)).filter((s) => s.database === database && s.state === 'active');
      await this.client.end().catch(() => undefined);
      await pending;
      await other.query(`RESUME ${consoleIdent(database)}`);
      this.client = other;
      return { paused: false, ms: performance.now() - started, busy };
    } catch (err) {
      await other.end().catch(() => undefined);
      throw err;
    }
  }

  async resume(database: string): Promise<void> {
    await this.query(`RESUME ${consoleIdent(database)}`);
  }

  /** A console command; a connection lost (PgBouncer restarted) is opened again, once. */
  private async query<R extends pg.QueryResultRow>(text: string): Promise<pg.QueryResult<R>> {
    try {
      return await this.client.query<R>(text);
    } catch (err) {
      if ((err as { code?: string }).code !== undefined && !/terminat|not queryable|ECONN|EPIPE/i.test((err as Error).message)) throw err;
      await this.client.end().catch(() => undefined);
      this.client = await openConsole(this.url);
      return this.client.query<R>(text);
    }
  }

  /** RESUME when paused; a database that is not paused is left alone (RESUME would fail). */
  async ensureResumed(database: string): Promise<boolean> {
    if (!(await this.isPaused(database))) return false;
    await this.resume(database);
    return true;
  }

  async reload(): Promise<void> {
    await this.query('RELOAD');
  }

  async isPaused(database: string): Promise<boolean> {
    const { rows } = await this.query<{ name: string; paused: number | string }>('SHOW DATABASES');
    const row = rows.find((r) => r.name === database);
    return row !== undefined && Number(row.paused) === 1;
  }

  /** host, port and dbname of the database as PgBouncer currently routes it. */
  async route(database: string): Promise<{ host: string; port: number; dbname: string } | null> {
    const { rows } = await this.query<{ name: string; host: string | null; port: number | string; database: string }>('SHOW DATABASES');
    const row = rows.find((r) => r.name === database);
    return row ? { host: row.host ?? '', port: Number(row.port), dbname: row.database } : null;
  }

  /** SHOW CONFIG as key → value. */
  async config(): Promise<Map<string, string>> {
    const { rows } = await this.query<{ key: string; value: string }>('SHOW CONFIG');
    return new Map(rows.map((r) => [r.key, String(r.value)]));
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }
}

async function openConsole(url: string, connectTimeoutMs?: number): Promise<pg.Client> {
  return connect({
    role: 'PgBouncer admin',
    connectionString: url,
    plain: true,
    applicationName: 'cloudshift cutover',
    ...(connectTimeoutMs === undefined ? {} : { connectTimeoutMs }),
  });
}

async function serverConnections(client: pg.Client): Promise<ServerConnection[]> {
  const { rows } = await client.query<{ database: string; user: string; state: string; remote_pid: number | string | null }>(
    'SHOW SERVERS',
  );
  return rows.map((r) => ({
    database: r.database,
    user: r.user,
    state: r.state,
    remotePid: r.remote_pid === null || Number(r.remote_pid) === 0 ? null : Number(r.remote_pid),
  }));
}

/** The console takes a database name as a bare word or double-quoted. */
function consoleIdent(name: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}
