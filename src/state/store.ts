/**
 * The state store: runs, batches, the applied LSN, workers and the append-only event log, in a
 * PostgreSQL schema (default `cloudshift` in the target database). The rest of cloudshift talks
 * to it only through this class. Invariants:
 * - the schema is migrated before any write, under an advisory lock (migrations.ts);
 * - no secret is ever written here: runs record the plan's fingerprint, not its values;
 * - events are appended, never updated.
 */
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import { messageOf, StateConflictError } from '../errors.js';
import { isConnectionLost } from '../pg/transient.js';
import { pgAuthOf, pgConnectionString, pgPoolConfig } from '../azure/pgToken.js';
import { connect, KEEPALIVE } from '../pg/connect.js';
import { redact, redactDeep } from '../redact.js';
import { inspectSchema, migrateSchema, schemaTooNew, type SchemaStatus } from './migrations.js';
import { claimBatches } from './sql/claimBatches.js';
import type { BatchRow, EventRow, NewBatch, RunDatabases, RunRow } from './types.js';
import { whoAmI, type Who } from './who.js';

/** Events after which a run's earlier failure is history: a process started, resumed, took over, finished or stopped it on request. */
const RUN_STARTS = ['run:start', 'run:resume', 'worker:lead', 'run:done', 'run:interrupted'];

export interface OpenStateStoreOptions {
  connectionString: string;
  schema: string;
  connectTimeoutMs?: number;
  /** Sessions refuse writes (status, report): reading a run never changes it. */
  readOnly?: boolean;
}

export interface CreateRunOptions {
  planName: string;
  planFingerprint: string;
  toolVersion: string;
}

export class StateStore {
  private closing = false;
  private lost: string | null = null;
  private readonly lostListeners = new Set<(why: string) => void>();

  private constructor(
    readonly knex: Knex,
    private readonly session: pg.Client,
    /** For statements issued concurrently (batch marks, documents); the session holds the locks. */
    readonly pool: pg.Pool,
    readonly schema: string,
    private readonly who: Who,
  ) {
    session.on('error', (err: Error) => this.sessionLost(messageOf(err)));
    session.on('end', () => this.sessionLost('the connection closed'));
  }

  /**
   * Calls `listener` once if the session holding this process's locks ends other than by
   * close(): the server or the network dropped it, PostgreSQL released its locks, and another
   * process may take them. At once if it has already ended.
   */
  onSessionLost(listener: (why: string) => void): void {
    if (this.lost !== null) listener(this.lost);
    else this.lostListeners.add(listener);
  }

  private sessionLost(why: string): void {
    if (this.closing || this.lost !== null) return;
    this.lost = why;
    for (const listener of this.lostListeners) listener(why);
    this.lostListeners.clear();
  }

  /**
   * One round trip on the locks' session: a connection that died without a word (a half-open
   * socket, a failover) fails here, and its loss is reported to onSessionLost's listeners.
   */
  async pingSession(): Promise<void> {
    try {
      await this.session.query('SELECT 1');
    } catch (err) {
      if (isConnectionLost(err)) this.sessionLost(messageOf(err));
    }
  }

