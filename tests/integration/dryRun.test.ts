import { BlobServiceClient } from '@azure/storage-blob';
import { execFile } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from '../harness/cli.js';
import { connectionUrl, harness, sql } from '../harness/db.js';
import { HOSPITAL_PLAN, HOSPITAL_SQL, hospitalScenario, type Scenario } from '../harness/scenario.js';

let s: Scenario;

beforeAll(async () => {
  s = await hospitalScenario('dryrun');
});
afterAll(async () => s.drop());

interface Report {
  ok: boolean;
  checks: Array<{ id: string; status: string; message: string; subject: string }>;
  estimate: { rows: number; bytes: number; seconds: number };
}

async function dryRun(planText: string, env: Record<string, string> = s.env, extra: string[] = []) {
  const r = await cli(['dry-run', s.plan(planText), '--format', 'json', ...extra], env);
  return { ...r, report: r.stdout ? (JSON.parse(r.stdout) as Report) : undefined };
}

function check(report: Report | undefined, id: string, subject?: string) {
  const found = report?.checks.filter((c) => c.id === id && (subject === undefined || c.subject === subject)) ?? [];
  expect(found, `check ${id} ${subject ?? ''}`).toHaveLength(1);
  return found[0]!;
}

/** A source database of this test's own (`options` for CREATE DATABASE), with `schema` loaded; dropped after `body`. */
async function withSourceDatabase(tag: string, options: string, schema: string, body: (env: Record<string, string>) => Promise<void>) {
  const db = `cs_${tag}_${process.pid}`;
  await sql('source', 'postgres', `CREATE DATABASE ${db} ${options} TEMPLATE template0`);
  try {
    await sql('source', db, schema);
    await body({ ...s.env, SOURCE_DATABASE_URL: connectionUrl('source', db) });
  } finally {
    await sql('source', 'postgres', `DROP DATABASE ${db} WITH (FORCE)`);
  }
}

/** A plan copying `tables` once, without documents or live sync. */
function tablesPlan(tables: string[], extra = ''): string {
  return `version: 1
name: tables
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
${tables.map((t) => `  - name: ${t}\n`).join('')}${extra}`;
}

/** `cloudshift run` refuses the plan (exit 3) before writing anything to the target. */
async function expectRunRefused(plan: string, env: Record<string, string>, error: string) {
  const run = await cli(['run', s.plan(plan, 'refused.yaml')], env);
  expect(run.code).toBe(3);
  expect(run.stderr).toContain(error);
  const [tables] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'`);
  expect(tables!.n).toBe('0');
}

/**
 * Everything a dry run could conceivably create, on every side: in this scenario's databases and
 * its container (other test files create slots and containers of their own meanwhile).
 */
async function snapshot() {
  const catalog = `SELECT
      (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace) AS schemas,
      (SELECT string_agg(oid::regclass::text, ',' ORDER BY oid) FROM pg_class WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) AND relnamespace::regnamespace::text NOT LIKE 'pg_toast%') AS relations,
      (SELECT string_agg(slot_name, ',') FROM pg_replication_slots WHERE database = current_database()) AS slots,
      (SELECT string_agg(pubname, ',') FROM pg_publication) AS publications,
      (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects`;
  const container = BlobServiceClient.fromConnectionString(harness().azurite.connectionString).getContainerClient(s.container);
  return {
    source: await sql('source', s.dbs.source, catalog),
    target: await sql('target', s.dbs.target, catalog),
    container: await container.exists(),
  };
}

