import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EngineEvent } from '../../src/engine/events.js';
import { runMigration } from '../../src/engine/run.js';
import { loadPlan } from '../../src/plan/parse.js';
import { rejectionOf } from '../harness/outcome.js';
import { cli, spawnCli } from '../harness/cli.js';
import { expectSameRows, expectTablesMatch } from '../harness/compare.js';
import { connectionUrl, rewritingTrigger, sql } from '../harness/db.js';
import { cutRunLockSession, HOSPITAL_SQL, hospitalScenario, inScenario, type Scenario } from '../harness/scenario.js';

const ALLTYPES_SQL = readFileSync(new URL('../fixtures/alltypes.sql', import.meta.url), 'utf8');

const TABLES_PLAN = `version: 1
name: copytest
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.patients
  - name: public.encounters
  - name: public.observations
  - name: public.medications
    batch: { rows: 150 }
  - name: public.alltypes
  - name: public.audit_log
    batch: { rows: 400 }
  - name: public.wards
  - name: public.devices
sequences: [public.mrn_seq, public.patients_id_seq, public.left_out_id_seq]
copy: { jobs: 3, batch: { rows: 500 } }
`;

const ORDER: Record<string, string> = {
  'public.patients': 'id',
  'public.encounters': 'id',
  'public.observations': 'id',
  'public.medications': 'patient_id, prescribed_at, drug',
  'public.alltypes': 'id',
  'public.audit_log': 'at, what',
  'public.wards': 'code',
  'public.devices': 'id',
};

async function expectIdentical(s: Scenario) {
  await expectTablesMatch(s, ORDER);
}

async function scenario(prefix: string) {
  const s = await hospitalScenario(prefix);
  await sql('source', s.dbs.source, ALLTYPES_SQL);
  // Standalone sequences, as an application's medical record numbers: one the plan lists, one not.
  await sql(
    'source',
    s.dbs.source,
    `CREATE SEQUENCE public.mrn_seq START 5000 INCREMENT 7; SELECT nextval('public.mrn_seq') FROM generate_series(1, 3);
     CREATE SEQUENCE public.spare_seq; SELECT nextval('public.spare_seq');
     CREATE TABLE public.left_out (id serial PRIMARY KEY); INSERT INTO public.left_out SELECT FROM generate_series(1, 4)`,
  );
  return s;
}

/** A table without a key on full pages (about 35 rows each), 2,000 rows in four page ranges. */
const COTS_SQL = `CREATE TABLE public.cots (n int, label text);
  INSERT INTO public.cots SELECT g, 'cot ' || g || repeat('-', 200) FROM generate_series(1, 2000) g;
  ANALYZE;`;

/** Copies public.cots one batch at a time; `extra` goes before its tables. */
function cotsPlan(name: string, extra = ''): string {
  return `version: 1
name: ${name}
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
${extra}tables:
  - name: public.cots
copy: { jobs: 1, batch: { rows: 500 } }
`;
}

function spawnRun(s: Scenario, file: string, extraEnv: Record<string, string> = {}) {
  return spawnCli(['run', file], { ...s.env, ...extraEnv });
}

