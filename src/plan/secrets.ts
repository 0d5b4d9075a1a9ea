/**
 * Resolves the plan's secret-bearing values at the moment they are needed. Every missing
 * variable or unreadable file is reported at once, by name, never by value.
 */
import { CloudshiftError, UsageError } from '../errors.js';
import type { PlanValue } from './defaults.js';
import type { LoadedPlan } from './parse.js';
import { resolveReferences } from './refs.js';

export type Env = Record<string, string | undefined>;

export interface Secrets {
  source: string;
  target: string;
  state: string;
  blobConnectionString: string | undefined;
  blobSas: string | undefined;
  pgbouncerAdmin: string | undefined;
}

export function resolveSecrets(loaded: LoadedPlan, env: Env): Secrets {
  const errors: CloudshiftError[] = [];
  const resolve = (v: PlanValue | undefined): string | undefined => {
    if (!v) return undefined;
    try {
      return resolveReferences(v.raw, { env, baseDir: loaded.dir, where: v.where });
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
  const out = {
    source: resolve(plan.source.postgres),
    target: resolve(plan.target.postgres),
    state: resolve(plan.state.postgres),
    blobConnectionString: resolve(plan.target.blob?.connectionString),
    blobSas: resolve(plan.target.blob?.sas),
    pgbouncerAdmin: resolve(sw?.kind === 'pgbouncer' ? sw.admin : undefined),
  };
  if (errors.length > 0) {
    const unique = [...new Set(errors.map((e) => e.message))];
    throw new UsageError(unique.join('\n'), { cause: errors[0], hint: errors[0]!.hint ?? '' });
  }
  return out as Secrets;
}
