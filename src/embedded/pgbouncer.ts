/**
 * A throw-away PgBouncer (Debian's `pgbouncer` package) in front of the local servers, for the
 * cutover tests, the benchmark and the demo.
 *
 * Invariants:
 * - loopback only, on a port the caller chose; transaction pooling unless told otherwise;
 * - the `[databases]` section lives in its own file, `%include`d by pgbouncer.ini: that is the
 *   file a plan's `cutover.switch.pgbouncer.config` names and cloudshift rewrites;
 * - never runs as root (PgBouncer refuses to): as root it runs as the `postgres` OS user, which
 *   owns the directory holding its files;
 * - passwords are in the auth file only (plain text: PgBouncer then logs in to the servers with
 *   SCRAM), never on a command line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { CleanupRegistry, unhandledSignals } from './cleanup.js';
import { ensurePostgresOsUser } from './postgres.js';
import {
  canConnect,
  exitOf,
  freePorts,
  hasExited,
  HOST,
  OutputTail,
  pollUntil,
  removeDirSync,
  settlesWithin,
  signalGroup,
} from './util.js';

const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
const CANDIDATES = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer', '/usr/local/sbin/pgbouncer'];

export const PGBOUNCER_MISSING = 'pgbouncer is not installed: `apt-get install -y pgbouncer` (Debian/Ubuntu) puts it in /usr/sbin';

/** Path of the pgbouncer binary, or null when it is not installed. */
export function findPgBouncer(): string | null {
  return CANDIDATES.find((p) => existsSync(p)) ?? null;
}

export interface PgBouncerDatabase {
  host: string;
  port: number;
  dbname: string;
}

export interface StartPgBouncerOptions {
  port: number;
  databases: Record<string, PgBouncerDatabase>;
  /** User name → password, for the auth file. The admin user is one of them. */
  users: Record<string, string>;
  adminUser: string;
  poolMode?: 'transaction' | 'session';
  /** Extra [pgbouncer] settings. */
  settings?: Record<string, string | number>;
  onLog?: (line: string) => void;
}

export interface StartedPgBouncer {
  host: string;
  port: number;
  /** The included file holding the `[databases]` section. */
  databasesFile: string;
  /** Connection string of a database through PgBouncer. */
  url(user: string, password: string, database: string): string;
  /** Stops and starts the process again with the same files (the databases file as it is now). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export function databaseLine(name: string, db: PgBouncerDatabase): string {
  return `${name} = host=${db.host} port=${db.port} dbname=${db.dbname}`;
}

export async function startPgBouncer(o: StartPgBouncerOptions): Promise<StartedPgBouncer> {
  const binary = findPgBouncer();
  if (!binary) throw new Error(PGBOUNCER_MISSING);
  const owner = process.getuid?.() === 0 ? await ensurePostgresOsUser() : undefined;
  // As the servers': a SIGTERM or SIGHUP (a closed terminal) stops it too, with its folder (and the passwords in it).
  const registry = new CleanupRegistry(unhandledSignals());
  const files = registry.scope();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cloudshift-pgbouncer-'));
  files.push({
    label: `pgbouncer: removing ${dir}`,
    run: () => rm(dir, { recursive: true, force: true, maxRetries: 3 }),
    onExit: () => removeDirSync(dir),
  });
  const ini = path.join(dir, 'pgbouncer.ini');
  const databasesFile = path.join(dir, 'databases.ini');
  const authFile = path.join(dir, 'userlist.txt');
  const quote = (s: string) => `"${s.replace(/"/g, '""')}"`;
  const settings = {
    listen_addr: HOST,
    listen_port: o.port,
    unix_socket_dir: '',
    auth_type: 'scram-sha-256',
    auth_file: authFile,
    admin_users: o.adminUser,
    pool_mode: o.poolMode ?? 'transaction',
    max_client_conn: 500,
    default_pool_size: 20,
    ignore_startup_parameters: 'extra_float_digits,options',
    logfile: '',
    pidfile: '',
    ...o.settings,
  };
  await writeFile(
    databasesFile,
    ['[databases]', ...Object.entries(o.databases).map(([name, db]) => databaseLine(name, db)), ''].join('\n'),
  );
  await writeFile(
    ini,
    [`%include ${databasesFile}`, '', '[pgbouncer]', ...Object.entries(settings).map(([k, v]) => `${k} = ${v}`), ''].join('\n'),
  );
  await writeFile(
    authFile,
    Object.entries(o.users)
      .map(([u, p]) => `${quote(u)} ${quote(p)}`)
      .join('\n') + '\n',
    { mode: 0o600 },
  );
  if (owner) {
    await chown(dir, owner.uid, owner.gid);
    for (const f of [ini, databasesFile, authFile]) await chown(f, owner.uid, owner.gid);
  }
  await chmod(dir, 0o700);

  let current: { child: ChildProcess; exited: Promise<void>; output: OutputTail } | null = null;
  const proc = registry.scope();
  proc.push({
    label: 'pgbouncer: stopping',
    run: () => stopProcess(),
    onExit: () => {
      if (current?.child.pid !== undefined && !hasExited(current.child)) signalGroup(current.child.pid, 'SIGKILL');
    },
  });

  const launch = async (): Promise<void> => {
    const output = new OutputTail('pgbouncer', o.onLog);
    const child = spawn(binary, [ini], {
      ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
      cwd: dir,
      detached: process.platform !== 'win32',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = exitOf(child);
    child.stdout?.on('data', (c: Buffer) => void output.write(c.toString('utf8')));
    child.stderr?.on('data', (c: Buffer) => void output.write(c.toString('utf8')));
    let spawnError: Error | undefined;
    child.once('error', (err) => {
      spawnError = err;
    });
    current = { child, exited, output };
    await pollUntil(
      async () => {
        if (spawnError) throw new Error(`pgbouncer: cannot run ${binary}: ${spawnError.message}`);
        if (hasExited(child)) throw new Error(`pgbouncer: exited during start-up (exit code ${child.exitCode ?? '?'})${output.tail()}`);
        return canConnect(o.port);
      },
      {
        timeoutMs: START_TIMEOUT_MS,
        intervalMs: 25,
        onTimeout: () => new Error(`pgbouncer: not accepting connections on ${HOST}:${o.port}${output.tail()}`),
      },
    );
  };

  const stopProcess = async (): Promise<void> => {
    const c = current;
    current = null;
    if (!c || c.child.pid === undefined || hasExited(c.child)) return;
    // SIGINT: "safe shutdown" would wait for clients; SIGTERM is immediate.
    c.child.kill('SIGTERM');
    if (await settlesWithin(c.exited, STOP_TIMEOUT_MS)) return;
    signalGroup(c.child.pid, 'SIGKILL');
    await settlesWithin(c.exited, STOP_TIMEOUT_MS);
  };

  try {
    await launch();
  } catch (err) {
    await registry.runAll();
    throw err;
  }
  return {
    host: HOST,
    port: o.port,
    databasesFile,
    url: (user, password, database) =>
      `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${HOST}:${o.port}/${encodeURIComponent(database)}`,
    restart: async () => {
      await stopProcess();
      await launch();
    },
    stop: async () => {
      const errors = await registry.runAll();
      if (errors.length > 0) throw errors[0]!;
    },
  };
}

export interface AppBouncerOptions {
  /** Superuser connection strings of the application's database on each server. */
  sourceUrl: string;
  targetUrl: string;
  /** The application's role: created (or its password set) on both servers. */
  appUser: string;
  appPassword: string;
  /** PgBouncer's database name for the application. */
  database?: string;
  settings?: Record<string, string | number>;
}

