/**
 * The blobs one replicated transaction lets go of, removed once it has committed on the target.
 * A row inserted under a name, or renamed to it, takes the name; a row deleted, or renamed away,
 * releases it; the last word counts, since a template names one row at a time. So a document
 * deleted and inserted again under its name in one transaction keeps its (new) blob.
 *
 * A TRUNCATE releases every name its tables held: those wait in a temporary table of the target
 * session, written in the transaction (rolled back with it), and are removed a chunk at a time,
 * so a table of millions of documents is never held in memory.
 */
import type pg from 'pg';

const RELEASED = 'pg_temp.cloudshift_released';
/** Names read back from the temporary table, and removed, at a time. */
const CHUNK = 1000;

export class BlobRelease {
  /** Name → released (true) or taken (false), and the table of the row that did it. */
  private readonly names = new Map<string, { released: boolean; table: string }>();
  private truncated = false;

  constructor(private readonly target: pg.Client) {}

  take(table: string, name: string): void {
    // Only a take that overrides a release is kept: a transaction of a million inserts holds nothing.
    if (this.names.has(name) || this.truncated) this.names.set(name, { released: false, table });
  }

  release(table: string, name: string): void {
    this.names.set(name, { released: true, table });
  }

  /** Before the TRUNCATE of `quoted`, in its transaction: every name its rows hold is released. */
  async truncate(table: string, quoted: string, keepColumn: string): Promise<void> {
    await this.target.query(`CREATE TEMP TABLE IF NOT EXISTS cloudshift_released (name text NOT NULL)`);
    await this.target.query(`INSERT INTO ${RELEASED} SELECT ${keepColumn} FROM ${quoted} WHERE ${keepColumn} IS NOT NULL`);
    this.truncated = true;
    // Names its rows took earlier in this transaction are in the temporary table now.
    for (const [name, n] of this.names) if (n.table === table && !n.released) this.names.delete(name);
  }

  /** The transaction was abandoned: what it released stays (the temporary table's rows roll back with it). */
  forget(): void {
    this.names.clear();
    this.truncated = false;
  }

  /** After the commit: removes every name released and not taken again. */
  async removeCommitted(remove: (names: string[]) => Promise<void>): Promise<void> {
    const names = new Map(this.names);
    const truncated = this.truncated;
    this.forget();
    const released = [...names].filter(([, n]) => n.released).map(([name]) => name);
    if (released.length > 0) await remove(released);
    if (!truncated) return;
    for (;;) {
      const { rows } = await this.target.query<{ name: string }>(
        `DELETE FROM ${RELEASED} WHERE ctid IN (SELECT ctid FROM ${RELEASED} LIMIT ${CHUNK}) RETURNING name`,
      );
      if (rows.length === 0) return;
      // A name a row took after the TRUNCATE (the row put back) keeps its blob.
      const gone = rows.map((r) => r.name).filter((name) => names.get(name)?.released !== false);
      if (gone.length > 0) await remove(gone);
    }
  }
}
