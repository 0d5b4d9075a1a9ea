/**
 * Running steps on the target. Invariants:
 * - each step is its own transaction, with search_path = '' and the deparse settings the source
 *   was read with (so printed expressions mean the same) and check_function_bodies off (bodies
 *   may name objects created later, as with pg_dump);
 * - a step whose probe finds its object is rolled back untouched and reported as skipped;
 * - a failure names the step and the statement, and rolls the step back: nothing half-made stays;
 * - phase 2 runs each stage's units over the caller's connections, a unit at a time per
 *   connection; deadlocks between units (foreign keys lock two tables) are retried; after the
 *   first failure no new unit starts, and the first error is thrown once all workers stopped.
 */
import type pg from 'pg';
import { CloudshiftError, ExitCode, messageOf } from '../../../errors.js';
import { redact } from '../../../redact.js';
import { DEPARSE_SETTINGS } from './catalog.js';
import type { Probe, ProbeKind, Stages, Step } from './steps.js';

/** The target could not take a schema statement. */
const CONSTRAINT_VIOLATIONS = new Set(['23505', '23503', '23514', '23P01']);

const ROWS_BREAK_IT =
  'rows on the target break it: a copy stopped and resumed without live sync takes the rest from a newer snapshot, where a row that moved between batches meanwhile is twice or not at all; `cloudshift verify <plan> --repair` mends those rows, then `cloudshift run` goes on';

export class SchemaApplyError extends CloudshiftError {
  readonly step: string;
  readonly statement: string | null;
  /** SQLSTATE of the server's error, when there was one. */
  readonly sqlState: string | undefined;
  constructor(step: string, statement: string | null, cause: unknown) {
    const code = (cause as { code?: string } | null)?.code;
    const shown = statement ? `the statement was: ${redact(statement.length > 500 ? `${statement.slice(0, 500)}...` : statement)}` : null;
    // Unique, foreign key, check or exclusion: the constraint is right, rows on the target are not.
    const rows = code && CONSTRAINT_VIOLATIONS.has(code) ? ROWS_BREAK_IT : null;
    super('CS_SCHEMA', ExitCode.precondition, `cannot create ${step} on the target: ${redact(messageOf(cause))}`, {
      cause,
      hint: [rows, shown].filter((x) => x !== null).join('; ') || undefined,
    });
    this.step = step;
    this.statement = statement;
    this.sqlState = code;
  }
}

const TARGET_SETTINGS = `${DEPARSE_SETTINGS}, set_config('check_function_bodies', 'off', true), set_config('client_min_messages', 'warning', true)`;

const PROBES: Record<ProbeKind, string> = {
  schema: `SELECT 1 FROM pg_namespace WHERE nspname = $1`,
  extension: `SELECT 1 FROM pg_extension WHERE extname = $1`,
  type: `SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typname = $2`,
  relation: `SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`,
  statistics: `SELECT 1 FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE n.nspname = $1 AND s.stxname = $2`,
  function: `SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = $1 AND p.proname = $2 AND pg_get_function_identity_arguments(p.oid) = $3`,
  constraint: `SELECT 1 FROM pg_constraint x JOIN pg_class c ON c.oid = x.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = $1 AND c.relname = $2 AND x.conname = $3`,
  domainConstraint: `SELECT 1 FROM pg_constraint x JOIN pg_type t ON t.oid = x.contypid JOIN pg_namespace n ON n.oid = t.typnamespace
                      WHERE n.nspname = $1 AND t.typname = $2 AND x.conname = $3`,
  trigger: `SELECT 1 FROM pg_trigger x JOIN pg_class c ON c.oid = x.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND x.tgname = $3`,
  rowSecurity: `SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relrowsecurity AND (c.relforcerowsecurity OR NOT $3::boolean)`,
  policy: `SELECT 1 FROM pg_policy x JOIN pg_class c ON c.oid = x.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relname = $2 AND x.polname = $3`,
};

async function exists(client: pg.Client, probe: Probe): Promise<boolean> {
  const { rowCount } = await client.query(PROBES[probe.kind], probe.args);
  return (rowCount ?? 0) > 0;
}

/** Runs one step in its own transaction; false when its probe found the object already there. */
export async function runStep(client: pg.Client, step: Step): Promise<boolean> {
  let statement: string | null = null;
  try {
    await client.query('BEGIN');
    await client.query(TARGET_SETTINGS);
    if (step.probe && (await exists(client, step.probe))) {
      await client.query('ROLLBACK');
      return false;
    }
    for (const sql of step.sql) {
      statement = sql;
      await client.query(sql);
    }
    statement = step.dynamic ? `-- ${step.dynamic.describe}` : null;
    if (step.dynamic) await step.dynamic.run(client);
    statement = null;
    await client.query('COMMIT');
    return true;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    if (err instanceof SchemaApplyError) throw err;
    throw new SchemaApplyError(step.label, statement, err);
  }
}

const RETRYABLE = new Set(['40P01', '40001', '55P03']);
const MAX_ATTEMPTS = 5;

async function runStepRetrying(client: pg.Client, step: Step): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await runStep(client, step);
      return;
    } catch (err) {
      const code = err instanceof SchemaApplyError ? err.sqlState : undefined;
      if (attempt >= MAX_ATTEMPTS || code === undefined || !RETRYABLE.has(code)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt + Math.floor(Math.random() * 100)));
    }
  }
}

export async function runSteps(client: pg.Client, steps: Step[]): Promise<void> {
  for (const step of steps) await runStep(client, step);
}

/**
 * Runs the stages of phase 2 over up to `jobs` connections from `connect` (opened here, closed
 * here, also on failure).
 */
export async function runStages(connect: () => Promise<pg.Client>, stages: Stages, jobs: number): Promise<void> {
  const widest = Math.max(0, ...stages.map((s) => s.length));
  const count = Math.max(1, Math.min(Math.floor(jobs) || 1, widest));
  if (widest === 0) return;
  const clients: pg.Client[] = [];
  try {
    for (let i = 0; i < count; i += 1) clients.push(await connect());
    for (const stage of stages) {
      const queue = [...stage];
      let failure: { error: unknown } | null = null;
      const worker = async (client: pg.Client) => {
        while (failure === null) {
          const unit = queue.shift();
          if (!unit) return;
          try {
            for (const step of unit) await runStepRetrying(client, step);
          } catch (error) {
            failure ??= { error };
          }
        }
      };
      await Promise.all(clients.slice(0, Math.min(clients.length, stage.length)).map(worker));
      if (failure !== null) throw (failure as { error: unknown }).error;
    }
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}