describe('cloudshift run (bulk copy)', () => {
  let s: Scenario;
  beforeAll(async () => {
    s = await scenario('copy');
  });
  afterAll(async () => s.drop());

  it('copies every table exactly, in verified batches, and sets sequences', async () => {
    const events: EngineEvent[] = [];
    const loaded = await loadPlan(s.plan(TABLES_PLAN));
    const result = await runMigration(loaded, { env: s.env, onEvent: (e) => events.push(e) });
    expect(result.mismatches).toBe(0);
    expect(result.interrupted).toBe(false);
    await expectIdentical(s);
    expect(events.filter((e) => e.type === 'warning').map((e) => (e as { message: string }).message)).toEqual([
      'public.audit_log has no primary key or usable unique key: it is copied by ctid ranges and verified as a whole; live sync will need a key or REPLICA IDENTITY FULL',
    ]);
    const batches = await sql<{ relation: string; n: string; verified: string }>(
      'target',
      s.dbs.target,
      `SELECT relation, count(*) AS n, count(*) FILTER (WHERE status = 'verified') AS verified FROM cloudshift.batches GROUP BY relation ORDER BY relation`,
    );
    expect(batches.every((b) => b.n === b.verified)).toBe(true);
    expect(batches.find((b) => b.relation === 'public.observations')?.n).toBe('6');
    expect(batches.find((b) => b.relation === 'public.audit_log')?.n).not.toBe('1');
    expect(
      events
        .filter((e) => e.type === 'table:done')
        .map((e) => (e as { table: string }).table)
        .sort(),
    ).toEqual(Object.keys(ORDER).sort());
    // identity and serial sequences continue where the source is (last_value is NULL if never used)
    const sequences = (side: 'source' | 'target') =>
      sql(
        side,
        side === 'source' ? s.dbs.source : s.dbs.target,
        `SELECT schemaname, sequencename, last_value::text FROM pg_sequences WHERE schemaname <> 'cloudshift' ORDER BY 1, 2`,
      );
    const tgtSequences = await sequences('target');
    expect(tgtSequences.filter((q) => q.last_value !== null).length).toBeGreaterThan(1);
    const srcSequences = new Map((await sequences('source')).map((q) => [`${q.schemaname}.${q.sequencename}`, q]));
    expect(tgtSequences).toEqual(tgtSequences.map((q) => srcSequences.get(`${q.schemaname}.${q.sequencename}`)));
    // the standalone sequence the plan lists is there, with its options; the other is not migrated;
    // one a table left out owns is made on its own; an identity one listed is still its column's
    expect(tgtSequences.filter((q) => /^(mrn_seq|spare_seq|left_out_id_seq)$/.test(q.sequencename as string))).toEqual([
      { schemaname: 'public', sequencename: 'left_out_id_seq', last_value: '4' },
      { schemaname: 'public', sequencename: 'mrn_seq', last_value: '5014' },
    ]);
    expect(
      await sql('target', s.dbs.target, `SELECT to_regclass('public.left_out') AS t, pg_get_serial_sequence('public.patients', 'id') AS s`),
    ).toEqual([{ t: null, s: 'public.patients_id_seq' }]);
    expect(await sql('target', s.dbs.target, `SELECT nextval('public.mrn_seq')::text AS n`)).toEqual([{ n: '5021' }]);
    // a second run finds nothing to do
    const again = await cli(['run', s.plan(TABLES_PLAN)], s.env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('already finished; nothing to do');
  });

  it('refuses a plan changed since the run began (exit 4) unless --force', async () => {
    const changed = TABLES_PLAN.replace('jobs: 3', 'jobs: 2');
    await sql('target', s.dbs.target, `UPDATE cloudshift.runs SET status = 'active', phase = 'sequences'`);
    const r = await cli(['run', s.plan(changed)], s.env);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(
      /error: the plan changed since run [0-9a-f-]{36} began on .* \(phase sequences\); cloudshift will not resume it with a different plan/,
    );
    // --force does not change which tables a planned run copies: an added table would never be
    // made or copied, a dropped one's batches never finished. Refused, naming both, the run untouched.
    const otherTables = changed.replace('  - name: public.devices\n', '  - name: public.left_out\n');
    const refused = await cli(['run', s.plan(otherTables), '--force'], s.env);
    expect(refused.code, refused.stderr).toBe(4);
    expect(refused.stderr).toMatch(
      /error: the plan adds public\.left_out and no longer has public\.devices, but run [0-9a-f-]{36} \(phase sequences\) planned its batches for the tables it had then/,
    );
    expect(await sql('target', s.dbs.target, `SELECT to_regclass('public.left_out') AS t`)).toEqual([{ t: null }]);
    // The dry run tells the two apart: a changed plan run resumes with --force, other tables never.
    const stateRun = async (text: string) => {
      const dry = await cli(['dry-run', s.plan(text), '--format', 'json'], s.env);
      return (JSON.parse(dry.stdout) as { checks: Array<{ id: string; status: string; message: string }> }).checks.find(
        (c) => c.id === 'state.run',
      );
    };
    expect(await stateRun(changed)).toMatchObject({ status: 'warn', message: expect.stringContaining('unless --force') });
    expect(await stateRun(otherTables)).toMatchObject({
      status: 'fail',
      message: expect.stringMatching(
        /^the plan adds public\.left_out and no longer has public\.devices, but run .* refuses it, --force too/,
      ),
    });
    const kinds = async () =>
      (await sql<{ kind: string }>('target', s.dbs.target, `SELECT kind FROM cloudshift.events ORDER BY id`)).map((e) => e.kind);
    expect(await kinds()).not.toContain('run:forced');
    const forced = await cli(['run', s.plan(changed), '--force'], s.env);
    expect(forced.code).toBe(0);
    expect(await kinds()).toContain('run:forced');
  });
});

describe('cloudshift run: bad starts write nothing', () => {
  it('names a column type it cannot copy, with table and column, before writing anything (exit 3)', async () => {
    const s = await scenario('copytype');
    try {
      await sql(
        'source',
        s.dbs.source,
        `CREATE TABLE public.odd (id int PRIMARY KEY, handler regproc); INSERT INTO public.odd VALUES (1, 'now')`,
      );
      const r = await cli(['run', s.plan(TABLES_PLAN.replace('  - name: public.wards', '  - name: public.odd'))], s.env);
      expect(r.code).toBe(3);
      expect(r.stderr).toContain(
        'error: cannot copy column handler of public.odd: type regproc holds OIDs of catalog objects that differ on the target; nothing was copied',
      );
      const tables = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'`);
      expect(tables[0]!.n).toBe('0');
      const missing = await cli(['run', s.plan(TABLES_PLAN.replace('[public.mrn_seq', '[public.mrn_seq, public.no_such_seq'))], s.env);
      expect(missing.code).toBe(3);
      expect(missing.stderr).toContain('error: sequence public.no_such_seq does not exist on the source (plan sequences[1])');
      expect(
        await sql('target', s.dbs.target, `SELECT count(*)::int AS n FROM pg_class WHERE relnamespace = 'public'::regnamespace`),
      ).toEqual([{ n: 0 }]);
    } finally {
      await s.drop();
    }
  });

  it('stops before writing when a target table already holds rows (exit 3)', async () => {
    const s = await scenario('copyfull');
    try {
      await sql(
        'target',
        s.dbs.target,
        'CREATE TABLE public.wards (code text PRIMARY KEY, name text); INSERT INTO public.wards VALUES ($$x$$, $$y$$)',
      );
      const r = await cli(['run', s.plan(TABLES_PLAN)], s.env);
      expect(r.code).toBe(3);
      expect(r.stderr).toContain('error: the target already holds rows in public.wards; nothing was written');
      const tables = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'`);
      expect(tables[0]!.n).toBe('1');
      // Run again as it is: refused again (the rows are still the operator's), not taken for a resumed copy.
      const again = await cli(['run', s.plan(TABLES_PLAN)], s.env);
      expect(again.code).toBe(3);
      expect(again.stderr).toContain('error: the target already holds rows in public.wards; nothing was written');
      expect(await sql('target', s.dbs.target, 'SELECT code, name FROM public.wards')).toEqual([{ code: 'x', name: 'y' }]);
    } finally {
      await s.drop();
    }
  });
});

/**
 * Copies one table, made on an empty source by `setup`, in batches of `rows`: exit 0, the rows
 * identical (ordered by `order`); returns how many batches the run planned.
 */
async function copyOneTable(
  prefix: string,
  setup: (source: string) => string,
  table: string,
  rows: number,
  order: string,
  where?: string,
  /** Runs on the copied scenario before it is dropped. */
  after?: (s: Scenario, plan: string) => Promise<void>,
) {
  const s = await hospitalScenario(prefix, { load: false });
  try {
    await sql('source', s.dbs.source, setup(s.dbs.source));
    const plan = s.plan(`version: 1
name: ${prefix}
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: ${table}${where ? `\n    where: ${JSON.stringify(where)}` : ''}
copy: { batch: { rows: ${rows} } }
`);
    const r = await cli(['run', plan], s.env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    if (where) await sql('source', s.dbs.source, `DELETE FROM ${table} WHERE NOT (${where})`);
    const { source, target } = await expectSameRows(s, table, order);
    expect(target).toBe(source);
    await after?.(s, plan);
    const [batches] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM cloudshift.batches`);
    return Number(batches!.n);
  } finally {
    await s.drop();
  }
}

describe('cloudshift run: sources as they come', () => {
  it('copies an array that once held a NULL, and a regclass by the name it resolves to on the target', async () => {
    await copyOneTable(
      'arraysreg',
      () => `CREATE TABLE public.marks (id int PRIMARY KEY, a int[], r regclass);
        INSERT INTO public.marks VALUES (1, '{NULL,2}', 'public.marks'), (2, '{3,4}', NULL);
        -- The array keeps its null bitmap, with no NULL left in it.
        UPDATE public.marks SET a[1] = 1 WHERE id = 1;`,
      'public.marks',
      1000,
      'id',
      undefined,
      async (s) => {
        const [row] = await sql<{ r: string }>('target', s.dbs.target, `SELECT r::text AS r FROM public.marks WHERE id = 1`);
        expect(row!.r).toBe('marks');
      },
    );
  });

  it('copies rows older than a NOT VALID check (of the table or of a domain), which the target then has too, still not validated', async () => {
    await copyOneTable(
      'notvalid',
      () => `CREATE DOMAIN public.score AS int;
        CREATE TABLE public.vitals (id int PRIMARY KEY, height_m numeric, score public.score);
        INSERT INTO public.vitals VALUES (1, 1.8, 5), (2, 7.5, -3);
        ALTER TABLE public.vitals ADD CONSTRAINT vitals_height CHECK (height_m BETWEEN 0.3 AND 3.0) NOT VALID;
        ALTER DOMAIN public.score ADD CONSTRAINT score_positive CHECK (VALUE > 0) NOT VALID;`,
      'public.vitals',
      1000,
      'id',
      undefined,
      async (s) => {
        const checks = await sql<{ conname: string; convalidated: boolean }>(
          'target',
          s.dbs.target,
          `SELECT conname, convalidated FROM pg_constraint WHERE conname IN ('vitals_height', 'score_positive') ORDER BY conname`,
        );
        expect(checks).toEqual([
          { conname: 'score_positive', convalidated: false },
          { conname: 'vitals_height', convalidated: false },
        ]);
        // New rows are checked on the target as on the source.
        await expect(sql('target', s.dbs.target, `INSERT INTO public.vitals VALUES (3, 9, 1)`)).rejects.toMatchObject({ code: '23514' });
      },
    );
  });

  it('a table analysed empty and loaded since is split by its size now, not copied as one batch', async () => {
    const batches = await copyOneTable(
      'copystale',
      () => `CREATE TABLE public.loaded (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
             ANALYZE public.loaded;
             INSERT INTO public.loaded SELECT g, repeat('x', 50) FROM generate_series(1, 5000) g;`,
      'public.loaded',
      1000,
      'id',
    );
    expect(batches).toBeGreaterThanOrEqual(4);
  });

  it('keys ending in a backslash bound batches as they are on a source whose strings are not standard-conforming', async () => {
    const batches = await copyOneTable(
      'copybackslash',
      (db) => `ALTER DATABASE ${db} SET standard_conforming_strings = off;
               CREATE TABLE public.paths (p text PRIMARY KEY, n int);
               INSERT INTO public.paths SELECT 'dir' || g || E'\\\\', g FROM generate_series(1, 6) g; ANALYZE public.paths;`,
      'public.paths',
      2,
      'p',
    );
    expect(batches).toBe(3);
  });

  it("a key column named k$1 and a plan's where holding '$1' are left as written when the batch bounds are filled in", async () => {
    const batches = await copyOneTable(
      'copydollar',
      () => `CREATE TABLE public.vouchers ("k$1" int PRIMARY KEY, note text);
             INSERT INTO public.vouchers SELECT g, CASE WHEN g % 3 = 0 THEN '$1 off' ELSE 'n' || g END FROM generate_series(1, 9) g;
             ANALYZE public.vouchers;`,
      'public.vouchers',
      3,
      '"k$1"',
      "note <> '$1 off'",
      async (s, plan) => {
        // verify pinpoints a differing row with the same bounds, written into its queries as literals
        await sql('target', s.dbs.target, `UPDATE public.vouchers SET note = 'changed' WHERE "k$1" = 5`);
        const r = await cli(['verify', plan, '--json'], s.env);
        expect(r.code).toBe(1);
        const found = (JSON.parse(r.stdout) as { findings: Array<{ kind: string; key: Record<string, string> }> }).findings;
        expect(found.map((f) => [f.kind, f.key])).toEqual([['different', { k$1: '5' }]]);
      },
    );
    expect(batches).toBe(3);
  });
});

describe('cloudshift run: a target that already has the schema', () => {
  it('sets aside its foreign keys for the parallel copy and puts them back validated; existingData: truncate empties it first', async () => {
    const s = await hospitalScenario('copyfks');
    try {
      // The target has the schema, foreign keys included, and rows of its own (random, not the source's);
      // and a trigger of an earlier run's schema, which must not touch the copied rows.
      await sql('target', s.dbs.target, HOSPITAL_SQL);
      await sql(
        'target',
        s.dbs.target,
        `CREATE FUNCTION public.shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.family_name := upper(NEW.family_name); RETURN NEW; END $$;
         CREATE TRIGGER patients_shout BEFORE INSERT ON public.patients FOR EACH ROW EXECUTE FUNCTION public.shout();`,
      );
      const plan = `version: 1
name: existing
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}", existingData: truncate }
tables:
  - name: public.patients
  - name: public.encounters
  - name: public.observations
  - name: public.medications
  - name: public.documents
copy: { jobs: 3, batch: { rows: 100 } }
`;
      // Observations (the largest) are copied first: without setting the keys aside, their batches
      // would name encounters not yet copied.
      const r = await cli(['run', s.plan(plan), '--json'], s.env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const warnings = r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { type: string; message?: string })
        .filter((e) => e.type === 'warning');
      expect(warnings.map((w) => w.message)).toContainEqual(expect.stringContaining('foreign keys already on the target'));
      for (const [table, order] of Object.entries({
        'public.patients': 'id',
        'public.encounters': 'id',
        'public.observations': 'id',
        'public.documents': 'id',
      })) {
        const both = await expectSameRows(s, table, order);
        expect(both.target).toBe(both.source);
      }
      const keys = (side: 'source' | 'target', db: string) =>
        sql<{ name: string; valid: boolean }>(
          side,
          db,
          `SELECT conrelid::regclass || '.' || conname AS name, convalidated AS valid FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY 1`,
        );
      const target = await keys('target', s.dbs.target);
      expect(target).toEqual(await keys('source', s.dbs.source));
      expect(target.length).toBe(4);
      expect(target.every((k) => k.valid)).toBe(true);
      const left = await sql<{ n: string }>('target', s.dbs.target, 'SELECT count(*) AS n FROM cloudshift.set_aside_constraints');
      expect(left[0]!.n).toBe('0');
    } finally {
      await s.drop();
    }
  });
});

/**
 * Runs the plan, cutting the session that holds the run's lock (what a failover or a dropped
 * connection does: PostgreSQL releases the lock) at the first call of `hook`, once the run has
 * noticed; returns what the run rejected with.
 */
async function runWithLockCut(s: Scenario, file: string, hook: 'afterBatchCommit' | 'beforePostData'): Promise<unknown> {
  let noticed!: () => void;
  const warned = new Promise<void>((resolve) => (noticed = resolve));
  let cut = false;
  return rejectionOf(
    runMigration(await loadPlan(file), {
      env: s.env,
      onEvent: (e: EngineEvent) => {
        if (e.type === 'warning' && /session holding this process's locks ended/.test(e.message)) noticed();
      },
      hooks: {
        [hook]: async () => {
          if (cut) return;
          cut = true;
          expect(await cutRunLockSession(s)).toBe(1);
          await warned;
        },
      },
    }),
  );
}

describe('cloudshift run: faults', () => {
  it('retries a batch whose target connection is killed mid-batch, and finishes exact', async () => {
    const s = await scenario('copydrop');
    try {
      const events: EngineEvent[] = [];
      let killed = 0;
      const loaded = await loadPlan(s.plan(TABLES_PLAN));
      const result = await runMigration(loaded, {
        env: s.env,
        retryBaseDelayMs: 10,
        onEvent: (e) => events.push(e),
        hooks: {
          beforeBatchCommit: async () => {
            if (killed >= 2) return;
            killed += 1;
            await sql(
              'target',
              s.dbs.target,
              `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cloudshift copy' AND datname = current_database()`,
            );
          },
        },
      });
      expect(killed).toBe(2);
      expect(events.filter((e) => e.type === 'batch:retry').length).toBeGreaterThanOrEqual(2);
      expect(result.mismatches).toBe(0);
      await expectIdentical(s);
    } finally {
      await s.drop();
    }
  });

  it('a batch that fails after another worker took it over is left to that worker, not failed', async () => {
    const s = await scenario('copytaken');
    try {
      const events: EngineEvent[] = [];
      let taken = false;
      const loaded = await loadPlan(s.plan(TABLES_PLAN));
      const result = await runMigration(loaded, {
        env: s.env,
        onEvent: (e) => events.push(e),
        hooks: {
          beforeBatchWrite: async (ref) => {
            if (taken || ref.table !== 'public.patients' || ref.seq !== 0) return;
            taken = true;
            // This worker was slow: another took its batch over and committed the batch's rows
            // (its first one is enough) before this one writes them.
            await sql('target', s.dbs.target, `UPDATE cloudshift.batches SET claimed_by = 'the-other-worker' WHERE id = $1`, [ref.batchId]);
            const [first] = await sql<{ row: unknown }>(
              'source',
              s.dbs.source,
              `SELECT row_to_json(p) AS row FROM public.patients p ORDER BY id LIMIT 1`,
            );
            await sql('target', s.dbs.target, `INSERT INTO public.patients SELECT * FROM json_populate_record(NULL::public.patients, $1)`, [
              first!.row,
            ]);
          },
        },
      });
      expect(taken).toBe(true);
      expect(result.mismatches).toBe(0);
      expect(events.filter((e) => e.type === 'warning').map((e) => (e as { message: string }).message)).toContainEqual(
        expect.stringMatching(
          /^batch \d+ of public\.patients was taken over by another worker while this one copied it \(.*duplicate key.*\): it is copied again there$/,
        ),
      );
      // The other worker is gone (no process of that name): its claim went back, and the batch was copied here.
      await expectIdentical(s);
    } finally {
      await s.drop();
    }
  });

  it('a checksum mismatch is retried once, then recorded and reported (exit 1)', async () => {
    const s = await scenario('copymismatch');
    try {
      const loaded = await loadPlan(s.plan(TABLES_PLAN));
      let sabotaged = false;
      const result = await runMigration(loaded, {
        env: s.env,
        hooks: {
          beforeBatchCommit: async () => {
            if (sabotaged) return;
            sabotaged = true;
            await rewritingTrigger(s.dbs.target, 'public.wards', `NEW.name := NEW.name || '!'`);
          },
        },
      });
      expect(result.mismatches).toBe(2);
      const bad = await sql<{ relation: string; status: string; attempts: number; error: string }>(
        'target',
        s.dbs.target,
        `SELECT relation, status, attempts, error FROM cloudshift.batches WHERE status <> 'verified'`,
      );
      expect(bad.map((b) => [b.relation, b.status, b.attempts])).toEqual([
        ['public.wards', 'mismatch', 2],
        ['public.wards', 'mismatch', 2],
      ]);
      expect(bad[0]!.error).toMatch(/^checksum mismatch: source sha256:[0-9a-f]{64}:\d+, target sha256:[0-9a-f]{64}:\d+$/);
      const events = await sql<{ kind: string }>(
        'target',
        s.dbs.target,
        `SELECT kind FROM cloudshift.events WHERE kind = 'batch:mismatch'`,
      );
      expect(events).toHaveLength(2);
    } finally {
      await s.drop();
    }
  });

  it('a batch a dead process committed but did not verify, found different on the target, is copied again by the next process', async () => {
    const s = await scenario('killleftover');
    try {
      const file = s.plan(TABLES_PLAN);
      const killed = await spawnRun(s, file, { CLOUDSHIFT_FAULT: 'afterBatchCommit:1' });
      expect(killed.signal).toBe('SIGKILL');
      const [left] = await sql<{ relation: string; id: string }>(
        'target',
        s.dbs.target,
        `SELECT relation, id::text AS id FROM cloudshift.batches WHERE status = 'copied' LIMIT 1`,
      );
      expect(left).toBeDefined();
      // The target changed under it: its verification fails, and the retry is this process's to copy.
      await sql('target', s.dbs.target, `DELETE FROM ${left!.relation} WHERE ctid IN (SELECT ctid FROM ${left!.relation} LIMIT 1)`);
      const resumed = await spawnRun(s, file);
      expect(resumed.code, resumed.out).toBe(0);
      await expectIdentical(s);
    } finally {
      await s.drop();
    }
  });

  for (const fault of ['beforeBatchCommit:4', 'afterBatchCommit:3', 'beforePostData:1', 'postDataStatement:6']) {
    it(`kill -9 at ${fault}, then run again: nothing missing, nothing duplicated`, async () => {
      const s = await scenario(`kill${fault.split(':')[0]!.toLowerCase().slice(0, 10)}`);
      try {
        const file = s.plan(TABLES_PLAN);
        const killed = await spawnRun(s, file, { CLOUDSHIFT_FAULT: fault });
        expect(killed.signal).toBe('SIGKILL');
        const resumed = await spawnRun(s, file);
        expect(resumed.out).toContain('resuming run');
        expect(resumed.code).toBe(0);
        await expectIdentical(s);
        const dupes = await sql<{ n: string }>(
          'target',
          s.dbs.target,
          `SELECT count(*) - count(DISTINCT (at, what)) AS n FROM public.audit_log`,
        );
        expect(dupes[0]!.n).toBe('0');
        const indexes = await sql<{ n: string }>(
          'target',
          s.dbs.target,
          `SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'encounters_patient'`,
        );
        expect(indexes[0]!.n).toBe('1');
      } finally {
        await s.drop();
      }
    });
  }

  it('a row moved between batches while the copy was stopped breaks a unique constraint: run says how to mend it, verify --repair does', async () => {
    const schema = `CREATE TABLE public.beds (id int PRIMARY KEY, code text NOT NULL UNIQUE);
         INSERT INTO public.beds SELECT g * 10, 'c' || g FROM generate_series(1, 500) g;
         ANALYZE;`;
    await inScenario('movedrow', schema, async (s) => {
      const file = s.plan(`version: 1
name: movedrow
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.beds
copy: { jobs: 1, batch: { rows: 100 } }
`);
      const killed = await spawnRun(s, file, { CLOUDSHIFT_FAULT: 'afterBatchCommit:2' });
      expect(killed.signal).toBe('SIGKILL');
      // From the first batch (copied) into the last (not yet): the newer snapshot has it there too.
      await sql('source', s.dbs.source, `UPDATE public.beds SET id = 4505 WHERE id = 20`);
      const stuck = await cli(['run', file], s.env);
      expect(stuck.code).toBe(3);
      expect(stuck.stderr).toContain('cannot create');
      expect(stuck.stderr).toContain('`cloudshift verify <plan> --repair` mends those rows, then `cloudshift run` goes on');
      const repaired = await cli(['verify', file, '--repair'], s.env);
      expect(repaired.code, repaired.stdout + repaired.stderr).toBe(0);
      const done = await cli(['run', file], s.env);
      expect(done.code, done.stderr).toBe(0);
      await expectTablesMatch(s, { 'public.beds': 'id' });
    });
  });

  it('a table without a key copied in part before a kill -9 is copied again whole from the newer snapshot: a row moved to a later page is there once', async () => {
    // Full pages (about 35 rows each): an update of a row on the first page puts its new version
    // on the last, a range the first process had not copied yet.
    await inScenario('keylessresume', COTS_SQL, async (s) => {
      const file = s.plan(cotsPlan('keylessresume'));
      const killed = await spawnRun(s, file, { CLOUDSHIFT_FAULT: 'afterBatchCommit:1' });
      expect(killed.signal).toBe('SIGKILL');
      const [moved] = await sql<{ page: string }>(
        'source',
        s.dbs.source,
        `WITH u AS (UPDATE public.cots SET label = label || ' moved' WHERE n <= 20 RETURNING ctid)
         SELECT min((ctid::text::point)[0])::text AS page FROM u`,
      );
      // The new versions are beyond the first range (pages 0 to about 14).
      expect(Number(moved!.page)).toBeGreaterThan(20);
      const resumed = await spawnRun(s, file);
      expect(resumed.code, resumed.out).toBe(0);
      const [count] = await sql<{ n: string }>('target', s.dbs.target, 'SELECT count(*)::text AS n FROM public.cots');
      expect(count!.n).toBe('2000');
      await expectTablesMatch(s, { 'public.cots': 'n, label' });
      expect(resumed.out).toContain('tables without a key are copied again whole (public.cots)');
    });
  });

  it('with the state store in another database, a keyless batch committed on the target but not marked before a kill -9 is not copied twice', async () => {
    await inScenario('keylessstate', COTS_SQL, async (s) => {
      const store = `${s.dbs.target}_state`;
      await sql('target', 'postgres', `CREATE DATABASE "${store}"`);
      try {
        const file = s.plan(cotsPlan('keylessstate', 'state: { postgres: "${env:STATE_DATABASE_URL}" }\n'));
        const env = { ...s.env, STATE_DATABASE_URL: connectionUrl('target', store) };
        // After the first batch's rows commit on the target, before its mark reaches the store.
        const killed = await spawnCli(['run', file], { ...env, CLOUDSHIFT_FAULT: 'afterBatchCommit:1' });
        expect(killed.signal).toBe('SIGKILL');
        const [rows] = await sql<{ n: string }>('target', s.dbs.target, 'SELECT count(*)::text AS n FROM public.cots');
        expect(Number(rows!.n)).toBeGreaterThan(0);
        const resumed = await cli(['run', file], env);
        expect(resumed.code, resumed.stdout + resumed.stderr).toBe(0);
        const [count] = await sql<{ n: string }>('target', s.dbs.target, 'SELECT count(*)::text AS n FROM public.cots');
        expect(count!.n).toBe('2000');
        await expectTablesMatch(s, { 'public.cots': 'n, label' });
      } finally {
        await sql('target', 'postgres', `DROP DATABASE IF EXISTS "${store}" WITH (FORCE)`);
      }
    });
  });

  it('a run resumed with its source reference resolving to another database is refused (exit 4) naming both, never the connection string', async () => {
    await inScenario('otherdb', COTS_SQL, async (s) => {
      const file = s.plan(cotsPlan('otherdb'));
      const killed = await spawnRun(s, file, { CLOUDSHIFT_FAULT: 'afterBatchCommit:1' });
      expect(killed.signal).toBe('SIGKILL');
      const elsewhere = connectionUrl('source', 'postgres');
      const refused = await cli(['run', file], { ...s.env, SOURCE_DATABASE_URL: elsewhere });
      expect(refused.code, refused.stdout + refused.stderr).toBe(4);
      expect(refused.stderr).toMatch(
        /began on other databases: the source is database "postgres" of server \d+, not database "[^"]+" of server \d+/,
      );
      expect(refused.stderr).toContain("set the plan's source.postgres as when the run began");
      expect(refused.stdout + refused.stderr).not.toContain(new URL(elsewhere).password);
      // A worker may not move the run, even forced; nor may a verification (a repair would make
      // the target match the wrong source).
      const worker = await cli(['run', file, '--worker-only', '--force'], { ...s.env, SOURCE_DATABASE_URL: elsewhere });
      expect(worker.code, worker.stderr).toBe(4);
      expect(worker.stderr).toContain('began on other databases');
      expect(worker.stderr).not.toContain('--force');
      const verify = await cli(['verify', file, '--repair'], { ...s.env, SOURCE_DATABASE_URL: elsewhere });
      expect(verify.code, verify.stderr).toBe(4);
      expect(verify.stderr).toContain('began on other databases: the source is database "postgres"');
      // The dry run says so beforehand.
      const dry = await cli(['dry-run', file, '--format', 'json'], { ...s.env, SOURCE_DATABASE_URL: elsewhere });
      const checks = (JSON.parse(dry.stdout) as { checks: Array<{ id: string; status: string; message: string }> }).checks;
      expect(checks.find((c) => c.id === 'state.run')).toMatchObject({
        status: 'fail',
        message: expect.stringMatching(/began on other databases: the source is database "postgres"/),
      });
      // Nothing was done on the other database, nor recorded.
      const [batches] = await sql<{ n: string }>(
        'target',
        s.dbs.target,
        `SELECT count(*)::text AS n FROM cloudshift.batches WHERE status = 'copied'`,
      );
      expect(batches!.n).toBe('1');
      const resumed = await cli(['run', file], s.env);
      expect(resumed.code, resumed.stderr).toBe(0);
      await expectTablesMatch(s, { 'public.cots': 'n, label' });
    });
  });

  it('a real SIGINT stops the process at a safe point: run id, the command to resume, exit 130', async () => {
    const s = await scenario('copysigint');
    try {
      const file = s.plan(TABLES_PLAN.replace('jobs: 3', 'jobs: 1'));
      const stopped = await spawnRun(s, file, { CLOUDSHIFT_FAULT: 'afterBatchCommit:1:SIGINT' });
      expect(stopped.code).toBe(130);
      expect(stopped.out).toContain('stopping at a safe point (Ctrl-C again to stop at once)');
      expect(stopped.out).toMatch(
        new RegExp(
          `stopped at a safe point: run [0-9a-f-]{36}\\. Resume with: cloudshift run ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`,
        ),
      );
      const resumed = await spawnRun(s, file);
      expect(resumed.code).toBe(0);
      await expectIdentical(s);
    } finally {
      await s.drop();
    }
  });

  it('stops resumably when the connection keeps failing past the retry budget (exit 3), then resumes', async () => {
    const s = await scenario('copyflaky');
    try {
      const file = s.plan(TABLES_PLAN);
      const loaded = await loadPlan(file);
      const err = await runMigration(loaded, {
        env: s.env,
        transientAttempts: 2,
        retryBaseDelayMs: 5,
        hooks: {
          beforeBatchCommit: async () => {
            await sql(
              'target',
              s.dbs.target,
              `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cloudshift copy' AND datname = current_database()`,
            );
          },
        },
      }).catch((e: unknown) => e);
      expect(err).toMatchObject({
        exitCode: 3,
        hint: 'every batch copied so far is kept; fix the connection and run the same command again to resume',
      });
      expect((err as Error).message).toMatch(/^the copy stopped after repeated connection failures: /);
      const resumed = await cli(['run', file], s.env);
      expect(resumed.code).toBe(0);
      await expectIdentical(s);
    } finally {
      await s.drop();
    }
  });

  it('a run whose state store session (the one holding its lock) is cut stops at a safe point (exit 3) instead of going on unlocked; the rerun finishes', async () => {
    const s = await scenario('copylock');
    try {
      const file = s.plan(TABLES_PLAN.replace('jobs: 3', 'jobs: 1'));
      const err = await runWithLockCut(s, file, 'afterBatchCommit');
      expect(err).toMatchObject({
        exitCode: 3,
        hint: 'check that the state store answers, then run the same command again: it resumes the run, or joins the process leading it',
      });
      expect((err as Error).message).toMatch(/^the state store session holding this process's locks ended \(.*terminating connection/);
      const state = await sql<{ phase: string; left: string }>(
        'target',
        s.dbs.target,
        `SELECT r.phase, (SELECT count(*) FROM cloudshift.batches b WHERE b.run_id = r.id AND b.status <> 'verified') AS left
           FROM cloudshift.runs r`,
      );
      expect(state).toHaveLength(1);
      expect(state[0]!.phase).toBe('copy');
      expect(Number(state[0]!.left)).toBeGreaterThan(0);
      const rerun = await cli(['run', file], s.env);
      expect(rerun.code).toBe(0);
      await expectIdentical(s);
    } finally {
      await s.drop();
    }
  });

  it('a run whose lock is lost after the copy builds no index and finishes nothing (exit 3); the rerun finishes', async () => {
    const s = await scenario('copylockafter');
    try {
      const file = s.plan(TABLES_PLAN);
      const err = await runWithLockCut(s, file, 'beforePostData');
      expect(err).toMatchObject({ exitCode: 3 });
      const state = await sql<{ phase: string; status: string }>('target', s.dbs.target, `SELECT phase, status FROM cloudshift.runs`);
      expect(state).toEqual([{ phase: 'copy', status: 'active' }]);
      const rerun = await cli(['run', file], s.env);
      expect(rerun.code).toBe(0);
      await expectIdentical(s);
    } finally {
      await s.drop();
    }
  });

  it('Ctrl-C stops at a safe point, prints the run id and how to resume (exit 130); the rerun finishes', async () => {
    const s = await scenario('copyint');
    try {
      const file = s.plan(TABLES_PLAN.replace('jobs: 3', 'jobs: 1'));
      const controller = new AbortController();
      const loaded = await loadPlan(file);
      const first = await runMigration(loaded, {
        env: s.env,
        abortSignal: controller.signal,
        hooks: { afterBatchCommit: () => controller.abort() },
      });
      expect(first.interrupted).toBe(true);
      const done = await sql<{ n: string }>(
        'target',
        s.dbs.target,
        `SELECT count(*) AS n FROM cloudshift.batches WHERE status IN ('copied', 'verified')`,
      );
      expect(Number(done[0]!.n)).toBeGreaterThanOrEqual(1);
      const rerun = await cli(['run', file], s.env);
      expect(rerun.code).toBe(0);
      await expectIdentical(s);
    } finally {
      await s.drop();
    }
  });
});
