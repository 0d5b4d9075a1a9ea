/**
 * The dry run: connects to everything the plan names and reports every check at once. Strictly
 * read-only by construction: database sessions run with default_transaction_read_only, the
 * state store is inspected (never migrated), and the Blob container is only read. A server that
 * cannot be reached is a failed check, not an exception, so the other checks still run.
 */
import type pg from 'pg';
import { CloudshiftError, messageOf } from '../errors.js';
import { isConnectionLost } from '../pg/transient.js';
import type { LoadedPlan } from '../plan/parse.js';
import { resolveSecrets, secretTexts, type Env } from '../plan/secrets.js';
import { connect, describeEndpoint, endpointOf, type Role } from '../pg/connect.js';
import { redact } from '../redact.js';
import { checkAzure } from './azureChecks.js';
import { checkBlob } from './blobChecks.js';
import { estimate } from './estimate.js';
import { checkSequences } from './sequenceChecks.js';
import { checkSkippedSchema } from './schemaChecks.js';
import { checkSourceServer, type SourceFacts } from './sourceChecks.js';
import { checkState } from './stateChecks.js';
import { databaseIdentity, type DatabaseIdentity, type Side } from '../pg/identity.js';
import { checkTarget } from './targetChecks.js';
import { checkSwitch } from './switchChecks.js';
import { CheckList, type PreflightReport } from './types.js';

export interface PreflightOptions {
  env: Env;
  connectTimeoutMs?: number;
  /** Transactions open longer than this are named as blocking slot creation. */
  longTransactionMs?: number;
  abortSignal?: AbortSignal;
}

export async function runPreflight(loaded: LoadedPlan, options: PreflightOptions): Promise<PreflightReport> {
  const { plan } = loaded;
  // Every secret the checks use, the switch's too: a missing one is named before anything connects (exit 2).
  const secrets = resolveSecrets(loaded, options.env, [
    'source',
    'target',
    'state',
    'blobConnectionString',
    'blobSas',
    'pgbouncerAdmin',
    'armTarget',
    'armSource',
  ]);
  const checks = new CheckList(secretTexts(secrets));
  const timeoutMs = options.connectTimeoutMs ?? 10_000;
  let unreachable = false;

  const open = async (role: Role, id: string, connectionString: string): Promise<pg.Client | null> => {
    try {
      return await connect({ role, connectionString, connectTimeoutMs: timeoutMs, readOnly: true, statementTimeoutMs: 30_000 });
    } catch (err) {
      if (!(err instanceof CloudshiftError)) throw err;
      unreachable = true;
      checks.fail(id, role, `${err.message}${err.hint ? ` (${err.hint})` : ''}`);
      return null;
    }
  };

  // A statement a group's checks could not run (a permission, a timeout, the server gone) fails
  // that group's check, named; the report keeps every other.
  const group = async <T>(id: string, subject: string, work: () => Promise<T>): Promise<T | null> => {
    try {
      return await work();
    } catch (err) {
      if (isConnectionLost(err)) unreachable = true;
      const code = (err as { code?: string }).code;
      checks.fail(
        id,
        subject,
        `${subject} checks stopped: ${redact(messageOf(err))}${code && /^[0-9A-Z]{5}$/.test(code) ? ` (SQLSTATE ${code})` : ''}`,
      );
      return null;
    }
  };

  let facts: SourceFacts | null = null;
  // Which databases the plan reaches, for a run in progress begun on others (state.run).
  const reached: Partial<Record<Side, DatabaseIdentity>> = {};
  const source = await open('source', 'source.connect', secrets.source);
  try {
    if (source) {
      facts = await group('source.checks', 'source', () => checkSourceServer(source, plan, checks, options.longTransactionMs ?? 60_000));
      await group('sequence.checks', 'source', () => checkSequences(source, plan, checks));
      // Only once the tables and sequences are there to read (their own checks say what is not).
      if (facts && !checks.checks.some((c) => c.status === 'fail' && /^(table|documents|sequence|source\.version)/.test(c.id)))
        await group('schema.skipped', 'source', () => checkSkippedSchema(source, facts!.versionNum, plan, checks));
      reached.source = (await group('source.checks', 'source', () => databaseIdentity(source))) ?? undefined;
    }
  } finally {
    await source?.end().catch(() => undefined);
  }

  const target = await open('target', 'target.connect', secrets.target);
  try {
    if (target) {
      await group('target.checks', 'target', () => checkTarget(target, plan, facts, checks));
      reached.target = (await group('target.checks', 'target', () => databaseIdentity(target))) ?? undefined;
    }
  } finally {
    await target?.end().catch(() => undefined);
  }

  const sameAsTarget = secrets.state === secrets.target;
  const state = sameAsTarget && !target ? null : await open('state store', 'state.connect', secrets.state);
  try {
    if (state) await group('state.store', 'state store', () => checkState(state, loaded, checks, reached));
    else if (sameAsTarget)
      checks.fail(
        'state.store',
        'state store',
        `the state store is in the target database${whereIs(secrets.target)}, which cannot be reached`,
      );
  } finally {
    await state?.end().catch(() => undefined);
  }

  try {
    if (!(await checkBlob(plan, secrets, checks, timeoutMs))) unreachable = true;
  } catch (err) {
    unreachable = true;
    checks.fail('blob.container', 'blob', redact((err as Error).message));
  }

  const estimated = estimate(facts?.tables.values() ?? []);
  if (plan.azure) {
    // Read-only ARM checks of the resource group, storage account and flexible server.
    const azureOptions = { env: options.env, targetConnectionString: secrets.target, timeoutMs: Math.max(30_000, timeoutMs * 3) };
    if (!(await checkAzure(plan, plan.azure, facts, estimated, checks, azureOptions))) unreachable = true;
  }

  if (!(await checkSwitch(loaded, options.env, checks, timeoutMs))) unreachable = true;

  const report: PreflightReport = {
    ok: checks.checks.every((c) => c.status !== 'fail'),
    checks: checks.checks,
    estimate: estimated,
    unreachable,
  };
  return report;
}

/** " (host:port/database)" of a connection string, or nothing when it cannot even be parsed (target.connect says why). */
function whereIs(connectionString: string): string {
  try {
    return ` (${describeEndpoint(endpointOf(connectionString))})`;
  } catch {
    return '';
  }
}