describe('cloudshift dry-run', () => {
  it('passes on a good plan, reports every check, and estimates from statistics', async () => {
    const { code, report } = await dryRun(HOSPITAL_PLAN);
    expect(report?.checks.filter((c) => c.status === 'fail')).toEqual([]);
    expect(code).toBe(0);
    expect(report?.ok).toBe(true);
    expect(check(report, 'source.wal_level').status).toBe('pass');
    expect(check(report, 'source.replication_privilege').status).toBe('pass');
    expect(check(report, 'table.key', 'public.medications').message).toBe('primary key (patient_id, prescribed_at, drug)');
    expect(check(report, 'table.generated', 'public.observations').message).toContain('bmi');
    expect(check(report, 'documents.content').message).toBe('content column is bytea');
    expect(check(report, 'documents.unique_names').message).toBe('blob names are unique: the template includes the primary key (id)');
    expect(check(report, 'target.table', 'public.patients').message).toBe('absent on the target: cloudshift run will create it');
    expect(check(report, 'target.version').message).toBe('PostgreSQL 17 on the target, 15 on the source');
    expect(check(report, 'blob.container').status).toBe('pass');
    expect(check(report, 'state.store').message).toBe('reachable; schema cloudshift will be created by cloudshift run');
    expect(check(report, 'schema.skipped').status).toBe('pass');
    // The fixture holds 200 + 600 + 3000 + 800 rows in the planned tables, plus 100 documents.
    expect(report?.estimate.rows).toBe(4700);
    expect(report?.estimate.bytes).toBeGreaterThan(0);
  });

  it('names the schema objects the replay leaves out, as run does (warning and event) before it writes the schema', async () => {
    const plan = tablesPlan(['public.encounters']);
    const { code, report } = await dryRun(plan);
    expect(code).toBe(0);
    const line =
      'foreign key encounters_patient_id_fkey on public.encounters is not replayed on the target: the referenced table is not migrated';
    expect(check(report, 'schema.skipped')).toMatchObject({
      status: 'warn',
      message: line,
    });
    const other = await hospitalScenario('skipped');
    try {
      const run = await cli(['run', other.plan(plan)], other.env);
      expect(run.code).toBe(0);
      expect(run.stderr).toBe('');
      expect(run.stdout).toContain(`warning: ${line}\n`);
      const events = await sql<{ message: string }>(
        'target',
        other.dbs.target,
        `SELECT message FROM cloudshift.events WHERE kind = 'schema:skipped'`,
      );
      expect(events).toEqual([{ message: line }]);
    } finally {
      await other.drop();
    }
  });

  it('is strictly read-only: creates nothing on any side', async () => {
    const before = await snapshot();
    expect(before.container).toBe(false); // the run would create it; the dry run must not
    const { report } = await dryRun(HOSPITAL_PLAN);
    expect(report?.ok).toBe(true);
    expect(await snapshot()).toEqual(before);
  });

  it('names missing tables, placeholders and bad content columns, exit 1; run refuses a bad content column, exit 3', async () => {
    const plan = HOSPITAL_PLAN.replace('public.medications', 'public.prescriptions')
      .replace('content: content', 'content: filename')
      .replace('{mime_type}', '{mimetype}');
    const { code, report } = await dryRun(plan);
    expect(code).toBe(1);
    expect(report?.ok).toBe(false);
    expect(check(report, 'table.exists', 'public.prescriptions').message).toBe(
      'table public.prescriptions does not exist on the source (plan tables[3])',
    );
    expect(check(report, 'documents.content').message).toBe(
      'column "filename" is text; a documents column must be bytea or oid (a large object) (documents[0].content)',
    );
    expect(check(report, 'documents.placeholders').message).toBe(
      '{filename} in documents[0].blob is the content column; {mimetype} in documents[0].contentType is not a column of public.documents',
    );
    // run refuses the content column too, before anything is written.
    const textContent = HOSPITAL_PLAN.replace('name: hospital', 'name: textcontent').replace('content: content', 'content: mime_type');
    const run = await cli(['run', s.plan(textContent)], s.env);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain(
      'error: column "mime_type" of public.documents is text: a documents column must be bytea or oid (documents[0].content); nothing was copied',
    );
    const [batches] = await sql<{ n: string }>(
      'target',
      s.dbs.target,
      `SELECT count(*) AS n FROM cloudshift.batches b JOIN cloudshift.runs r ON r.id = b.run_id WHERE r.plan_name = 'textcontent'`,
    );
    expect(batches!.n).toBe('0');
  });

  it('refuses a placeholder naming a generated column (the copy has no value for it), in the dry run and in run', async () => {
    await sql(
      'source',
      s.dbs.source,
      `ALTER TABLE public.documents ADD COLUMN ext text GENERATED ALWAYS AS (split_part(filename, '.', 2)) STORED`,
    );
    try {
      const plan = HOSPITAL_PLAN.replace('name: hospital', 'name: genext').replace('{id}-{filename}', '{id}.{ext}');
      const { code, report } = await dryRun(plan);
      expect(code).toBe(1);
      const problem = '{ext} in documents[0].blob is a generated column, whose value is not copied: name the columns it is computed from';
      expect(check(report, 'documents.placeholders').message).toBe(problem);
      const run = await cli(['run', s.plan(plan)], s.env);
      expect(run.code).toBe(3);
      expect(run.stderr).toContain(`error: public.documents: ${problem}; nothing was copied`);
    } finally {
      await sql('source', s.dbs.source, 'ALTER TABLE public.documents DROP COLUMN ext');
    }
  });

  it('refuses a blob template that can give two rows the same name, in the dry run and in run, before anything is written', async () => {
    const plan = HOSPITAL_PLAN.replace('name: hospital', 'name: samename').replace('{id}-{filename}', '{filename}');
    const { code, report } = await dryRun(plan);
    expect(code).toBe(1);
    const problem =
      'the blob template "patients/{patient_id}/{filename}" can give two rows the same name: include every column of a unique key such as {id} (documents[0].blob)';
    expect(check(report, 'documents.unique_names').message).toBe(problem);
    const run = await cli(['run', s.plan(plan)], s.env);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain(`error: public.documents: ${problem}; nothing was copied`);
    const batches = await sql<{ n: string }>(
      'target',
      s.dbs.target,
      `SELECT count(*) AS n FROM cloudshift.batches b JOIN cloudshift.runs r ON r.id = b.run_id WHERE r.plan_name = 'samename'`,
    );
    expect(batches[0]!.n).toBe('0');
  });

  it('warns about a sequence no table owns or uses, which only `sequences` carries; fails on a listed one the source lacks', async () => {
    await sql('source', s.dbs.source, `CREATE SEQUENCE public.mrn_seq START 5000; SELECT nextval('public.mrn_seq')`);
    try {
      const unlisted = await dryRun(HOSPITAL_PLAN);
      expect(unlisted.code).toBe(0);
      const sequenceChecks = (report: Report | undefined) =>
        report?.checks.filter((c) => c.id.startsWith('sequence.')).map((c) => `${c.status} ${c.id} ${c.subject}: ${c.message}`);
      expect(sequenceChecks(unlisted.report)).toEqual([
        "warn sequence.unlisted public.mrn_seq: sequence public.mrn_seq belongs to no table and no column default uses it, so it is not migrated: if the application calls nextval() on it, list it under `sequences` so the target has it, going on from the source's value",
      ]);
      const listed = await dryRun(
        HOSPITAL_PLAN.replace('sync: { mode: logical }', 'sequences: [public.mrn_seq, public.patients, gone_seq]\nsync: { mode: logical }'),
      );
      expect(listed.code).toBe(1);
      expect(sequenceChecks(listed.report)).toEqual([
        'pass sequence.exists public.mrn_seq: sequence exists at 5000; set on the target after the copy and at cutover',
        'fail sequence.exists public.patients: public.patients is not a sequence on the source (plan sequences[1], relkind r)',
        'fail sequence.exists public.gone_seq: sequence public.gone_seq does not exist on the source (plan sequences[2])',
      ]);
    } finally {
      await sql('source', s.dbs.source, 'DROP SEQUENCE public.mrn_seq');
    }
  });

  it('refuses a table without a key for live sync and spells out the fix', async () => {
    await sql('source', s.dbs.source, 'CREATE TABLE public.audit_log (at timestamptz, what text); ANALYZE public.audit_log');
    const plan = HOSPITAL_PLAN.replace('  - name: public.medications', '  - name: public.medications\n  - name: public.audit_log');
    const { code, report } = await dryRun(plan);
    expect(code).toBe(1);
    expect(check(report, 'table.key', 'public.audit_log')).toEqual({
      id: 'table.key',
      status: 'fail',
      subject: 'public.audit_log',
      message:
        'no primary key or replica identity: with live sync, UPDATE and DELETE on this table would fail on the source. Fix: ALTER TABLE public.audit_log ADD PRIMARY KEY (...), or ALTER TABLE public.audit_log REPLICA IDENTITY FULL; or set replicaIdentity (full | index | insert-only) on tables[4]',
    });
    const optedIn = await dryRun(
      plan.replace('  - name: public.audit_log', '  - name: public.audit_log\n    replicaIdentity: insert-only'),
    );
    expect(check(optedIn.report, 'table.key', 'public.audit_log').status).toBe('warn');
    expect(optedIn.code).toBe(0);
    await sql('source', s.dbs.source, 'DROP TABLE public.audit_log');
  });

  it('fails when the source user may not read a table', async () => {
    await sql(
      'source',
      s.dbs.source,
      `DROP ROLE IF EXISTS cs_reader; CREATE ROLE cs_reader LOGIN PASSWORD 'reader-pw' REPLICATION;
      GRANT SELECT ON public.patients, public.encounters, public.observations, public.documents TO cs_reader`,
    );
    const url = connectionUrl('source', s.dbs.source).replace(/\/\/[^@]+@/, '//cs_reader:reader-pw@');
    const { code, report } = await dryRun(HOSPITAL_PLAN, { ...s.env, SOURCE_DATABASE_URL: url });
    expect(code).toBe(1);
    expect(check(report, 'table.exists', 'public.medications').message).toBe(
      'permission denied: the source user may not SELECT from public.medications; GRANT SELECT ON public.medications TO <user>',
    );
    // A listed sequence it may not read (the copy reads it), then only read (rollback sets it).
    await sql('source', s.dbs.source, 'CREATE SEQUENCE public.mrn_seq');
    try {
      const listing = HOSPITAL_PLAN.replace('sync: { mode: logical }', 'sequences: [public.mrn_seq]\nsync: { mode: logical }');
      const unreadable = await dryRun(listing, { ...s.env, SOURCE_DATABASE_URL: url });
      expect(check(unreadable.report, 'sequence.exists').message).toBe(
        'permission denied: the source user may not read sequence public.mrn_seq (plan sequences[0]); GRANT SELECT ON SEQUENCE public.mrn_seq TO <user>',
      );
      await sql('source', s.dbs.source, 'GRANT SELECT ON SEQUENCE public.mrn_seq TO cs_reader');
      const readOnly = await dryRun(listing, { ...s.env, SOURCE_DATABASE_URL: url });
      expect(check(readOnly.report, 'sequence.exists').message).toBe(
        'permission denied: the source user may not set sequence public.mrn_seq (plan sequences[0]), which rollback does; GRANT UPDATE ON SEQUENCE public.mrn_seq TO <user>',
      );
    } finally {
      await sql('source', s.dbs.source, 'DROP SEQUENCE public.mrn_seq');
    }
  });

  it('warns about long-running transactions that would block slot creation, naming them', async () => {
    const blocker = new pg.Client({ connectionString: connectionUrl('source', s.dbs.source), application_name: 'ward-report' });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      const { rows } = await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid, txid_current()');
      // Open longer than the threshold by the server's clock: the short transactions other test
      // files run on this shared server meanwhile (a copy's, with --long-transactions 1ms) are
      // left out, or listed after it (oldest first), not in its place among the five shown.
      await blocker.query(
        `SELECT pg_sleep(greatest(0, 2.1 - extract(epoch FROM clock_timestamp() - xact_start))) FROM pg_stat_activity WHERE pid = pg_backend_pid()`,
      );
      const { report } = await dryRun(HOSPITAL_PLAN, s.env, ['--long-transactions', '2s']);
      const c = check(report, 'source.long_transactions');
      expect(c.status).toBe('warn');
      expect(c.message).toContain(`pid ${rows[0]!.pid} (user postgres, database ${s.dbs.source}, application "ward-report"`);
    } finally {
      await blocker.query('ROLLBACK');
      await blocker.end();
    }
  });

  it('fails when a target table already holds rows', async () => {
    await sql('target', s.dbs.target, 'CREATE TABLE public.patients (id bigint primary key); INSERT INTO public.patients VALUES (1)');
    try {
      const { code, report } = await dryRun(HOSPITAL_PLAN);
      expect(code).toBe(1);
      expect(check(report, 'target.table', 'public.patients').message).toBe(
        'exists on the target and already holds rows: cloudshift run stops before writing; empty it, or set target.existingData: truncate',
      );
    } finally {
      await sql('target', s.dbs.target, 'DROP TABLE public.patients');
    }
  });

  it('warns that foreign keys already on a target table are set aside for the copy', async () => {
    const schema = `CREATE TABLE public.patients (id bigint primary key);
       CREATE TABLE public.encounters (id bigint primary key, patient_id bigint CONSTRAINT enc_patient REFERENCES public.patients (id))`;
    await sql('target', s.dbs.target, schema);
    try {
      await withSourceDatabase('fk', '', schema, async (env) => {
        const { code, report } = await dryRun(tablesPlan(['public.patients', 'public.encounters']), env);
        expect(code).toBe(0);
        const c = check(report, 'target.foreign_key', 'public.encounters');
        expect(c.status).toBe('warn');
        expect(c.message).toBe(
          'has foreign key enc_patient on the target: cloudshift run sets it aside for the copy (batches of a table can commit before the rows they name) and puts it back after the data',
        );
        expect(check(report, 'target.columns', 'public.encounters').status).toBe('pass');
      });
    } finally {
      await sql('target', s.dbs.target, 'DROP TABLE public.encounters, public.patients');
    }
  });

  it('wrong password: exit 3, names user and server, never the password', async () => {
    const url = connectionUrl('source', s.dbs.source).replace(/:[^:@/]+@/, ':Wr0ng-Passw0rd@');
    const { code, report, stdout } = await dryRun(HOSPITAL_PLAN, { ...s.env, SOURCE_DATABASE_URL: url });
    expect(code).toBe(3);
    expect(check(report, 'source.connect').message).toBe(
      `password authentication failed for user "postgres" on the source database at 127.0.0.1:${harness().source.port} (check the password the plan refers to)`,
    );
    expect(stdout).not.toContain('Wr0ng-Passw0rd');
    // The other servers are still checked.
    expect(check(report, 'target.connect').status).toBe('pass');
  });

  it('refuses documents tables on a SQL_ASCII source, whose text has no declared encoding', async () => {
    await withSourceDatabase('sqlascii', `ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C'`, HOSPITAL_SQL, async (env) => {
      const { code, report } = await dryRun(HOSPITAL_PLAN, env);
      expect(code).toBe(1);
      expect(check(report, 'source.encoding')).toMatchObject({ status: 'fail', subject: 'source' });
      expect(check(report, 'source.encoding').message).toContain('the source database is SQL_ASCII');
      // Live sync reads the changes as text too; plain tables copied once travel as bytes.
      const tablesOnly = HOSPITAL_PLAN.replace(/documents:[\s\S]*?(?=sync:)/, '');
      expect(check((await dryRun(tablesOnly, env)).report, 'source.encoding').status).toBe('fail');
      const once = await dryRun(tablesOnly.replace('sync: { mode: logical }', 'sync: { mode: none }'), env);
      expect(once.report?.checks.filter((c) => c.id === 'source.encoding')).toEqual([]);
      await expectRunRefused(HOSPITAL_PLAN, env, 'error: the source database is SQL_ASCII');
    });
  });

  it('warns when a text key is indexed in an order its batches cannot use, naming the index that would serve', async () => {
    const schema = `CREATE TABLE public.codes (code text COLLATE "ucs_basic" PRIMARY KEY, n int);
       CREATE TABLE public.plain (code text COLLATE "C" PRIMARY KEY, n int);
       INSERT INTO public.codes SELECT 'c' || g, g FROM generate_series(1, 300) g;
       INSERT INTO public.plain SELECT 'c' || g, g FROM generate_series(1, 300) g;
       ANALYZE;`;
    await withSourceDatabase('keyorder', '', schema, async (env) => {
      const { code, report } = await dryRun(tablesPlan(['public.codes', 'public.plain'], 'copy: { batch: { rows: 100 } }\n'), env);
      expect(code).toBe(0);
      expect(check(report, 'table.key_order', 'public.codes')).toMatchObject({
        status: 'warn',
        message: expect.stringContaining(
          'index codes_pkey orders code by ucs_basic: each batch would read the whole table; first CREATE UNIQUE INDEX CONCURRENTLY ON "public"."codes" ("code" COLLATE "C")',
        ),
      });
      expect(report!.checks.filter((c) => c.id === 'table.key_order' && c.subject === 'public.plain')).toEqual([]);
    });
  });

  it('refuses an inheritance parent, whose rows would include its children, and copies a child alone', async () => {
    const schema = `CREATE TABLE public.letters (id bigint PRIMARY KEY, body text);
       CREATE TABLE public.referrals (urgent boolean) INHERITS (public.letters);
       CREATE TABLE public.discharges () INHERITS (public.letters);
       INSERT INTO public.letters VALUES (1, 'a');
       INSERT INTO public.referrals VALUES (2, 'b', true);`;
    await withSourceDatabase('inherits', '', schema, async (env) => {
      const plan = tablesPlan(['public.letters', 'public.referrals']);
      const { code, report } = await dryRun(plan, env);
      expect(code).toBe(1);
      expect(check(report, 'table.inheritance', 'public.letters')).toMatchObject({
        status: 'fail',
        message: expect.stringContaining(
          'public.letters has tables inheriting from it (discharges, referrals): a copy of it would hold their rows too',
        ),
      });
      expect(check(report, 'table.inheritance', 'public.referrals')).toMatchObject({
        status: 'warn',
        message: 'public.referrals inherits from letters: it is copied as a standalone table (on the target it inherits from nothing)',
      });
      await expectRunRefused(plan, env, 'error: public.letters has tables inheriting from it');
    });
  });

  it('refuses an existing target table whose columns differ from what the copy writes; copies into wider ones', async () => {
    const schema = `CREATE SCHEMA wards;
       CREATE TABLE wards.vitals (id int PRIMARY KEY, reading int, note varchar(40), dose numeric(6,2), at timestamp(3),
                                  total int GENERATED ALWAYS AS (reading * 2) STORED);
       INSERT INTO wards.vitals VALUES (1, 70, 'ok', 1.50, '2026-11-24 10:00:00.125'), (2, NULL, repeat('n', 40), 9999.99, NULL);`;
    await sql('target', s.dbs.target, `CREATE SCHEMA wards`);
    try {
      await withSourceDatabase('shape', '', schema, async (env) => {
        const plan = tablesPlan(['wards.vitals']);
        // As the copy would write it (the generated column is the target's own business): fits.
        await sql(
          'target',
          s.dbs.target,
          `CREATE TABLE wards.vitals (id int PRIMARY KEY, reading int, note varchar(40), dose numeric(6,2), at timestamp(3), total int)`,
        );
        expect(check((await dryRun(plan, env)).report, 'target.columns', 'wards.vitals')).toMatchObject({ status: 'pass' });
        // Wider modifiers of the same types, and text for varchar, hold every value as it is: copied and verified.
        await sql(
          'target',
          s.dbs.target,
          `DROP TABLE wards.vitals;
           CREATE TABLE wards.vitals (id int PRIMARY KEY, reading int, note text, dose numeric(9,2), at timestamp, total int)`,
        );
        const wider = `${plan}state: { schema: widened }\n`;
        expect(check((await dryRun(wider, env)).report, 'target.columns', 'wards.vitals')).toMatchObject({
          status: 'pass',
          message:
            'exists on the target with the 5 columns the copy writes, of the same types or wider (note (text; character varying(40) on the source), dose (numeric(9,2); numeric(6,2) on the source), at (timestamp without time zone; timestamp(3) without time zone on the source))',
        });
        // With live sync, a rollback would bring the application's writes back into the narrower columns.
        expect(check((await dryRun(`${wider}sync: { mode: logical }\n`, env)).report, 'target.columns', 'wards.vitals')).toMatchObject({
          status: 'warn',
          message: expect.stringMatching(
            /^exists on the target with wider columns than the source's: note .*: after cutover the application can write values there that a rollback cannot put back on the source$/,
          ),
        });
        expect((await cli(['run', s.plan(wider, 'wider.yaml')], env)).code).toBe(0);
        const rows = `SELECT id, reading, note::text, dose::text, at::text FROM wards.vitals ORDER BY id`;
        expect(await sql('target', s.dbs.target, rows)).toEqual(
          await sql('source', new URL(env.SOURCE_DATABASE_URL!).pathname.slice(1), rows),
        );
        await sql('target', s.dbs.target, `DROP SCHEMA widened CASCADE`);
        // An integer's four bytes would read as a real under binary COPY; a narrower varchar or
        // another numeric scale would change or refuse values.
        await sql(
          'target',
          s.dbs.target,
          `DROP TABLE wards.vitals;
           CREATE TABLE wards.vitals (id int PRIMARY KEY, reading real, note varchar(20), dose numeric(8,3), at timestamp(3), ward text NOT NULL)`,
        );
        const { code, report } = await dryRun(plan, env);
        expect(code).toBe(1);
        expect(check(report, 'target.columns', 'wards.vitals')).toMatchObject({
          status: 'fail',
          message:
            'exists on the target with other columns than the source\'s: column "reading" is real on the target and integer on the source; column "note" is character varying(20) on the target and character varying(40) on the source; column "dose" is numeric(8,3) on the target and numeric(6,2) on the source; column "ward" is NOT NULL without a default, and the copy does not write it: drop the target table and let cloudshift run create it, or alter it to match the source',
        });
        const run = await cli(['run', s.plan(plan, 'shape.yaml')], env);
        expect(run.code).toBe(3);
        expect(run.stderr).toContain(
          'error: wards.vitals already exists on the target with other columns than the source\'s: column "reading" is real',
        );
        const left = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM wards.vitals`);
        expect(left[0]!.n).toBe('0');
      });
    } finally {
      await sql('target', s.dbs.target, `DROP SCHEMA wards CASCADE`);
    }
  });

  it('warns that a text key orders differently on a LATIN1 source than on the UTF-8 target', async () => {
    const schema = `CREATE TABLE public.codes (code text PRIMARY KEY, n int);
       CREATE TABLE public.numbered (id bigint PRIMARY KEY, name text);`;
    await withSourceDatabase('latin1', `ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'`, schema, async (env) => {
      const { code, report } = await dryRun(tablesPlan(['public.codes', 'public.numbered']), env);
      expect(code).toBe(0);
      expect(check(report, 'table.key_encoding', 'public.codes')).toMatchObject({
        status: 'warn',
        message: expect.stringMatching(
          /^the source database is LATIN1 and the target UTF-8: key column code orders byte by byte differently/,
        ),
      });
      expect(report!.checks.filter((c) => c.id === 'table.key_encoding' && c.subject === 'public.numbered')).toEqual([]);
    });
  });

  it('database that does not exist: exit 3, named', async () => {
    const url = connectionUrl('target', 'no_such_db');
    const { code, report } = await dryRun(HOSPITAL_PLAN, { ...s.env, TARGET_DATABASE_URL: url });
    expect(code).toBe(3);
    expect(check(report, 'target.connect').message).toBe(
      `database "no_such_db" does not exist on 127.0.0.1:${harness().target.port} (target) (check the database name in the connection string)`,
    );
  });

  it('a server that accepts but never answers: fails at the connect timeout, names host and port, exit 3', async () => {
    const sockets: Socket[] = [];
    const blackHole: Server = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => blackHole.listen(0, '127.0.0.1', resolve));
    const port = (blackHole.address() as { port: number }).port;
    try {
      const r = await dryRun(HOSPITAL_PLAN, { ...s.env, SOURCE_DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/ehr` }, [
        '--connect-timeout',
        '1s',
      ]);
      expect(r.code).toBe(3);
      expect(check(r.report, 'source.connect').message).toBe(
        `cannot connect to the source database at 127.0.0.1:${port}: timed out (check the connection string the plan refers to)`,
      );
      expect(check(r.report, 'target.connect').status).toBe('pass');
    } finally {
      sockets.forEach((x) => x.destroy());
      blackHole.close();
    }
  });

  it("connects with a generated password in a URL through a reference, and with libpq's key=value, quoting neither password", async () => {
    const password = 'Ab/cd#?@x%2F=+';
    await sql('source', s.dbs.source, `CREATE ROLE cs_odd_pw LOGIN SUPERUSER REPLICATION PASSWORD '${password}'`);
    try {
      const h = harness();
      const plan = HOSPITAL_PLAN.replace(
        'source: { postgres: "${env:SOURCE_DATABASE_URL}" }',
        `source: { postgres: "postgres://cs_odd_pw:\${env:SOURCE_PW}@127.0.0.1:${h.source.port}/${s.dbs.source}" }`,
      ).replace(
        '  postgres: "${env:TARGET_DATABASE_URL}"',
        '  postgres: "host=127.0.0.1 port=${env:TARGET_PORT} dbname=${env:TARGET_DB} user=postgres password=${env:TARGET_PW}"',
      );
      const env = {
        ...s.env,
        SOURCE_PW: password,
        TARGET_PORT: String(h.target.port),
        TARGET_DB: s.dbs.target,
        TARGET_PW: h.target.password,
      };
      const ok = await dryRun(plan, env);
      expect(check(ok.report, 'source.connect').status).toBe('pass');
      expect(check(ok.report, 'target.connect').status).toBe('pass');
      expect(check(ok.report, 'state.store').status).not.toBe('fail');
      // The target unreachable: the state store (in it) is named by host, port and database, not by its string.
      const down = await dryRun(plan, { ...env, TARGET_PORT: '1' });
      expect(down.code).toBe(3);
      expect(check(down.report, 'state.store').message).toBe(
        `the state store is in the target database (127.0.0.1:1/${s.dbs.target}), which cannot be reached`,
      );
      for (const out of [ok.stdout, down.stdout]) {
        expect(out).not.toContain(h.target.password);
        expect(out).not.toContain('Ab/cd');
      }
    } finally {
      await sql('source', s.dbs.source, 'DROP ROLE cs_odd_pw');
    }
  });

  it('a check group that cannot run is a failed check naming why; the rest of the report stays', async () => {
    // A state schema that is not cloudshift's: its migrations table has other columns.
    const plan = HOSPITAL_PLAN.replace('sync: { mode: logical }', 'sync: { mode: logical }\nstate: { schema: not_ours }');
    await sql('target', s.dbs.target, 'CREATE SCHEMA not_ours; CREATE TABLE not_ours.knex_migrations (x int)');
    try {
      const { code, report } = await dryRun(plan);
      expect(code).toBe(1);
      expect(check(report, 'state.store')).toMatchObject({
        status: 'fail',
        message: expect.stringMatching(/^state store checks stopped: column "name" does not exist \(SQLSTATE 42703\)/),
      });
      expect(check(report, 'source.wal_level').status).toBe('pass');
      expect(check(report, 'target.connect').status).toBe('pass');
    } finally {
      await sql('target', s.dbs.target, 'DROP SCHEMA not_ours CASCADE');
    }
  });

  it('unreachable port: connection refused, exit 3', async () => {
    const refused = await dryRun(HOSPITAL_PLAN, { ...s.env, SOURCE_DATABASE_URL: 'postgres://postgres@127.0.0.1:1/ehr' });
    expect(refused.code).toBe(3);
    expect(check(refused.report, 'source.connect').message).toMatch(
      /^cannot connect to the source database at 127\.0\.0\.1:1: connection refused/,
    );
  });

  it('the real executable exits with the documented code and keeps secrets out of its output', async () => {
    const url = connectionUrl('source', s.dbs.source).replace(/:[^:@/]+@/, ':Sup3r-Secret@');
    const file = s.plan(HOSPITAL_PLAN, 'spawn.yaml');
    const result = await new Promise<{ code: number | null; out: string }>((resolve) => {
      execFile(
        'node',
        ['bin/cloudshift.js', 'dry-run', file],
        { env: { ...process.env, ...s.env, SOURCE_DATABASE_URL: url } },
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, out: stdout + stderr }),
      );
    });
    expect(result.code).toBe(3);
    expect(result.out).toContain('FAIL  source.connect');
    expect(result.out).toContain('password authentication failed for user "postgres"');
    expect(result.out).not.toContain('Sup3r-Secret');
  });

  it('an unreadable ${file:} reference is a usage error naming the file, exit 2', async () => {
    const plan = HOSPITAL_PLAN.replace('"${env:SOURCE_DATABASE_URL}"', '"${file:secrets/source-url}"');
    const r = await cli(['dry-run', s.plan(plan, 'fileref.yaml')], s.env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`error: source.postgres: cannot read ${s.dir}/secrets/source-url (ENOENT) for \${file:secrets/source-url}`);
  });

  it('github format: annotations for failures and warnings, a summary notice', async () => {
    const file = s.plan(HOSPITAL_PLAN.replace('public.medications', 'public.prescriptions'), 'gh.yaml');
    const r = await cli(['dry-run', file, '--format', 'github'], s.env);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(
      `::error file=${file},title=table.exists public.prescriptions::table public.prescriptions does not exist on the source (plan tables[3])`,
    );
    expect(r.stdout).toMatch(/::notice title=cloudshift dry-run::failed: \d+ passed, \d+ warnings, 1 failed/);
  });

  it('text format ends with the estimate and a verdict', async () => {
    const r = await cli(['dry-run', s.plan(HOSPITAL_PLAN, 'text.yaml')], s.env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/estimate: 4,700 rows, .* about \d+ s to copy\ndry run passed: \d+ passed, 0 warnings, 0 failed\n$/);
  });
});
