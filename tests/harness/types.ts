/**
 * Shared types of the integration test harness.
 *
 * `tests/harness/globalSetup.ts` starts the servers once per `vitest run` and
 * hands a {@link HarnessInfo} to the test workers with `provide('harness', …)`;
 * test files read it back with `inject('harness')` (see `tests/harness/db.ts`).
 * Everything in here must stay JSON-serialisable: it crosses process
 * boundaries.
 */

/** Connection details of one PostgreSQL server started by the harness. */
export interface PgServerInfo {
  host: string;
  port: number;
  user: string;
  password: string;
  /** Major version of the server. */
  version: number;
}

export interface AzuriteInfo {
  /** e.g. `http://127.0.0.1:41234/devstoreaccount1` */
  blobEndpoint: string;
  /** Connection string for the published Azurite development account. */
  connectionString: string;
}

export interface HarnessInfo {
  /** The on-premises side: PostgreSQL 15 with `wal_level=logical`. */
  source: PgServerInfo & { version: 15 };
  /** The Azure side: PostgreSQL 17. */
  target: PgServerInfo & { version: 17 };
  azurite: AzuriteInfo;
  /** An application role with the same name and password on both servers (what PgBouncer logs in with). */
  app: { user: string; password: string };
}

export type Side = 'source' | 'target';

/** Empty databases created by global setup; test files clone them. */
export const TEMPLATE_DATABASES = {
  source: 'cs_template_source',
  target: 'cs_template_target',
} as const satisfies Record<Side, string>;

declare module 'vitest' {
  export interface ProvidedContext {
    harness: HarnessInfo;
  }
}
