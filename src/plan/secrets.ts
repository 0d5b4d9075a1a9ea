/**
 * Resolves the plan's secret-bearing values at the moment they are needed. Every missing
 * variable or unreadable file is reported at once, by name, never by value.
 */
import { CloudshiftError, UsageError } from '../errors.js';
import type { PlanValue } from './defaults.js';
import type { LoadedPlan } from './parse.js';
import { resolvePostgres } from './pgUrl.js';
import { resolveReferences } from './refs.js';

export type Env = Record<string, string | undefined>;

export interface Secrets {
  source: string;
  target: string;
  state: string;
  blobConnectionString: string | undefined;
  blobSas: string | undefined;
  pgbouncerAdmin: string | undefined;
  /** The ARM switch's two values (they may hold a connection string). */
  armTarget: string | undefined;
  armSource: string | undefined;
}

export type SecretName = keyof Secrets;

/** The values that are PostgreSQL connection strings: resolved as URLs (see pgUrl.ts). */
const POSTGRES = new Set<SecretName>(['source', 'target', 'state', 'pgbouncerAdmin']);

/** Resolves the named secrets (default: all); the others stay undefined and unread. */
export function resolveSecrets(loaded: LoadedPlan, env: Env, names?: readonly SecretName[]): Secrets {
  const wanted = (name: SecretName) => names === undefined || names.includes(name);
  const errors: CloudshiftError[] = [];
  const resolve = (v: PlanValue | undefined, postgres: boolean): string | undefined => {
    if (!v) return undefined;
    try {
      const ctx = { env, baseDir: loaded.dir, where: v.where };
      return postgres ? resolvePostgres(v.raw, ctx) : resolveReferences(v.raw, ctx);
    } catch (err) {
      if (err instanceof CloudshiftError) {
        errors.push(err);
        return undefined;
      }
      throw err;
    }
  };
  const { plan } = loaded;
  const sw = plan.cutover.switch;
  const values: Record<SecretName, PlanValue | undefined> = {
    source: plan.source.postgres,
    target: plan.target.postgres,
    state: plan.state.postgres,
    blobConnectionString: plan.target.blob?.connectionString,
    blobSas: plan.target.blob?.sas,
    pgbouncerAdmin: sw?.kind === 'pgbouncer' ? sw.admin : undefined,
    armTarget: sw?.kind === 'arm' ? sw.target : undefined,
    armSource: sw?.kind === 'arm' ? sw.source : undefined,
  };
  const out = Object.fromEntries(
    Object.entries(values).map(([name, v]) => [
      name,
      wanted(name as SecretName) ? resolve(v, POSTGRES.has(name as SecretName)) : undefined,
    ]),
  );
  if (errors.length > 0) {
    const unique = [...new Set(errors.map((e) => e.message))];
    throw new UsageError(unique.join('\n'), { cause: errors[0], hint: errors[0]!.hint ?? '' });
  }
  return out as unknown as Secrets;
}

/** Every resolved value, and each connection URL's password alone: what no message may quote. */
export function secretTexts(secrets: Secrets): string[] {
  const values = Object.values(secrets).filter((v): v is string => v !== undefined);
  const passwords = values.flatMap((v) => {
    try {
      const p = new URL(v).password;
      return p ? [p, decodeURIComponent(p)] : [];
    } catch {
      return [];
    }
  });
  return [...values, ...passwords];
}
