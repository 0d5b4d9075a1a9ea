/**
 * The blobs one replicated transaction lets go of, removed once it has committed on the target.
 * A row inserted under a name, or renamed to it, takes the name; a row deleted, or renamed away,
 * releases it; the last word counts, since a template names one row at a time. So a document
 * deleted and inserted again under its name in one transaction keeps its (new) blob.
 *
 * Released names are written to the state store's released_blobs in the transaction itself
 * (rolled back with it), and deleted from there only once their blobs are removed: a process
 * killed after the commit leaves them, and the next removes them before it applies anything (no
 * later change has taken the names yet). A TRUNCATE releases every name its tables held, written
 * there by the server; before the commit, the rows the transaction put back keep theirs (a join on
 * the server). Names are read back a chunk at a time, so a table of millions of documents,
 * reloaded or not, is never held in memory.
 */
import type pg from 'pg';

/** Names written, read back and removed at a time. */
const CHUNK = 1000;

/** Where released names wait: the state store's released_blobs (quoted), for one run. */
export interface ReleasedLedger {
  table: string;
  runId: string;
}

export class BlobRelease {
  /** Name → released (true), or taken back since (false). */
  private readonly names = new Map<string, boolean>();
  /** Tables a TRUNCATE emptied in this transaction: their rows' names are in the ledger. */
  private truncated: Array<{ quoted: string; keepColumn: string }> = [];
  /** Names may wait in the ledger (written by a transaction, or left by a killed process). */
  private waiting = true;

  constructor(
    private readonly target: pg.Client,
    private readonly ledger: ReleasedLedger,
  ) {}

  take(name: string): void {
    // Only a take that overrides a release is kept: a transaction of a million inserts holds nothing.
    if (this.names.has(name)) this.names.set(name, false);
  }

  release(name: string): void {
    this.names.set(name, true);
  }

  /** Before the TRUNCATE of `quoted`, in its transaction: every name its rows hold is released. */
  async truncate(quoted: string, keepColumn: string): Promise<void> {
    await this.target.query(
      `INSERT INTO ${this.ledger.table} (run_id, name) SELECT $1, ${keepColumn} FROM ${quoted} WHERE ${keepColumn} IS NOT NULL ON CONFLICT DO NOTHING`,
      [this.ledger.runId],
    );
    this.truncated.push({ quoted, keepColumn });
  }

  /** In the transaction, before its commit: what it released and did not take back goes to the ledger. */
  async beforeCommit(): Promise<void> {
    const released = [...this.names].filter(([, gone]) => gone).map(([name]) => name);
    for (let i = 0; i < released.length; i += CHUNK) {
      await this.target.query(`INSERT INTO ${this.ledger.table} (run_id, name) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING`, [
        this.ledger.runId,
        released.slice(i, i + CHUNK),
      ]);
    }
    // Rows the transaction put back after a TRUNCATE keep their blobs: one join per table, on the server.
    for (const t of this.truncated) {
      await this.target.query(`DELETE FROM ${this.ledger.table} r USING ${t.quoted} d WHERE r.run_id = $1 AND d.${t.keepColumn} = r.name`, [
        this.ledger.runId,
      ]);
    }
    if (released.length > 0 || this.truncated.length > 0) this.waiting = true;
    this.names.clear();
    this.truncated = [];
  }

  /** The transaction was abandoned: what it released stays (its ledger rows roll back with it). */
  forget(): void {
    this.names.clear();
    this.truncated = [];
  }

  /** Outside a transaction: removes every blob waiting in the ledger, then its name. */
  async removeCommitted(remove: (names: string[]) => Promise<void>): Promise<void> {
    if (!this.waiting) return;
    for (;;) {
      const { rows } = await this.target.query<{ name: string }>(`SELECT name FROM ${this.ledger.table} WHERE run_id = $1 LIMIT ${CHUNK}`, [
        this.ledger.runId,
      ]);
      if (rows.length === 0) break;
      const names = rows.map((r) => r.name);
      await remove(names);
      await this.target.query(`DELETE FROM ${this.ledger.table} WHERE run_id = $1 AND name = ANY($2::text[])`, [this.ledger.runId, names]);
    }
    this.waiting = false;
  }
}