export interface AppBouncer {
  bouncer: StartedPgBouncer;
  appUrl: string;
  adminUrl: string;
  database: string;
  /** A plan's `cutover.switch.pgbouncer` for it, the admin URL as ${env:PGBOUNCER_ADMIN_URL}. */
  switchYaml: string;
}

/**
 * PgBouncer in front of the source database for an application role that exists, with the same
 * password, on both servers and may use every table (the target's through default privileges,
 * since cloudshift creates them later): what the demo, the benchmark and the tests run.
 */
export async function startAppBouncer(o: AppBouncerOptions): Promise<AppBouncer> {
  const user = `"${o.appUser.replace(/"/g, '""')}"`;
  const password = `'${o.appPassword.replace(/'/g, "''")}'`;
  const exec = async (url: string, text: string) => {
    const c = new pg.Client({ connectionString: url });
    c.on('error', () => undefined);
    await c.connect();
    try {
      await c.query(text);
    } finally {
      await c.end();
    }
  };
  for (const url of [o.sourceUrl, o.targetUrl]) {
    await exec(
      url,
      `DO $$ BEGIN
         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${`'${o.appUser.replace(/'/g, "''")}'`}) THEN CREATE ROLE ${user} LOGIN; END IF;
       END $$;
       ALTER ROLE ${user} PASSWORD ${password};
       GRANT USAGE, CREATE ON SCHEMA public TO ${user};
       GRANT ALL ON ALL TABLES IN SCHEMA public TO ${user};
       GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ${user};
       ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO ${user};
       ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO ${user}`,
    );
  }
  const source = new pg.Client({ connectionString: o.sourceUrl });
  const database = o.database ?? 'app';
  const [port] = await freePorts(1);
  const adminPassword = randomBytes(18).toString('base64url');
  const bouncer = await startPgBouncer({
    port: port!,
    databases: { [database]: { host: source.host, port: source.port, dbname: source.database ?? '' } },
    users: { [o.appUser]: o.appPassword, cloudshift_admin: adminPassword },
    adminUser: 'cloudshift_admin',
    settings: { query_wait_timeout: 60, ...o.settings },
  });
  return {
    bouncer,
    appUrl: bouncer.url(o.appUser, o.appPassword, database),
    adminUrl: bouncer.url('cloudshift_admin', adminPassword, 'pgbouncer'),
    database,
    switchYaml: `pgbouncer: { admin: "\${env:PGBOUNCER_ADMIN_URL}", database: ${database}, config: "${bouncer.databasesFile}" }`,
  };
}
