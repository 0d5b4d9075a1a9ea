/**
 * Opening PostgreSQL connections for every role (source, target, state store). Invariants:
 * - a connection that reads or hashes row data has the session settings pinned (DESIGN.md), so
 *   text renderings are identical on both sides;
 * - connecting is bounded in time and fails with a ConnectError naming the role, host, port and
 *   database, never the password;
 * - row values are never parsed into JavaScript types: callers that read data use rawTypes;
 * - a connection string with `cloudshift_auth=entra` gets a fresh Microsoft Entra ID token as the
 *   password of each new connection (azure/pgToken.ts); the rest of the string, sslmode included,
 *   reaches the driver unchanged.
 */
import pg from 'pg';
import type { TokenCredential } from '../azure/credential.js';
import { pgConnectionString } from '../azure/pgToken.js';
import { ConnectError, messageOf } from '../errors.js';
import { redact } from '../redact.js';

export type Role = 'source' | 'target' | 'state store' | 'PgBouncer admin';

export const PINNED_SETTINGS: ReadonlyArray<readonly [string, string]> = [
  ['TimeZone', 'UTC'],
  ['DateStyle', 'ISO, YMD'],
  ['IntervalStyle', 'postgres'],
  ['extra_float_digits', '3'],
  ['bytea_output', 'hex'],
  ['client_encoding', 'UTF8'],
  // money's text form follows lc_monetary: pin it so both sides print and parse it alike.
  ['lc_monetary', 'C'],
  // Literals built here double their quotes and nothing else: a backslash must be just a backslash.
  ['standard_conforming_strings', 'on'],
];

/**
 * A server's idle timeouts do not apply to cloudshift's sessions: the snapshot holder waits idle
 * in its transaction for the whole copy (its snapshot dies with it), a batch's target transaction
 * waits idle while its documents upload, and the state store's session holds the run's lock.
 * idle_session_timeout is PostgreSQL 14's, so both are set only where they exist.
 */
const NO_IDLE_TIMEOUTS = `SELECT set_config(name, '0', false) FROM pg_settings WHERE name IN ('idle_in_transaction_session_timeout', 'idle_session_timeout')`;

/** Type parsers that keep every value as the server's text. */
export const rawTypes: pg.CustomTypesConfig = {
  getTypeParser: () => (value: string) => value,
} as pg.CustomTypesConfig;

export interface ConnectOptions {
  role: Role;
  /** Resolved connection string (may hold a password: never log it). */
  connectionString: string;
  connectTimeoutMs?: number;
  /** Sets default_transaction_read_only: the dry run writes nothing, by construction. */
  readOnly?: boolean;
  /** Statement timeout for this session, ms. */
  statementTimeoutMs?: number;
  applicationName?: string;
  /** Keep values as text (no JavaScript conversion). */
  raw?: boolean;
  /** More session settings, e.g. for the copy's sessions. */
  settings?: ReadonlyArray<readonly [string, string]>;
  /** Token source for `cloudshift_auth=entra`. Default: DefaultAzureCredential, one per process. */
  credential?: TokenCredential;
  /** A logical replication connection (walsender with a database). */
  replication?: boolean;
  /** No session settings at all (PgBouncer's admin console takes no SET). */
  plain?: boolean;
}