  /** Connects (bounded, with a clear error) without creating or changing anything. */
  static async open(options: OpenStateStoreOptions): Promise<StateStore> {
    const session = await connect({
      role: 'state store',
      connectionString: options.connectionString,
      ...(options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: options.connectTimeoutMs }),
      ...(options.readOnly ? { readOnly: true } : {}),
    });
    const knex = knexFactory({
      client: 'pg',
      connection: poolConnection(options.connectionString, {
        application_name: 'cloudshift state',
        ...(options.readOnly ? { options: '-c default_transaction_read_only=on' } : {}),
      }),
      searchPath: [options.schema],
      pool: { min: 0, max: 4 },
    });
    const pool = new pg.Pool(
      pgPoolConfig(options.connectionString, {
        max: 4,
        ...KEEPALIVE,
        application_name: 'cloudshift state',
        ...(options.readOnly ? { options: '-c default_transaction_read_only=on' } : {}),
      }),
    );
    pool.on('error', () => undefined);
    return new StateStore(knex, session, pool, options.schema, whoAmI());
  }

  async inspect(): Promise<SchemaStatus> {
    return inspectSchema(this.session, this.schema);
  }

  /** Creates or upgrades the schema; refuses a schema made by a newer cloudshift. */
  async migrate(): Promise<void> {
    await migrateSchema(this.knex, this.session, this.schema);
  }

  /** Refuses to work on a schema that is missing migrations or has unknown ones. */
  async assertCurrent(): Promise<void> {
    const status = await this.inspect();
    if (status.unknown.length > 0) throw schemaTooNew(this.schema, status);
    if (status.pending.length > 0) {
      throw new StateConflictError(`the state store schema "${this.schema}" is not migrated (pending: ${status.pending.join(', ')})`);
    }
  }

  async createRun(options: CreateRunOptions): Promise<RunRow> {
    const [row] = await this.knex<RunRow>('runs')
      .insert({
        id: crypto.randomUUID(),
        plan_name: options.planName,
        plan_fingerprint: options.planFingerprint,
        tool_version: options.toolVersion,
        created_by: `${this.who.osUser}@${this.who.host}`,
      })
      .returning('*');
    return row!;
  }

  async getRun(runId: string): Promise<RunRow | null> {
    const row = await this.knex<RunRow>('runs').where({ id: runId }).first();
    return row ?? null;
  }

  async getActiveRun(planName: string): Promise<RunRow | null> {
    const row = await this.knex<RunRow>('runs').where({ plan_name: planName, status: 'active' }).first();
    return row ?? null;
  }

  async getLatestRun(planName: string): Promise<RunRow | null> {
    const row = await this.knex<RunRow>('runs').where({ plan_name: planName }).orderBy('created_at', 'desc').first();
    return row ?? null;
  }

  async updateRun(
    runId: string,
    fields: Partial<Pick<RunRow, 'phase' | 'status' | 'slot_name' | 'publication_name' | 'snapshot_name' | 'consistent_lsn'>>,
  ): Promise<void> {
    await this.knex('runs')
      .where({ id: runId })
      .update({ ...fields, updated_at: this.knex.fn.now() });
  }

  /**
   * The databases the run was begun on: those recorded by its first process, or `found` when
   * none are (a new run, or one begun before cloudshift recorded them). `replace` records `found`
   * whatever was there.
   */
  async runDatabases(runId: string, found: RunDatabases, replace = false): Promise<RunDatabases> {
    const q = this.knex('runs').where({ id: runId });
    if (!replace) q.whereRaw(`details -> 'databases' IS NULL`);
    await q.update({ details: this.knex.raw(`details || jsonb_build_object('databases', ?::jsonb)`, [JSON.stringify(found)]) });
    return (await this.recordedDatabases(runId))!;
  }

  /** The databases the run was begun on; null when none are recorded. */
  async recordedDatabases(runId: string): Promise<RunDatabases | null> {
    const row = await this.knex('runs')
      .where({ id: runId })
      .first<{ databases: RunDatabases | null } | undefined>(this.knex.raw(`details -> 'databases' AS databases`));
    return row?.databases ?? null;
  }

  async appendEvent(runId: string | null, kind: string, message: string, details: Record<string, unknown> = {}): Promise<EventRow> {
    const [row] = await this.knex<EventRow>('events')
      .insert({
        run_id: runId,
        os_user: this.who.osUser,
        host: this.who.host,
        pid: this.who.pid,
        kind,
        // Messages carry foreign text (driver errors, a switch command's output): never a secret.
        message: redact(message),
        details: JSON.stringify(redactDeep(details)) as unknown as Record<string, unknown>,
      })
      .returning('*');
    return row!;
  }

  /**
   * Why the run's last leading process stopped, if it failed (a worker's failure is `worker:failed`)
   * and none started, resumed, took over or stopped the run since.
   */
  async lastFailure(runId: string): Promise<EventRow | null> {
    const row = await this.knex<EventRow>('events')
      .where({ run_id: runId })
      .whereIn('kind', ['run:failed', ...RUN_STARTS])
      .orderBy('id', 'desc')
      .first();
    return row?.kind === 'run:failed' ? row : null;
  }

  /** The run has an event of this kind (said once per run, whichever process got there first). */
  async hasEvent(runId: string, kind: string): Promise<boolean> {
    return (await this.knex('events').where({ run_id: runId, kind }).first('id')) !== undefined;
  }

  async listEvents(runId: string, options: { limit?: number } = {}): Promise<EventRow[]> {
    const rows = await this.knex<EventRow>('events')
      .where({ run_id: runId })
      .orderBy('id', 'desc')
      .limit(options.limit ?? 100);
    return rows.reverse();
  }

  async addBatches(runId: string, batches: NewBatch[]): Promise<void> {
    if (batches.length === 0) return;
    const rows = batches.map((b) => ({
      run_id: runId,
      kind: b.kind,
      relation: b.relation,
      seq: b.seq,
      key_low: JSON.stringify(b.keyLow),
      key_high: JSON.stringify(b.keyHigh),
    }));
    // All of a run's batches are planned in one transaction: a crash never leaves half a plan.
    await this.knex.transaction(async (trx) => {
      await trx.batchInsert('batches', rows, 1000);
    });
  }

  async hasBatches(runId: string): Promise<boolean> {
    const row = await this.knex('batches').where({ run_id: runId }).first('id');
    return row !== undefined;
  }

  /** Some batch of the run was copied (whatever its verification found). */
  async hasCopiedBatches(runId: string): Promise<boolean> {
    const row = await this.knex('batches').where({ run_id: runId }).whereIn('status', ['copied', 'verified', 'mismatch']).first('id');
    return row !== undefined;
  }

  /** The tables the run's batches were planned for (none before planning). */
  async plannedRelations(runId: string): Promise<string[]> {
    const rows = await this.knex('batches').where({ run_id: runId }).distinct('relation').orderBy('relation');
    return rows.map((r: { relation: string }) => r.relation);
  }

  async claimBatches(runId: string, workerId: string, limit: number, fingerprint: string): Promise<BatchRow[]> {
    return claimBatches(this.knex, runId, workerId, limit, fingerprint);
  }

  async listBatches(runId: string): Promise<BatchRow[]> {
    return this.knex<BatchRow>('batches').where({ run_id: runId }).orderBy('id');
  }

  /** The store's own session, for single-statement operations outside a target transaction. */
  get db(): pg.Client {
    return this.session;
  }

  /**
   * Takes the run's lock for this process (a session advisory lock: released if the process
   * dies). Refuses with exit 4 when another process holds it.
   */
  async lockRun(run: RunRow): Promise<void> {
    if (!(await this.tryLock(`cloudshift.run:${run.id}`))) {
      throw new StateConflictError(`run ${run.id} of plan "${run.plan_name}" is in progress in another cloudshift process`, {
        hint: 'wait for it to finish, or stop it (Ctrl-C) before starting another',
      });
    }
  }

  /**
   * Takes the run's switch lock, held by a cutover or rollback (and its guard) from start to end:
   * nothing else may end the run or drop its streams meanwhile.
   */
  async lockSwitch(run: RunRow): Promise<void> {
    if (!(await this.tryLock(`cloudshift.switch:${run.id}`))) {
      throw new StateConflictError(`a cutover or rollback of run ${run.id} is in progress`, {
        hint: 'wait for it to finish; `cloudshift status` shows it',
      });
    }
  }

  /** Takes a named session advisory lock if it is free (re-entrant for this process). */
  async tryLock(name: string): Promise<boolean> {
    const { rows } = await this.session.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS ok`, [name]);
    return rows[0]?.ok === true;
  }

  async unlock(name: string): Promise<void> {
    await this.session.query(`SELECT pg_advisory_unlock(hashtextextended($1, 0))`, [name]);
  }

  async updateFingerprint(runId: string, fingerprint: string): Promise<void> {
    await this.knex('runs').where({ id: runId }).update({ plan_fingerprint: fingerprint, updated_at: this.knex.fn.now() });
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([this.knex.destroy(), this.session.end(), this.pool.end()]);
  }
}

/** Static pool settings, or with Entra ID a provider that fetches a new token when the last is due. */
function poolConnection(connectionString: string, settings: { application_name: string; options?: string }): Knex.Config['connection'] {
  const extra = { ...settings, ...KEEPALIVE };
  if (pgAuthOf(connectionString).kind === 'password') return { connectionString, ...extra };
  return async () => {
    const { connectionString: withToken, refreshAt } = await pgConnectionString(connectionString);
    return { connectionString: withToken, ...extra, expirationChecker: () => Date.now() >= (refreshAt ?? 0) };
  };
}
