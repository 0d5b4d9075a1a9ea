/**
 * Microsoft Entra ID authentication to Azure Database for PostgreSQL. A connection string asks
 * for it with cloudshift's own parameter `cloudshift_auth=entra` (removed before the driver sees
 * the string) and names the Entra user, without a password:
 *
 *   postgres://cloudshift-mi@ehr.postgres.database.azure.com/ehr?sslmode=verify-full&cloudshift_auth=entra
 *
 * Invariants: every new connection asks the credential for a token, so a run longer than a
 * token's life keeps connecting (@azure/identity returns its cached token until it is due for
 * refresh); the token is used only as that connection's password and never logged (messages
 * pass through redact(), which masks URL passwords); everything else in the string, sslmode
 * included, reaches the driver unchanged.
 */
import { CredentialUnavailableError } from '@azure/identity';
import pg from 'pg';
import { UsageError } from '../errors.js';
import { createAzureCredential, type AccessToken, type TokenCredential } from './credential.js';
import { azureError } from './errors.js';

/** The token audience of Azure Database for PostgreSQL (and MySQL). */
export const PG_TOKEN_SCOPE = 'https://ossrdbms-aad.database.windows.net/.default';

export const AUTH_PARAMETER = 'cloudshift_auth';
const AUTH_VALUES = ['entra', 'password'] as const;
export type PgAuthKind = (typeof AUTH_VALUES)[number];

const PARAM = new RegExp(`([?&])${AUTH_PARAMETER}=([^&#]*)&?`);

export interface PgAuth {
  kind: PgAuthKind;
  /** The connection string without cloudshift's parameter. */
  connectionString: string;
}

/** Reads (and removes) `cloudshift_auth`; default `password`, i.e. whatever the string holds. */
export function pgAuthOf(connectionString: string): PgAuth {
  const m = PARAM.exec(connectionString);
  if (!m) return { kind: 'password', connectionString };
  const value = decodeURIComponent(m[2]!);
  if (!(AUTH_VALUES as readonly string[]).includes(value)) {
    throw new UsageError(`${AUTH_PARAMETER} must be "entra" or "password", got "${value}"`, {
      hint: `use ${AUTH_PARAMETER}=entra for Microsoft Entra ID token authentication to Azure Database for PostgreSQL`,
    });
  }
  const stripped = connectionString.replace(PARAM, (_all, sep: string) => sep).replace(/[?&]$/, '');
  return { kind: value as PgAuthKind, connectionString: stripped };
}

const USERINFO = /^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*)@/i;

/** Puts `password` into a URL connection string that names a user and holds no password. */
export function withPassword(connectionString: string, password: string): string {
  const m = USERINFO.exec(connectionString);
  if (!m || m[2] === '') {
    throw new UsageError(`with ${AUTH_PARAMETER}=entra the connection string must be a URL naming the Entra ID user`, {
      hint: 'e.g. postgres://cloudshift-mi@server.postgres.database.azure.com/ehr?sslmode=verify-full&cloudshift_auth=entra',
    });
  }
  if (m[2]!.includes(':')) {
    throw new UsageError(`with ${AUTH_PARAMETER}=entra the connection string must not hold a password: the token is the password`, {
      hint: 'remove the password from the connection string',
    });
  }
  return `${m[1]}${m[2]}:${encodeURIComponent(password)}@${connectionString.slice(m[0].length)}`;
}

let processCredential: TokenCredential | undefined;

/** One credential per process, so its token cache is shared by every connection. */
export function defaultPgCredential(): TokenCredential {
  processCredential ??= createAzureCredential({ env: process.env });
  return processCredential;
}

export interface PgToken {
  /** The connection string to hand to the driver. */
  connectionString: string;
  /** When to ask for a new token (ms since the epoch); undefined without Entra ID. */
  refreshAt: number | undefined;
}

/**
 * The connection string for one new connection: unchanged with password authentication, with a
 * token as the password with Entra ID.
 */
export async function pgConnectionString(
  connectionString: string,
  options: { credential?: TokenCredential | undefined; abortSignal?: AbortSignal | undefined } = {},
): Promise<PgToken> {
  const auth = pgAuthOf(connectionString);
  if (auth.kind === 'password') return { connectionString: auth.connectionString, refreshAt: undefined };
  withPassword(auth.connectionString, ''); // refuse a bad string before asking for a token
  const token = await entraToken(options.credential, options.abortSignal);
  return { connectionString: withPassword(auth.connectionString, token.token), refreshAt: refreshTime(token, Date.now()) };
}

async function entraToken(credential: TokenCredential | undefined, abortSignal?: AbortSignal): Promise<AccessToken> {
  const doing = 'getting a Microsoft Entra ID token for Azure Database for PostgreSQL';
  let token: AccessToken | null;
  try {
    token = await (credential ?? defaultPgCredential()).getToken(PG_TOKEN_SCOPE, abortSignal ? { abortSignal } : {});
  } catch (err) {
    throw azureError(err, doing, 'Microsoft Entra ID');
  }
  if (!token) throw azureError(new CredentialUnavailableError('the credential returned no token'), doing, 'Microsoft Entra ID');
  return token;
}

/**
 * When a pool should fetch a new token: the credential's own refresh time, else five minutes
 * before expiry or halfway through a shorter life; never in the past (a pool that refreshes
 * must see a fresh token as fresh).
 */
export function refreshTime(token: AccessToken, now: number): number {
  const life = token.expiresOnTimestamp - now;
  const due = token.refreshAfterTimestamp ?? token.expiresOnTimestamp - Math.min(5 * 60_000, Math.max(0, life / 2));
  return Math.max(now + 1_000, due);
}

/**
 * Settings for a pg.Pool: unchanged with password authentication; with Entra ID, clients whose
 * password is a function, which pg calls as each new connection signs in, so each gets a token
 * valid at that moment.
 */
export function pgPoolConfig<T extends pg.PoolConfig>(connectionString: string, extra: T, credential?: TokenCredential): T & pg.PoolConfig {
  const auth = pgAuthOf(connectionString);
  if (auth.kind === 'password') return { ...extra, connectionString };
  withPassword(auth.connectionString, ''); // refuse a bad string now, not at the first connection
  const password = async (): Promise<string> => (await entraToken(credential)).token;
  class EntraClient extends pg.Client {
    constructor(config?: string | pg.ClientConfig) {
      super(config);
      Object.defineProperty(this, 'password', { configurable: true, writable: true, enumerable: false, value: password });
    }
  }
  return { ...extra, connectionString: auth.connectionString, Client: EntraClient };
}