export interface Endpoint {
  host: string;
  port: number;
  database: string;
  user: string;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/**
 * TCP keepalives on every session: a batch's target transaction waits idle while its documents
 * upload, and a network path that forgets idle flows (Azure's load balancers after 4 minutes, a
 * NAT, a firewall) would otherwise leave its commit hanging on a connection that is gone.
 */
export const KEEPALIVE = { keepAlive: true, keepAliveInitialDelayMillis: 30_000 } as const;

/** Host, port, database and user a connection string points at (no secrets). */
export function endpointOf(connectionString: string, role?: Role): Endpoint {
  const c = clientFor({ connectionString }, role);
  const user = c.user ?? '';
  return { host: c.host, port: c.port, database: c.database ?? user, user };
}

/**
 * A client for the settings. Its constructor reads the files the connection string names
 * (sslrootcert, sslcert, sslkey) at once: one that cannot be read is said plainly, named.
 */
function clientFor(config: pg.ClientConfig, role?: Role): pg.Client {
  try {
    return new pg.Client(config);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (typeof e.path !== 'string') throw err;
    throw new ConnectError(
      `${role ? `the ${role} connection string` : 'a connection string'} names ${e.path}, which cannot be read (${e.code ?? 'error'})`,
      {
        hint: 'check the sslrootcert, sslcert and sslkey paths in the connection string',
        cause: err,
      },
    );
  }
}

export function describeEndpoint(e: Endpoint): string {
  return `${e.host}:${e.port}/${e.database}`;
}

export async function connect(options: ConnectOptions): Promise<pg.Client> {
  const timeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const { connectionString } = await pgConnectionString(options.connectionString, {
    credential: options.credential,
    abortSignal: AbortSignal.timeout(timeoutMs),
  });
  const endpoint = endpointOf(connectionString, options.role);
  const client = clientFor({
    connectionString,
    connectionTimeoutMillis: timeoutMs,
    ...KEEPALIVE,
    application_name: options.applicationName ?? 'cloudshift',
    ...(options.raw ? { types: rawTypes } : {}),
    ...(options.replication ? { replication: 'database' } : {}),
  } as pg.ClientConfig);
  // An idle connection that the server drops must not crash the process; the next query fails.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw connectError(options.role, endpoint, err);
  }
  if (options.plain) return client;
  const settings = [...PINNED_SETTINGS];
  if (options.readOnly) settings.push(['default_transaction_read_only', 'on']);
  if (options.statementTimeoutMs !== undefined) settings.push(['statement_timeout', String(options.statementTimeoutMs)]);
  settings.push(...(options.settings ?? []));
  try {
    await client.query(`${settings.map(([k, v]) => `SET ${k} = '${v}'`).join('; ')}; ${NO_IDLE_TIMEOUTS}`);
  } catch (err) {
    await client.end().catch(() => undefined);
    throw connectError(options.role, endpoint, err);
  }
  return client;
}

/** Turns a driver error into a message an operator can act on. */
export function connectError(role: Role, e: Endpoint, err: unknown): ConnectError {
  const where = `the ${role} database at ${e.host}:${e.port}`;
  const code = (err as { code?: string }).code;
  const msg = messageOf(err);
  let message: string;
  let hint: string;
  switch (code) {
    case 'ECONNREFUSED':
      message = `cannot connect to ${where}: connection refused`;
      hint = 'check the host and port, and that PostgreSQL is running and listening there';
      break;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      message = `cannot connect to ${where}: host name "${e.host}" does not resolve`;
      hint = 'check the host name in the connection string';
      break;
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      message = `cannot connect to ${where}: ${code === 'ETIMEDOUT' ? 'timed out' : 'host unreachable'}`;
      hint = 'check the network path and firewall rules to the server';
      break;
    case '28P01':
      message = `password authentication failed for user "${e.user}" on ${where}`;
      hint = 'check the password the plan refers to';
      break;
    case '28000':
      message = `${where} refused user "${e.user}": ${redact(msg)}`;
      hint = 'check pg_hba.conf on the server and the user name';
      break;
    case '3D000':
      message = `database "${e.database}" does not exist on ${e.host}:${e.port} (${role})`;
      hint = 'check the database name in the connection string';
      break;
    case '42501':
      message = `user "${e.user}" may not connect to ${where}: ${redact(msg)}`;
      hint = 'grant CONNECT on the database to this user';
      break;
    default:
      message = /timeout/i.test(msg) ? `cannot connect to ${where}: timed out` : `cannot connect to ${where}: ${redact(msg)}`;
      hint = 'check the connection string the plan refers to';
  }
  return new ConnectError(message, { cause: err, hint });
}

/** The server's version as a number (server_version_num: 150004 for 15.4). */
export async function serverVersion(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
  return Number(rows[0]!.v);
}
