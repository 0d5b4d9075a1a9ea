/**
 * The dry run's checks of the cutover switch, read-only: for PgBouncer, the databases file holds
 * the entry and cloudshift may rewrite it, the admin console answers, routes the database to the
 * source, pools by transaction, and lets clients wait longer than the pause budget; for ARM, the
 * resource can be read and its property holds the source's value (values are never printed).
 */
import { access, constants } from 'node:fs/promises';
import path from 'node:path';
import type { LoadedPlan } from '../plan/parse.js';
import { resolveSecrets, type Env } from '../plan/secrets.js';
import { CloudshiftError, ConnectError, messageOf } from '../errors.js';
import { AzureError } from '../azure/errors.js';
import { redact } from '../redact.js';
import { openSwitch, routesOf } from '../cutover/appSwitch.js';
import { readRoute, sameRoute } from '../cutover/databasesIni.js';
import { PgBouncerAdmin } from '../cutover/pgbouncerAdmin.js';
import type { CheckList } from './types.js';

/**
 * Returns false when the switch's service could not be reached (the dry run then exits 3, as for
 * a server). Its secrets are resolved with the others before anything connects (a missing one
 * is a usage error).
 */
export async function checkSwitch(loaded: LoadedPlan, env: Env, checks: CheckList, connectTimeoutMs: number): Promise<boolean> {
  const sw = loaded.plan.cutover.switch;
  if (!sw) return true;
  const secrets = resolveSecrets(loaded, env, ['source', 'target', 'pgbouncerAdmin', 'armTarget', 'armSource']);
  const routes = routesOf(secrets);
  const source = `${routes.source.host}:${routes.source.port}/${routes.source.dbname}`;
  if (sw.kind === 'command') {
    checks.pass('switch.command', 'cutover switch', `cutover runs \`${sw.run}\` with CLOUDSHIFT_SIDE=target (not run by the dry run)`);
    return true;
  }
  if (sw.kind === 'pgbouncer') {
    const file = path.resolve(loaded.dir, sw.config);
    try {
      const route = await readRoute(file, sw.database);
      await access(file, constants.R_OK | constants.W_OK);
      await access(path.dirname(file), constants.W_OK);
      const where = `${route.host}:${route.port}/${route.dbname}`;
      if (sameRoute(route, routes.source))
        checks.pass(
          'switch.pgbouncer.config',
          file,
          `the entry for "${sw.database}" routes to the source (${where}); cloudshift can rewrite it`,
        );
      else if (sameRoute(route, routes.target))
        checks.warn('switch.pgbouncer.config', file, `the entry for "${sw.database}" already routes to the target (${where})`);
      else
        checks.warn(
          'switch.pgbouncer.config',
          file,
          `the entry for "${sw.database}" routes to ${where}, not to the plan's source (${source})`,
        );
    } catch (err) {
      checks.fail(
        'switch.pgbouncer.config',
        file,
        err instanceof CloudshiftError ? err.message : `${file}: ${messageOf(err)} (cloudshift must be able to read and rewrite it)`,
      );
    }
    let admin: PgBouncerAdmin | null = null;
    try {
      admin = await PgBouncerAdmin.open(secrets.pgbouncerAdmin!, connectTimeoutMs);
      const route = await admin.route(sw.database);
      if (!route) {
        checks.fail('switch.pgbouncer.admin', 'PgBouncer', `PgBouncer has no database "${sw.database}" (SHOW DATABASES)`);
        return true;
      }
      const config = await admin.config();
      const mode = config.get('pool_mode') ?? '?';
      const waitS = Number(config.get('query_wait_timeout') ?? '0');
      const budgetMs = loaded.plan.cutover.maxPauseMs;
      const problems = [
        ...(mode !== 'transaction'
          ? [`pool_mode is ${mode}: PAUSE waits for clients to disconnect, so cutover will likely abort; use transaction pooling`]
          : []),
        ...(waitS > 0 && waitS * 1000 < budgetMs * 2
          ? [`query_wait_timeout (${waitS} s) is not well above cutover.maxPause (${budgetMs} ms): waiting clients could be dropped`]
          : []),
      ];
      const base = `the admin console answers; "${sw.database}" goes to ${route.host}:${route.port}/${route.dbname}, pool_mode ${mode}`;
      if (problems.length) checks.warn('switch.pgbouncer.admin', 'PgBouncer', `${base}; ${problems.join('; ')}`);
      else checks.pass('switch.pgbouncer.admin', 'PgBouncer', base);
    } catch (err) {
      checks.fail('switch.pgbouncer.admin', 'PgBouncer', redact(err instanceof CloudshiftError ? err.message : messageOf(err)));
      return !(err instanceof ConnectError);
    } finally {
      await admin?.close();
    }
    return true;
  }
  try {
    const app = await openSwitch(sw, { routes, secrets, azure: loaded.plan.azure, env });
    const side = await app.current();
    const what = `${sw.property} of ${sw.resource}`;
    if (side === 'source') checks.pass('switch.arm', 'cutover switch', `${what} holds the source's value`);
    else if (side === 'target') checks.warn('switch.arm', 'cutover switch', `${what} already holds the target's value`);
    else
      checks.fail(
        'switch.arm',
        'cutover switch',
        `${what} holds neither the plan's source nor its target value (not shown): cutover would refuse to write the resource back`,
      );
  } catch (err) {
    checks.fail('switch.arm', 'cutover switch', err instanceof CloudshiftError ? err.message : messageOf(err));
    return !(err instanceof AzureError && err.failure === 'unreachable');
  }
  return true;
}
