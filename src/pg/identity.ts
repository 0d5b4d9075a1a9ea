/**
 * Which database a connection reaches, as far as a resumed run must tell: the server's system
 * identifier (made by initdb: another server, or a copy restored from a dump, has another; a
 * physical standby shares its primary's) and the database's name. No host, user or secret: it
 * is recorded in the state store and printed.
 */
import type pg from 'pg';

export interface DatabaseIdentity {
  /** pg_control_system().system_identifier; null where the server does not let this role read it. */
  system: string | null;
  database: string;
}

/** The two sides of a migration. */
export const SIDES = ['source', 'target'] as const;
export type Side = (typeof SIDES)[number];

/** insufficient_privilege, undefined_function, feature_not_supported. */
const UNREADABLE = ['42501', '42883', '0A000'];

export async function databaseIdentity(client: pg.Client): Promise<DatabaseIdentity> {
  const { rows } = await client.query<{ database: string }>('SELECT current_database() AS database');
  let system: string | null = null;
  try {
    const r = await client.query<{ system: string }>('SELECT system_identifier::text AS system FROM pg_control_system()');
    system = r.rows[0]?.system ?? null;
  } catch (err) {
    // A managed server may keep pg_control_system() from this role, or a PostgreSQL-compatible
    // service lack it: the name alone then. Anything else (a timeout, a lost connection) is an error.
    if (!UNREADABLE.includes((err as { code?: string }).code ?? '')) throw err;
  }
  return { system, database: rows[0]!.database };
}

/** Equal where both are known: the name, and the system identifier when both sides have one. */
export function sameDatabase(a: DatabaseIdentity, b: DatabaseIdentity): boolean {
  return a.database === b.database && (a.system === null || b.system === null || a.system === b.system);
}

export function describeDatabase(i: DatabaseIdentity): string {
  return `database "${i.database}"${i.system === null ? '' : ` of server ${i.system}`}`;
}

/** The sides that reach another database now than when a run began, each described. */
export function movedSides(
  began: Partial<Record<Side, DatabaseIdentity>>,
  now: Partial<Record<Side, DatabaseIdentity>>,
): Array<{ side: Side; change: string }> {
  return SIDES.flatMap((side) => {
    const [was, is] = [began[side], now[side]];
    return was && is && !sameDatabase(was, is)
      ? [{ side, change: `the ${side} is ${describeDatabase(is)}, not ${describeDatabase(was)}` }]
      : [];
  });
}
