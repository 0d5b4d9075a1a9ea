/**
 * The blobs one replicated transaction lets go of, removed once it has committed on the target.
 * A row inserted under a name, or renamed to it, takes the name; a row deleted, or renamed away,
 * releases it; the last word counts, since a template names one row at a time. So a document
 * deleted and inserted again under its name in one transaction keeps its (new) blob.
 *
 * A TRUNCATE releases every name its tables held: those wait in a temporary table of the target
 * session, written in the transaction (rolled back with it); after the commit the rows put back
 * since keep theirs (a join on the server) and the rest are removed a chunk at a time, so a table
 * of millions of documents, reloaded or not, is never held in memory.
 */
import type pg from 'pg';

const RELEASED = 'pg_temp.cloudshift_released';
/** Names read back from the temporary table, and removed, at a time. */
const CHUNK = 1000;

export class BlobRelease {
  /** Name → released (true), or taken back since (false). */
  private readonly names = new Map<string, boolean>();
  /** Tables a TRUNCATE emptied in this transaction: their rows' names wait in RELEASED. */
  private truncated: Array<{ quoted: string; keepColumn: string }> = [];

  constructor(private readonly target: pg.Client) {}

  take(name: string): void {
    // Only a take that overrides a release is kept: a transaction of a million inserts holds nothing.
    if (this.names.has(name)) this.names.set(name, false);
  }

  release(name: string): void {
    this.names.set(name, true);
  }

  /** Before the TRUNCATE of `quoted`, in its transaction: every name its rows hold is released. */
  async truncate(quoted: string, keepColumn: string): Promise<void> {
    await this.target.query(`CREATE TEMP TABLE IF NOT EXISTS cloudshift_released (name text NOT NULL)`);
    await this.target.query(`INSERT INTO ${RELEASED} SELECT ${keepColumn} FROM ${quoted} WHERE ${keepColumn} IS NOT NULL`);
    this.truncated.push({ quoted, keepColumn });
  }

  /** The transaction was abandoned: what it released stays (the temporary table's rows roll back with it). */
  forget(): void {
    this.names.clear();
    this.truncated = [];
  }

  /** After the commit: removes every name released and not taken again. */
  async removeCommitted(remove: (names: string[]) => Promise<void>): Promise<void> {
    const released = [...this.names].filter(([, gone]) => gone).map(([name]) => name);
    const truncated = this.truncated;
    this.forget();
    if (released.length > 0) await remove(released);
    if (truncated.length === 0) return;
    // Rows the transaction put back after the TRUNCATE keep their blobs: one join per table, on the server.
    for (const t of truncated) {
      await this.target.query(`DELETE FROM ${RELEASED} r USING ${t.quoted} d WHERE d.${t.keepColumn} = r.name`);
    }
    for (;;) {
      const { rows } = await this.target.query<{ name: string }>(
        `DELETE FROM ${RELEASED} WHERE ctid IN (SELECT ctid FROM ${RELEASED} LIMIT ${CHUNK}) RETURNING name`,
      );
      if (rows.length === 0) return;
      await remove(rows.map((r) => r.name));
    }
  }
}
