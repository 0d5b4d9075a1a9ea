/**
 * The target schema must match the source as pg_dump sees it. The installed pg_dump (Debian's
 * postgresql-client, version 15) refuses a PostgreSQL 17 server, so the schema is replayed onto
 * a fresh database on the source server and both are dumped by the same pg_dump: the dumps must
 * be identical apart from ownership. The catalog comparison against PostgreSQL 17 itself is in
 * schemaReplay.test.ts and copy.test.ts.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyFinal, applyPostData, applyPreData, readSourceSchema } from '../../src/target/postgres/schema/index.js';
import { connectionUrl, freshDatabases, sql, withClient, type FreshDatabases } from '../harness/db.js';
import { HOSPITAL_SQL } from '../harness/scenario.js';
import pg from 'pg';

const ALLTYPES_SQL = readFileSync(new URL('../fixtures/alltypes.sql', import.meta.url), 'utf8');

function pgDump(): string | null {
  try {
    return execFileSync('sh', ['-c', 'command -v pg_dump'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

const dumpBin = pgDump();
if (!dumpBin && process.env.CI === 'true') throw new Error('pg_dump is required in CI (.ci/run installs postgresql-client)');

let original: FreshDatabases;
let replica: FreshDatabases;

beforeAll(async () => {
  original = await freshDatabases('dumpsrc');
  replica = await freshDatabases('dumpdst');
  await sql('source', original.source, HOSPITAL_SQL);
  await sql('source', original.source, ALLTYPES_SQL);
  await sql(
    'source',
    original.source,
    `CREATE VIEW public.open_encounters AS SELECT e.id, p.family_name FROM public.encounters e JOIN public.patients p ON p.id = e.patient_id WHERE e.ended_at IS NULL;
     CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.created_at := now(); RETURN NEW; END $$;
     CREATE TRIGGER patients_touch BEFORE UPDATE ON public.patients FOR EACH ROW EXECUTE FUNCTION public.touch();
     CREATE UNIQUE INDEX medications_drug_lower ON public.medications (patient_id, prescribed_at, (lower(drug))) WHERE dose IS NOT NULL;`,
  );
});
afterAll(async () => {
  await original.drop();
  await replica.drop();
});

function dump(database: string): string {
  const text = execFileSync(dumpBin!, ['--schema-only', '--no-owner', '--no-privileges', connectionUrl('source', database)], {
    encoding: 'utf8',
  });
  return text
    .split('\n')
    .filter((l) => !l.startsWith('-- Dumped') && !l.startsWith('\\restrict') && !l.startsWith('\\unrestrict'))
    .join('\n');
}

describe.runIf(dumpBin !== null)('pg_dump --schema-only', () => {
  it('shows no difference between the source and the replayed schema beyond ownership', async () => {
    const tables = ['patients', 'encounters', 'observations', 'medications', 'documents', 'alltypes', 'audit_log', 'wards', 'devices'].map(
      (name) => ({
        name: { schema: 'public', name },
        omitColumns: [],
        addColumns: [],
      }),
    );
    const schema = await withClient('source', original.source, (c) => readSourceSchema(c, tables));
    await withClient('source', replica.source, async (c) => {
      await applyPreData(c, schema);
      await applyPostData(
        async () => {
          const client = new pg.Client({ connectionString: connectionUrl('source', replica.source) });
          await client.connect();
          return client;
        },
        schema,
        { jobs: 2 },
      );
      await applyFinal(c, schema);
    });
    expect(dump(replica.source)).toBe(dump(original.source));
  });
});
