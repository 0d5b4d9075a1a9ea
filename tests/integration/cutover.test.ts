/**
 * Cutover and rollback through a real PgBouncer, with an application writing through it all the
 * time (tests/harness/appSimulator.ts). The proof: zero client errors, every acknowledged write on
 * the live side exactly once, the sum invariant intact, both sides equal at the end, every pause
 * under maxPause; through cutover (a `cloudshift run` syncing in another process), rollback,
 * cutover again (no sync running: cutover catches up itself) and a final rollback.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { BlobServiceClient } from '@azure/storage-blob';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { rejectionOf } from '../harness/outcome.js';
import { cli, spawnCli } from '../harness/cli.js';
import { startFaultProxy } from '../harness/faultProxy.js';
import { abortBeforeCutover, cutover, rollback } from '../../src/cutover/commands.js';
import { loadPlan } from '../../src/plan/parse.js';
import { forwardObjects } from '../../src/sync/forward.js';
import { CleanupRegistry } from '../../src/embedded/cleanup.js';
import { ensurePostgresOsUser, loadPostgres, startPostgres } from '../../src/embedded/postgres.js';
import { freePorts, scratchDir } from '../../src/embedded/util.js';
import { expectTablesMatch } from '../harness/compare.js';
import { connectionUrl, harness, sql } from '../harness/db.js';
import { cutRunLockSession, HOSPITAL_PLAN, hospitalScenario, type Scenario } from '../harness/scenario.js';
import { APP_DATABASE, pgbouncerAvailable, startTestBouncer, type TestBouncer } from '../harness/pgbouncer.js';
import { APP_SQL, AppSimulator, TOTAL } from '../../src/demo/appSimulator.js';

const TABLES: Record<string, string> = { 'public.accounts': 'id', 'public.ledger': 'key', 'public.events': 'id' };

interface SwitchJson {
  switched: boolean;
  pauseMs: number | null;
  reason?: string;
  syncElsewhere: boolean;
  recovered?: { outcome: string };
  steps: Array<{ step: string; ms: number }>;
}

describe.runIf(pgbouncerAvailable())('cutover and rollback through PgBouncer', () => {
  let s: Scenario;
  let b: TestBouncer;
  let file: string;
  let env: Record<string, string>;
  const pauses: number[] = [];
  const steps: string[] = [];

  beforeAll(async () => {
    s = await hospitalScenario('cutover', { load: false });
    await sql('source', s.dbs.source, `${APP_SQL}; CREATE SEQUENCE public.mrn_seq START 100`);
    b = await startTestBouncer(s.dbs);
    env = { ...s.env, ...b.env };
    file = s.plan(`version: 1
name: proof
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.accounts
  - name: public.ledger
  - name: public.events
sequences: [public.mrn_seq]
copy: { jobs: 2, batch: { rows: 200 } }
sync: { mode: logical }
${b.cutoverYaml()}`);
  });
  afterAll(async () => {
    await cli(['cleanup', file], env).catch(() => undefined);
    await b?.stop();
    await s?.drop();
  });

  const routedTo = async (): Promise<string> => {
    const admin = new pg.Client({ connectionString: b.adminUrl });
    await admin.connect();
    try {
      const { rows } = await admin.query<{ name: string; port: number; paused: number }>('SHOW DATABASES');
      const row = rows.find((r) => r.name === APP_DATABASE)!;
      expect(Number(row.paused), 'PgBouncer is left paused').toBe(0);
      return Number(row.port) === harness().target.port ? 'target' : 'source';
    } finally {
      await admin.end();
    }
  };

  const sumOf = async (side: 'source' | 'target') =>
    Number(
      (
        await sql<{ s: string }>(
          side,
          side === 'source' ? s.dbs.source : s.dbs.target,
          'SELECT sum(balance)::text AS s FROM public.accounts',
        )
      )[0]!.s,
    );

  /** A standalone sequence the plan lists: nextval() `n` times on one side, or where it stands. */
  const mrn = async (side: 'source' | 'target', n = 0) => {
    const db = side === 'source' ? s.dbs.source : s.dbs.target;
    if (n > 0) await sql(side, db, `SELECT nextval('public.mrn_seq') FROM generate_series(1, ${n})`);
    return (await sql<{ v: string }>(side, db, 'SELECT last_value::text AS v FROM public.mrn_seq'))[0]!.v;
  };

  const switchWith = async (command: 'cutover' | 'rollback'): Promise<SwitchJson> => {
    const r = await cli([command, file, '--json'], env);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as SwitchJson;
    expect(json.switched, json.reason).toBe(true);
    pauses.push(json.pauseMs!);
    steps.push(json.steps.map((x) => `${x.step} ${x.ms}`).join(', '));
    return json;
  };

  it('the dry run checks the switch: the databases file and the admin console, read-only', async () => {
    const r = await cli(['dry-run', file, '--format', 'json'], env);
    const report = JSON.parse(r.stdout) as { checks: Array<{ id: string; status: string; message: string }> };
    const byId = (id: string) => report.checks.find((c) => c.id === id);
    expect(byId('switch.pgbouncer.config')).toMatchObject({ status: 'pass', message: expect.stringMatching(/routes to the source/) });
    expect(byId('switch.pgbouncer.admin')).toMatchObject({ status: 'pass', message: expect.stringMatching(/pool_mode transaction/) });
    // A wrong database name is a failed check, naming it.
    const wrong = s.plan(readFileSync(file, 'utf8').replace(`database: ${APP_DATABASE}`, 'database: nosuchdb'), 'wrong.yaml');
    const w = await cli(['dry-run', wrong, '--format', 'json'], env);
    const failed = (JSON.parse(w.stdout) as typeof report).checks.filter((c) => c.status === 'fail').map((c) => c.message);
    expect(failed.join('\n')).toMatch(/no \[databases\] entry for "nosuchdb"/);
    expect(failed.join('\n')).toMatch(/PgBouncer has no database "nosuchdb"/);
  });

  it(
    'keeps a live application writing without a single error through cutover, rollback and cutover again',
    { timeout: 240_000 },
    async () => {
      const app = new AppSimulator(b.appUrl, 50, 'sim');
      app.start();
      try {
        await app.waitFor(30);
        // Copy and catch up while the application writes.
        const first = await cli(['run', file, '--until', 'synced'], env);
        expect(first.code, first.stderr).toBe(0);
        // The application draws numbers from its own sequence after the copy set it: cutover carries them.
        expect(await mrn('source', 5)).toBe('104');

        // A `cloudshift run` syncs in another process; the target's sum holds whenever sampled.
        const runner = spawn('node', ['bin/cloudshift.js', 'run', file], { env: { ...process.env, ...env }, stdio: 'ignore' });
        const runnerExit = new Promise<number | null>((resolve) => runner.once('exit', (code) => resolve(code)));
        for (let i = 0; i < 20; i++) {
          expect(await sumOf('target')).toBe(TOTAL);
          await new Promise((r) => setTimeout(r, 50));
        }
        await app.waitFor(20);

        // Cutover 1: the syncing process applies up to the fence, then stops by itself. The
        // cutover's host clock runs 10 minutes ahead: the sync's lag is fresh by the state store's.
        const now = Date.now.bind(Date);
        const ahead = vi.spyOn(Date, 'now').mockImplementation(() => now() + 600_000);
        const cut1 = await switchWith('cutover').finally(() => ahead.mockRestore());
        expect(cut1.syncElsewhere).toBe(true);
        expect(await runnerExit).toBe(0);
        expect(await routedTo()).toBe('target');
        expect(await mrn('target')).toBe('104');
        expect(await mrn('target', 3)).toBe('107');
        await app.waitFor(40);
        // The source refuses writes that bypass PgBouncer.
        const h = harness();
        const direct = new pg.Client({
          connectionString: connectionUrl('source', s.dbs.source).replace(
            /\/\/[^@]+@/,
            `//${h.app.user}:${encodeURIComponent(h.app.password)}@`,
          ),
        });
        await direct.connect();
        await expect(direct.query(`UPDATE public.accounts SET balance = balance WHERE id = 1`)).rejects.toMatchObject({ code: '25006' });
        await direct.end();
        const slotsAfterCutover = await sql<{ slot_name: string }>(
          'source',
          'postgres',
          `SELECT slot_name FROM pg_replication_slots WHERE database = $1`,
          [s.dbs.source],
        );
        expect(slotsAfterCutover).toEqual([]);

        // Rollback: the writes made on the target come back to the source.
        await switchWith('rollback');
        expect(await routedTo()).toBe('source');
        expect(await mrn('source')).toBe('107');
        await app.waitFor(40);

        // Cutover 2: nothing syncs; cutover catches up itself.
        const cut2 = await switchWith('cutover');
        expect(cut2.syncElsewhere).toBe(false);
        expect(await routedTo()).toBe('target');
        await app.waitFor(40);
      } finally {
        await app.stop();
      }
      // A final rollback brings everything to the source, which the comparison below reads.
      await switchWith('rollback');
      expect(app.errors).toEqual([]);
      const ledger = await sql<{ key: string }>('source', s.dbs.source, 'SELECT key FROM public.ledger');
      expect(ledger.length).toBe(app.acknowledged.length);
      expect(new Set(ledger.map((r) => r.key))).toEqual(new Set(app.acknowledged));
      expect(await sumOf('source')).toBe(TOTAL);
      expect(await sumOf('target')).toBe(TOTAL);
      await expectTablesMatch(s, TABLES);
      console.log(
        `[cutover] write pauses (ms): ${pauses.join(', ')}; slowest client transaction ${Math.round(app.slowestMs)} ms; ${app.acknowledged.length} transactions\n${steps.join('\n')}`,
      );
      expect(pauses).toHaveLength(4);
      for (const p of pauses) expect(p).toBeLessThan(5000);
      const status = await cli(['status', file, '--json'], env);
      expect(JSON.parse(status.stdout)).toMatchObject({ run: { phase: 'sync' } });
    },
  );

  it('aborts a PAUSE held up by a long transaction, names the session, and resumes on the source', { timeout: 60_000 }, async () => {
    const holder = new pg.Client({ connectionString: b.appUrl });
    await holder.connect();
    await holder.query('BEGIN');
    await holder.query('UPDATE public.accounts SET balance = balance WHERE id = 2');
    const { rows } = await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    try {
      const r = await cli(['cutover', file, '--json'], env);
      expect(r.code, r.stderr).toBe(1);
      const json = JSON.parse(r.stdout) as SwitchJson;
      expect(json.switched).toBe(false);
      expect(json.reason).toContain(`session pid ${rows[0]!.pid}`);
      expect(json.reason).toMatch(/in a transaction open for/);
    } finally {
      await holder.query('COMMIT');
      await holder.end();
    }
    expect(await routedTo()).toBe('source');
    // Unfenced: a write straight to the source goes through.
    await sql('source', s.dbs.source, 'UPDATE public.accounts SET balance = balance WHERE id = 1');
    const app = new AppSimulator(b.appUrl, 20, 'after-abort');
    app.start();
    await app.waitFor(5);
    await app.stop();
    expect(app.errors).toEqual([]);
  });

  it(
    'after kill -9 inside the pause, the next command undoes or finishes the cutover; PgBouncer is never left paused',
    { timeout: 120_000 },
    async () => {
      const app = new AppSimulator(b.appUrl, 30, 'kill');
      app.start();
      try {
        await app.waitFor(10);
        // Killed after the fence, before the switch: the guard it left resumes PgBouncer on the
        // source by itself, without waiting for another command.
        const killed = await spawnCli(['cutover', file], { ...env, CLOUDSHIFT_FAULT: 'cutoverStep:4' });
        expect(killed.signal).toBe('SIGKILL');
        const before = app.count;
        await app.waitFor(10, 20_000);
        expect(app.count).toBeGreaterThan(before);
        expect(await routedTo()).toBe('source');
        const status = await cli(['status', file, '--json'], env);
        expect(status.stdout).toContain('was undone');
        /** `command` killed at its n-th step with its guard lost too; the next `command` recovers it. */
        const killedThenRecovered = async (command: 'cutover' | 'rollback', step: number, outcome: string, side: string) => {
          const killed = await spawnCli([command, file], { ...env, CLOUDSHIFT_FAULT: `cutoverStep:${step}`, CLOUDSHIFT_NO_GUARD: '1' });
          expect(killed.signal).toBe('SIGKILL');
          const next = await cli([command, file, '--json'], env);
          expect(next.code, next.stderr).toBe(0);
          const json = JSON.parse(next.stdout) as SwitchJson;
          expect(json.recovered?.outcome).toBe(outcome);
          expect(json.switched).toBe(true);
          expect(await routedTo()).toBe(side);
          await app.waitFor(10);
        };
        // Killed the same way: the next command undoes it, then cuts over.
        await killedThenRecovered('cutover', 4, 'undone', 'target');
        // Killed after the switch, before RESUME: finished by the next command.
        await killedThenRecovered('rollback', 10, 'finished', 'source');
        // Killed with the databases file naming the target, before its RELOAD: the next command
        // finishes the cutover, and PgBouncer must route there (not resume on the fenced source).
        await killedThenRecovered('cutover', 9, 'finished', 'target');
        const back = await cli(['rollback', file], env);
        expect(back.code, back.stderr).toBe(0);
        expect(await routedTo()).toBe('source');
        await app.waitFor(10);
      } finally {
        await app.stop();
      }
      expect(app.errors).toEqual([]);
      const ledger = await sql<{ n: string }>(
        'source',
        s.dbs.source,
        `SELECT count(*)::text AS n FROM public.ledger WHERE key LIKE 'kill-%'`,
      );
      expect(Number(ledger[0]!.n)).toBe(app.acknowledged.length);
    },
  );

  it(
    'aborts when PgBouncer restarts inside the pause: the restarted PgBouncer routes to the source, which is unfenced again',
    { timeout: 60_000 },
    async () => {
      const loaded = await loadPlan(file);
      const result = await cutover(loaded, {
        env,
        hooks: {
          cutoverStep: async (step) => {
            if (step === 'fenced') await b.bouncer.restart();
          },
        },
      });
      expect(result.switched).toBe(false);
      expect(result.reason).toMatch(/no longer paused/);
      expect(await routedTo()).toBe('source');
      // Unfenced: a write straight to the source goes through.
      await sql('source', s.dbs.source, 'UPDATE public.accounts SET balance = balance WHERE id = 1');
      const slots = await sql<{ slot_name: string }>(
        'target',
        'postgres',
        `SELECT slot_name FROM pg_replication_slots WHERE database = $1`,
        [s.dbs.target],
      );
      expect(slots).toEqual([]);
      // And the next cutover goes through.
      await switchWith('cutover');
      expect(await routedTo()).toBe('target');
    },
  );

  it(
    'leaves an error after the commit point to the guard, which finishes the switch: PgBouncer is not left paused',
    { timeout: 60_000 },
    async () => {
      // The last test left the application on the target. The state store fails (as in a
      // failover) once the rollback has named the source, before RESUME.
      const loaded = await loadPlan(file);
      const back = rollback(loaded, {
        env,
        hooks: { cutoverStep: (step) => (step === 'switched' ? Promise.reject(new Error('store blip')) : Promise.resolve()) },
      });
      await expect(back).rejects.toThrow('store blip');
      // The guard, once this process's switch lock went with its session, resumes PgBouncer.
      const admin = new pg.Client({ connectionString: b.adminUrl });
      await admin.connect();
      try {
        const started = Date.now();
        for (;;) {
          const { rows } = await admin.query<{ name: string; port: number; paused: number }>('SHOW DATABASES');
          const row = rows.find((r) => r.name === APP_DATABASE)!;
          if (Number(row.paused) === 0) break;
          expect(Date.now() - started, 'PgBouncer is left paused').toBeLessThan(30_000);
          await new Promise((r) => setTimeout(r, 100));
        }
      } finally {
        await admin.end();
      }
      expect(await routedTo()).toBe('source');
      const status = await cli(['status', file, '--json'], env);
      expect(status.stdout).not.toContain('unfinished');
      await switchWith('cutover');
    },
  );

  it(
    'rolls back while a reader holds the source tables (a pg_dump): lifting the fence waits for no table lock',
    { timeout: 60_000 },
    async () => {
      // The last test left the application on the target. A reader on the source holds ACCESS SHARE
      // on a fenced table for 4 s (the fault); dropping a trigger would wait for it inside the pause.
      const reader = new pg.Client({ connectionString: connectionUrl('source', s.dbs.source) });
      await reader.connect();
      try {
        await reader.query('BEGIN');
        await reader.query('SELECT count(*) FROM public.ledger');
        const released = new Promise((r) => setTimeout(r, 4000)).then(() => reader.query('COMMIT'));
        const json = await switchWith('rollback');
        await released;
        expect(json.pauseMs).toBeLessThan(2000);
        expect(await routedTo()).toBe('source');
        await sql('source', s.dbs.source, 'UPDATE public.accounts SET balance = balance WHERE id = 1');
      } finally {
        await reader.end();
      }
    },
  );

  it(
    "resumes on the source when the target's server goes away inside the pause; the next command finishes the undo",
    { timeout: 60_000 },
    async () => {
      const failed = (await rejectionOf(
        cutover(await loadPlan(file), {
          env,
          hooks: {
            cutoverStep: async (step) => {
              // The fault: the switch's target session ends once the reverse slot is made.
              if (step === 'prepared')
                await sql(
                  'target',
                  'postgres',
                  `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cloudshift switch'`,
                );
            },
          },
        }),
      )) as { code?: string; message: string } | null;
      // Not left paused (routedTo checks), and the source takes writes again.
      expect(await routedTo()).toBe('source');
      await sql('source', s.dbs.source, 'UPDATE public.accounts SET balance = balance WHERE id = 1');
      expect(failed?.code, failed?.message).toBe('CS_SWITCH_UNDO');
      // The next cutover first finishes the undo (the reverse slot goes), then switches.
      const json = await switchWith('cutover');
      expect(json.recovered?.outcome).toBe('undone');
      expect(await routedTo()).toBe('target');
    },
  );

  it('bounds making the slot by the pause budget, and drops a slot a killed switch left behind', { timeout: 60_000 }, async () => {
    // The application is on the target. A transaction holding an xid in another database of the
    // source server (the fault, 8 s) keeps the forward slot from being made inside the pause.
    const blocker = new pg.Client({ connectionString: connectionUrl('source', 'postgres') });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('CREATE TEMP TABLE held (i int)');
      const released = new Promise((r) => setTimeout(r, 8000)).then(() => blocker.query('COMMIT'));
      const r = await cli(['rollback', file, '--json'], env);
      await released;
      expect(r.code, r.stderr).toBe(1);
      expect((JSON.parse(r.stdout) as SwitchJson).reason).toMatch(/waited more than \d+ ms for transactions open on the source server/);
      expect(await routedTo()).toBe('target');
    } finally {
      await blocker.end();
    }
    // A forward slot of the same name, as a switch killed after making it would leave.
    const slot = forwardObjects((await loadPlan(file)).plan).slot.name;
    await sql('source', s.dbs.source, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
    await switchWith('rollback');
    expect(await routedTo()).toBe('source');
  });
});

describe('cutover and rollback with a command switch, documents, and rollback before cutover', () => {
  let s: Scenario;
  let file: string;
  let sideFile: string;
  beforeAll(async () => {
    s = await hospitalScenario('cmdswitch');
    await sql(
      'source',
      s.dbs.source,
      `CREATE TABLE public.vitals (id int, at date, pulse int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
       CREATE TABLE public.vitals_2025 PARTITION OF public.vitals FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
       CREATE TABLE public.vitals_2026 PARTITION OF public.vitals FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
       INSERT INTO public.vitals SELECT g, date '2025-06-01' + g, 60 + g % 40 FROM generate_series(1, 400) g;`,
    );
    sideFile = join(s.dir, 'side.txt');
    // The command also echoes a connection string, as deployment tools echo the settings they changed.
    file =
      s.plan(`${HOSPITAL_PLAN.replace('name: hospital', 'name: cmdswitch').replace('  - name: public.medications\n', '  - name: public.medications\n  - name: public.vitals\n')}
copy: { jobs: 2, batch: { rows: 500 } }
cutover:
  switch: { command: { run: "echo $CLOUDSHIFT_SIDE $CLOUDSHIFT_PORT > '${sideFile}'; echo DATABASE_URL=postgres://app:Echoed5ecret@db.example/ehr; echo + PGPASSWORD=Traced5ecret psql; ${process.execPath} -e 'console.log(new URL(process.env.TARGET_DATABASE_URL).password)'" } }
  maxPause: 5s
`);
  });
  afterAll(async () => {
    await cli(['cleanup', file], s.env).catch(() => undefined);
    await s?.drop();
  });

  it('replays a document and a row written on the target back to the source at rollback', { timeout: 120_000 }, async () => {
    expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
    // A sequence the plan lists only once the run syncs: cutover refuses until a run has made it.
    await sql('source', s.dbs.source, `CREATE SEQUENCE public.late_seq START 40; SELECT nextval('public.late_seq')`);
    const late = s.plan(readFileSync(file, 'utf8').replace('copy: {', 'sequences: [public.late_seq]\ncopy: {'), 'late.yaml');
    const refused = await cli(['cutover', late], s.env);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain('error: sequence public.late_seq of the plan is not on the target yet');
    expect((await cli(['run', late, '--force', '--until', 'synced'], s.env)).code).toBe(0);
    expect(await sql('target', s.dbs.target, `SELECT last_value::text AS v FROM public.late_seq`)).toEqual([{ v: '40' }]);
    expect((await cli(['run', file, '--force', '--until', 'synced'], s.env)).code).toBe(0);
    // A verify that finds the target differing holds the cutover back until a verify finds it matching.
    await sql('target', s.dbs.target, `UPDATE public.patients SET given_name = given_name || '!' WHERE id = 7`);
    expect((await cli(['verify', file, '--table', 'public.patients'], s.env)).code).toBe(1);
    const held = await cli(['cutover', file], s.env);
    expect(held.code).toBe(3);
    expect(held.stderr).toMatch(/error: the last verify found the target differing from the source in public\.patients \(1 differences, /);
    expect((await cli(['verify', file, '--table', 'public.patients', '--repair'], s.env)).code).toBe(0);
    const cut = await cli(['cutover', file, '--json'], s.env);
    expect(cut.code, cut.stderr).toBe(0);
    expect(readFileSync(sideFile, 'utf8').trim()).toBe(`target ${harness().target.port}`);
    expect(cut.stderr).toContain('DATABASE_URL=postgres://app:***@db.example/ehr');
    expect(cut.stderr).not.toContain('Echoed5ecret');
    // A setting traced under a longer name, and the target's password printed bare (the command inherits it).
    expect(cut.stderr).toContain('+ PGPASSWORD=*** psql');
    expect(cut.stderr).not.toContain('Traced5ecret');
    expect(cut.stderr).not.toContain(harness().target.password);
    const status = await cli(['status', file], s.env);
    expect(status.stdout).toMatch(/cut over to the target at .*, write pause \d+ ms/);
    expect(status.stdout).toMatch(/next: cut over: .*cloudshift rollback/);

    // The application, now on the target, writes a letter (to Blob Storage, its name in the row) and edits a patient.
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const container = BlobServiceClient.fromConnectionString(harness().azurite.connectionString).getContainerClient(s.container);
    await container.getBlockBlobClient('patients/3/900-new.pdf').uploadData(bytes);
    await sql(
      'target',
      s.dbs.target,
      `INSERT INTO public.documents (id, patient_id, filename, blob_path) VALUES (900, 3, 'new.pdf', 'patients/3/900-new.pdf');
       UPDATE public.patients SET family_name = 'OnAzure' WHERE id = 4;`,
    );
    // Two letters whose first blob is gone by the rollback: one renamed (its new blob replaces
    // it), one deleted with its blob. Their first inserts replay with no bytes to read.
    const v2 = Buffer.from('second version');
    for (const name of ['patients/3/901-draft.pdf', 'patients/3/902-draft.pdf', 'patients/3/901-final.pdf'])
      await container.getBlockBlobClient(name).uploadData(name.endsWith('final.pdf') ? v2 : bytes);
    await sql(
      'target',
      s.dbs.target,
      `INSERT INTO public.documents (id, patient_id, filename, blob_path) VALUES
         (901, 3, 'draft.pdf', 'patients/3/901-draft.pdf'), (902, 3, 'draft.pdf', 'patients/3/902-draft.pdf');
       UPDATE public.documents SET filename = 'final.pdf', blob_path = 'patients/3/901-final.pdf' WHERE id = 901;
       DELETE FROM public.documents WHERE id = 902;`,
    );
    await container.deleteBlob('patients/3/901-draft.pdf');
    await container.deleteBlob('patients/3/902-draft.pdf');
    // The source is read-only now, a partition named directly too.
    await expect(sql('source', s.dbs.source, `UPDATE public.patients SET family_name = 'x' WHERE id = 5`)).rejects.toMatchObject({
      code: '25006',
    });
    await expect(sql('source', s.dbs.source, `INSERT INTO public.vitals_2025 VALUES (1000, '2025-03-01', 70)`)).rejects.toMatchObject({
      code: '25006',
    });
    await sql('target', s.dbs.target, `INSERT INTO public.vitals_2026 VALUES (1001, '2026-03-01', 71)`);

    const back = await cli(['rollback', file, '--json'], s.env);
    expect(back.code, back.stdout + back.stderr).toBe(0);
    expect(readFileSync(sideFile, 'utf8').trim()).toBe(`source ${harness().source.port}`);
    const doc = await sql<{ hex: string }>(
      'source',
      s.dbs.source,
      `SELECT encode(content, 'hex') AS hex FROM public.documents WHERE id = 900`,
    );
    expect(doc[0]?.hex).toBe(bytes.toString('hex'));
    const later = await sql<{ id: string; hex: string }>(
      'source',
      s.dbs.source,
      `SELECT id::text, encode(content, 'hex') AS hex FROM public.documents WHERE id IN (901, 902) ORDER BY id`,
    );
    expect(later).toEqual([{ id: '901', hex: v2.toString('hex') }]);
    const p = await sql<{ family_name: string }>('source', s.dbs.source, `SELECT family_name FROM public.patients WHERE id = 4`);
    expect(p[0]?.family_name).toBe('OnAzure');
    const vital = await sql('source', s.dbs.source, `SELECT pulse FROM public.vitals WHERE id = 1001`);
    expect(vital).toEqual([{ pulse: 71 }]);
    // The source takes writes again; the target is fenced, its partitions too.
    await sql('source', s.dbs.source, `UPDATE public.patients SET family_name = 'back' WHERE id = 5`);
    await expect(sql('target', s.dbs.target, `UPDATE public.patients SET family_name = 'x' WHERE id = 5`)).rejects.toMatchObject({
      code: '25006',
    });
    await expect(sql('target', s.dbs.target, `DELETE FROM public.vitals_2025 WHERE id = 1`)).rejects.toMatchObject({ code: '25006' });
  });

  it(
    'rolls back before cutover: stops the sync, drops the slot and publication, and with --drop-target the tables',
    { timeout: 60_000 },
    async () => {
      const r = await cli(['rollback', file, '--drop-target', '--json'], s.env);
      expect(r.code, r.stderr).toBe(0);
      const json = JSON.parse(r.stdout) as { beforeCutover: boolean; droppedTables: string[]; cleanup: { runStatus: string } };
      expect(json.beforeCutover).toBe(true);
      expect(json.cleanup.runStatus).toBe('aborted');
      // The documents table too: a new run refuses a target that holds rows.
      expect(json.droppedTables).toEqual(expect.arrayContaining(['public.patients', 'public.documents']));
      const slots = await sql('source', 'postgres', `SELECT slot_name FROM pg_replication_slots WHERE database = $1`, [s.dbs.source]);
      expect(slots).toEqual([]);
      const left = await sql(
        'target',
        s.dbs.target,
        `SELECT to_regclass('public.patients')::text AS t, to_regclass('public.documents')::text AS d`,
      );
      expect(left).toEqual([{ t: null, d: null }]);
      // The source is untouched and writable.
      await sql('source', s.dbs.source, `UPDATE public.patients SET family_name = 'still' WHERE id = 6`);
      // status says the run has ended: another `run` starts a new one (no resuming this one).
      const status = await cli(['status', file], s.env);
      expect(status.stdout).toContain(
        `next: this run was rolled back before cutover and has ended (the source untouched): \`cloudshift run ${file}\` starts a new one`,
      );
    },
  );
});

/** The scans table of the large-object cutover tests, without rows. */
const SCANS_TABLE = `CREATE TABLE public.scans (id bigint PRIMARY KEY, filename text NOT NULL, content oid)`;

describe('large-object documents at cutover', () => {
  /** The scans table's large objects to blobs, with live sync and a command switch. */
  const scansPlan = (name: string, command = 'true') => `version: 1
name: ${name}
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target:
  postgres: "\${env:TARGET_DATABASE_URL}"
  blob: { connectionString: "\${env:AZURE_STORAGE_CONNECTION_STRING}", container: "{{container}}" }
documents:
  - table: public.scans
    content: content
    blob: "scans/{id}-{filename}"
    keep: { column: blob_path }
sync: { mode: logical }
cutover:
  switch: { command: { run: '${command}' } }
  # The test servers are shared: another file's long transaction (a 300 MB insert takes 3 s)
  # delays the slot made inside the pause, which waits for every open transaction.
  maxPause: 5s
`;
  /** A scenario of its own with the scans table (`tableSql`), its plan, synced; both go after `test`. */
  async function syncedScans(
    prefix: string,
    tableSql: string,
    command: string,
    test: (r: Scenario, file: string) => Promise<void>,
  ): Promise<void> {
    const r = await hospitalScenario(prefix, { load: false });
    try {
      await sql('source', r.dbs.source, tableSql);
      const file = r.plan(scansPlan(prefix, command));
      expect((await cli(['run', file, '--until', 'synced'], r.env)).code).toBe(0);
      await test(r, file);
      await cli(['cleanup', file], r.env);
    } finally {
      await r.drop();
    }
  }
  let s: Scenario;
  afterAll(async () => s?.drop());

  it('uploads again a large object changed in place (not in the WAL stream) before the switch', { timeout: 60_000 }, async () => {
    s = await hospitalScenario('lorecon', { load: false });
    await sql(
      'source',
      s.dbs.source,
      `CREATE TABLE public.scans (id bigint PRIMARY KEY, filename text NOT NULL, content oid NOT NULL);
       INSERT INTO public.scans SELECT g, 'scan-' || g || '.bin', lo_from_bytea(0, decode(repeat('ab', 1000 * g), 'hex')) FROM generate_series(1, 5) g;`,
    );
    const file = s.plan(scansPlan('lorecon'));
    expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
    // Changed in place: the row (and so the WAL stream) does not change.
    await sql('source', s.dbs.source, `SELECT lo_put(content, 0, '\\x0102030405'::bytea) FROM public.scans WHERE id IN (2, 4)`);
    const r = await cli(['cutover', file, '--json'], s.env);
    expect(r.code, r.stderr).toBe(0);
    const container = BlobServiceClient.fromConnectionString(harness().azurite.connectionString).getContainerClient(s.container);
    for (const id of [1, 2, 3, 4, 5]) {
      const [row] = await sql<{ hex: string }>(
        'source',
        s.dbs.source,
        `SELECT encode(lo_get(content), 'hex') AS hex FROM public.scans WHERE id = $1`,
        [id],
      );
      const blob = await container.getBlobClient(`scans/${id}-scan-${id}.bin`).downloadToBuffer();
      expect(blob.toString('hex'), `scan ${id}`).toBe(row!.hex);
    }
    await cli(['cleanup', file], s.env);
    // The migration is over: the report says when it finished, the sync phase ended at the cutover.
    const out = join(s.dir, 'report.html');
    expect((await cli(['report', file, '--out', out], s.env)).code).toBe(0);
    const html = readFileSync(out, 'utf8');
    expect(html).toMatch(/<dt>Finished at<\/dt><dd><time datetime="\d{4}-/);
    expect(html).toMatch(
      /<td class="nowrap">sync<\/td>.*?<td>next phase began<\/td>.*?<td class="nowrap">cutover<\/td>.*?<td>run finished<\/td>/,
    );
  });
  it(
    'a switch that fails after the fence is undone, and the command says so and where the application is',
    { timeout: 120_000 },
    async () => {
      const command = 'if [ "$CLOUDSHIFT_SIDE" = target ]; then echo no route to the target >&2; exit 7; fi';
      await syncedScans('switchfail', SCANS_TABLE, command, async (r, file) => {
        const cut = await cli(['cutover', file], r.env);
        expect(cut.code).toBe(3);
        expect(cut.stderr, cut.stderr).not.toContain('internal error');
        expect(cut.stderr).toMatch(
          /^error: cutover failed: the switch command exited with status 7: no route to the target; undone: the application resumed on the source \(.*\) after \d+ ms$/m,
        );
        // Still on the source, which takes writes again.
        await sql('source', r.dbs.source, `INSERT INTO public.scans VALUES (1, 'after', NULL)`);
        const status = await cli(['status', file], r.env);
        expect(status.stdout).toMatch(/last cutover: aborted/);
      });
    },
  );

  it.each([
    { writes: 'committed', id: 9 },
    { writes: 'in a transaction still open', id: 12 },
  ])(
    'keeps a switch that failed after the application wrote to the target ($writes); rollback brings those writes back',
    { timeout: 120_000 },
    async ({ id }) => {
      // The command moves part of the application, which writes on the target at once; then it
      // fails. In the second case the write's transaction is still open when it fails (a process
      // of its own commits it 4 s later): the check cannot fence the target before it ends.
      const dir = scratchDir('cs-switch');
      const script = join(dir, 'moved.mjs');
      const started = join(dir, 'started');
      const open = id === 12;
      writeFileSync(
        script,
        `import pg from ${JSON.stringify(createRequire(import.meta.url).resolve('pg'))};
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
const insert = "INSERT INTO public.scans VALUES (${id}, 'written once switched', NULL)";
if (process.argv[2] === 'hold') {
  const c = new pg.Client({ connectionString: process.env.TARGET_DATABASE_URL });
  await c.connect();
  await c.query('BEGIN');
  await c.query(insert);
  writeFileSync(${JSON.stringify(started)}, '');
  await new Promise((r) => setTimeout(r, 4000));
  await c.query('COMMIT');
  await c.end();
} else if (process.env.CLOUDSHIFT_SIDE === 'target') {
  if (${open}) {
    spawn(process.execPath, [process.argv[1], 'hold'], { detached: true, stdio: 'ignore' }).unref();
    while (!existsSync(${JSON.stringify(started)})) await new Promise((r) => setTimeout(r, 20));
  } else {
    const c = new pg.Client({ connectionString: process.env.TARGET_DATABASE_URL });
    await c.connect();
    await c.query(insert);
    await c.end();
  }
  console.error('the second application server did not restart');
  process.exit(7);
}
`,
      );
      try {
        await syncedScans(open ? 'switchkeptopen' : 'switchkept', SCANS_TABLE, `${process.execPath} ${script}`, async (r, file) => {
          const cut = await cli(['cutover', file], r.env);
          expect(cut.code, cut.stderr).toBe(1);
          expect(cut.stderr).toMatch(
            /^error: cutover failed: the switch command exited with status 7: the second application server did not restart; the application had already written to the target \(.*\), so the cutover is kept: .* is read-only \(write pause \d+ ms\)$/m,
          );
          // The source is fenced, the target takes writes, and the status says cut over.
          await expect(sql('source', r.dbs.source, `INSERT INTO public.scans VALUES (10, 'x', NULL)`)).rejects.toThrow(/read-only/);
          await sql('target', r.dbs.target, `INSERT INTO public.scans VALUES (11, 'after the switch', NULL)`);
          const status = (await cli(['status', file], r.env)).stdout;
          expect(status).toMatch(/: phase cutover, active/);
          expect(status).toMatch(
            /cutover:kept: the switch failed \(the switch command exited with status 7: .*\), but the application had already written to the target/,
          );
          // Rolling back replays both writes on the source: none was lost to an undo. (Its PAUSE
          // and fence wait for the held transaction, so it is in.)
          const back = await cli(['rollback', file], r.env);
          expect(back.code, back.stderr).toBe(0);
          const rows = await sql<{ k: string }>(
            'source',
            r.dbs.source,
            `SELECT id::text AS k FROM public.scans WHERE id IN (${id}, 10, 11) ORDER BY id`,
          );
          expect(rows.map((x) => x.k)).toEqual([String(id), '11'].sort((a, b) => Number(a) - Number(b)));
        });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it(
    'a switch killed as it was recorded, before its sides were, is undone by the next command, which then cuts over',
    { timeout: 120_000 },
    async () => {
      await syncedScans('startedbare', SCANS_TABLE, 'true', async (r, file) => {
        // What a cutover killed between recording its start and its sides leaves.
        await sql(
          'target',
          r.dbs.target,
          `INSERT INTO cloudshift.switches (run_id, kind, state, by) SELECT id, 'cutover', 'started', 'killed@host' FROM cloudshift.runs WHERE status = 'active'`,
        );
        const cut = await cli(['cutover', file], r.env);
        expect(cut.stderr).toMatch(/^an interrupted cutover was undone\n/);
        expect(cut.code).toBe(0);
        const events = await sql<{ kind: string; message: string }>(
          'target',
          r.dbs.target,
          `SELECT kind, message FROM cloudshift.events WHERE kind = 'cutover:recovered'`,
        );
        expect(events).toEqual([
          {
            kind: 'cutover:recovered',
            message: expect.stringMatching(/\(state started\) was undone: the application is on the source/) as string,
          },
        ]);
        const [run] = await sql<{ phase: string }>('target', r.dbs.target, `SELECT phase FROM cloudshift.runs`);
        expect(run!.phase).toBe('cutover');
      });
    },
  );

  it(
    'a rollback that looked before a cutover finished refuses under the lock: the run and the target are left as they are',
    { timeout: 120_000 },
    async () => {
      await syncedScans('rollbackrace', SCANS_TABLE, 'true', async (r, file) => {
        expect((await cli(['cutover', file], r.env)).code).toBe(0);
        // As a rollback that found the run in sync just before the cutover took the lock continues.
        const refused = await abortBeforeCutover(await loadPlan(file), { env: r.env, dropTarget: true }).catch((e: unknown) => e);
        expect(String(refused)).toMatch(/a cutover of run \S+ finished while this rollback began: nothing was changed/);
        const [run] = await sql<{ phase: string; status: string }>('target', r.dbs.target, `SELECT phase, status FROM cloudshift.runs`);
        expect(run).toEqual({ phase: 'cutover', status: 'active' });
        const [t] = await sql<{ t: string | null }>('target', r.dbs.target, `SELECT to_regclass('public.scans')::text AS t`);
        expect(t!.t).toBe('scans');
        expect((await cli(['rollback', file], r.env)).code).toBe(0);
      });
    },
  );

  it(
    'a cutover whose switch lock went with its state-store session does not reach its commit point: it is undone',
    { timeout: 120_000 },
    async () => {
      await syncedScans('switchlocklost', SCANS_TABLE, 'true', async (r, file) => {
        const result = await cutover(await loadPlan(file), {
          env: { ...r.env, CLOUDSHIFT_NO_GUARD: '1' },
          hooks: {
            // Once the reverse slot is made, just before the commit point: a failover, say, ends the session.
            cutoverStep: async (step) => {
              if (step === 'prepared') expect(await cutRunLockSession(r, 'switch')).toBe(1);
            },
          },
        });
        expect(result.switched).toBe(false);
        expect(result.reason).toMatch(
          /^the state store session holding the switch lock ended \(.+\): another command may be recovering this cutover$/,
        );
        const [run] = await sql<{ phase: string }>('target', r.dbs.target, `SELECT phase FROM cloudshift.runs`);
        expect(run!.phase).toBe('sync');
        // Undone: the source takes writes again.
        await sql('source', r.dbs.source, `INSERT INTO public.scans VALUES (77, 'after the undo', NULL)`);
      });
    },
  );

  it('a switch killed once done, before it dropped the stream it left, is settled by the next command', { timeout: 120_000 }, async () => {
    await syncedScans('settle', SCANS_TABLE, 'true', async (r, file) => {
      const forwardSlot = async () =>
        (
          await sql('source', 'postgres', `SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [
            forwardObjects((await loadPlan(file)).plan).slot.name,
          ])
        ).length;
      const killed = await spawnCli(['cutover', file], { ...r.env, CLOUDSHIFT_FAULT: 'cutoverStep:done', CLOUDSHIFT_NO_GUARD: '1' });
      expect(killed.signal).toBe('SIGKILL');
      // Cut over, but the forward slot still holds the source's WAL.
      expect(await forwardSlot()).toBe(1);
      const again = await cli(['cutover', file], r.env);
      expect(again.code).toBe(3);
      expect(again.stderr).toMatch(/is already cut over/);
      expect(await forwardSlot()).toBe(0);
    });
  });

  it('bounds uploading large objects changed inside the pause by the pause budget', { timeout: 120_000 }, async () => {
    const table = `CREATE TABLE public.scans (id bigint PRIMARY KEY, filename text NOT NULL, content oid NOT NULL);
       INSERT INTO public.scans VALUES (1, 'scan-1.bin', lo_from_bytea(0, '\\x0a0b'::bytea))`;
    await syncedScans('lobudget', table, 'true', async (r, file) => {
      // The blob service stops answering once the pause began, while a large object changed in
      // place after the last look before it must go up again inside the pause.
      const proxy = await startFaultProxy(harness().azurite.connectionString);
      try {
        const result = await cutover(await loadPlan(file), {
          env: { ...r.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString },
          hooks: {
            cutoverStep: async (step) => {
              if (step === 'caught-up') await sql('source', r.dbs.source, `SELECT lo_put(content, 0, '\\x0c'::bytea) FROM public.scans`);
              if (step === 'paused') proxy.holdWhen = () => true;
            },
          },
        });
        expect(result.switched).toBe(false);
        expect(result.reason).toMatch(/^the pause budget \(maxPause 5000 ms\) ran out uploading large-object documents changed in place$/);
        expect(proxy.held).toBeGreaterThan(0);
      } finally {
        await proxy.close();
      }
      // Back on the source, which takes writes.
      await sql('source', r.dbs.source, `UPDATE public.scans SET filename = 'b' WHERE id = 1`);
    });
  });

  it('does not switch in a target the final catch-up found different (a change that matched no row)', { timeout: 120_000 }, async () => {
    const table = `CREATE TABLE public.scans (id bigint PRIMARY KEY, filename text NOT NULL, content oid);
       INSERT INTO public.scans SELECT g, 'scan ' || g, NULL FROM generate_series(1, 1500) g;`;
    // Row 2 is older than the newest 1,000 rows the quick check inside the pause compares.
    await syncedScans('catchupdiverge', table, 'true', async (r, file) => {
      // After the last sync: the target loses a row, the source changes it; only the cutover's catch-up applies that.
      await sql('target', r.dbs.target, `DELETE FROM public.scans WHERE id = 2`);
      await sql('source', r.dbs.source, `UPDATE public.scans SET filename = 'b2' WHERE id = 2`);
      const cut = await cli(['cutover', file, '--json'], r.env);
      expect(cut.code, cut.stderr).toBe(1);
      const json = JSON.parse(cut.stdout) as { switched: boolean; reason: string };
      expect(json.switched).toBe(false);
      expect(json.reason).toMatch(/^live sync found 1 divergence while catching up \(changes that matched no row on the target\)/);
      // Still on the source, which takes writes.
      await sql('source', r.dbs.source, `INSERT INTO public.scans VALUES (3000, 'c', NULL)`);
    });
  });

  // oid, and a domain over it (as contrib's lo type): the new large object's oid is cast to it.
  for (const [type, prefix] of [
    ['oid', 'lorollback'],
    ['public.lo', 'lodomain'],
  ] as const)
    it(
      `rolls back a row edited on the target without making its large object again (only a changed document is; content ${type})`,
      { timeout: 120_000 },
      async () => {
        const table = `${type === 'oid' ? '' : 'CREATE DOMAIN public.lo AS oid;'}
         CREATE TABLE public.scans (id bigint PRIMARY KEY, filename text NOT NULL, note text, content ${type} NOT NULL);
         INSERT INTO public.scans SELECT g, 'scan-' || g || '.bin', NULL, lo_from_bytea(0, decode(repeat('cd', 500 * g), 'hex')) FROM generate_series(1, 3) g;`;
        await syncedScans(prefix, table, 'true', async (r, file) => {
          const oids = async () =>
            new Map(
              (
                await sql<{ id: string; oid: string }>('source', r.dbs.source, `SELECT id::text, content::text AS oid FROM public.scans`)
              ).map((x) => [x.id, x.oid]),
            );
          const before = await oids();
          const cut = await cli(['cutover', file], r.env);
          expect(cut.code, cut.stderr).toBe(0);
          // On the target: scan 1 gets a note (its document untouched); scan 2's document is replaced.
          const v2 = Buffer.from('second version of scan 2');
          const container = BlobServiceClient.fromConnectionString(harness().azurite.connectionString).getContainerClient(r.container);
          await container.getBlockBlobClient('scans/2-scan-2.bin').uploadData(v2);
          await sql(
            'target',
            r.dbs.target,
            `UPDATE public.scans SET note = 'seen' WHERE id = 1; UPDATE public.scans SET note = 'v2' WHERE id = 2;`,
          );
          const back = await cli(['rollback', file], r.env);
          expect(back.code, back.stdout + back.stderr).toBe(0);
          const after = await oids();
          expect(after.get('1')).toBe(before.get('1'));
          expect(after.get('3')).toBe(before.get('3'));
          expect(after.get('2')).not.toBe(before.get('2'));
          const rows = await sql<{ id: string; note: string | null; hex: string }>(
            'source',
            r.dbs.source,
            `SELECT id::text, note, encode(lo_get(content), 'hex') AS hex FROM public.scans ORDER BY id`,
          );
          expect(rows).toEqual([
            { id: '1', note: 'seen', hex: 'cd'.repeat(500) },
            { id: '2', note: 'v2', hex: v2.toString('hex') },
            { id: '3', note: null, hex: 'cd'.repeat(1500) },
          ]);
        });
      },
    );
});

describe('a replication slot the source invalidated', () => {
  it('is refused with an explanation that a fresh copy is needed', { timeout: 120_000 }, async () => {
    // A source of its own: it keeps at most 1 MB of WAL for a slot, so the slot is lost quickly.
    const registry = new CleanupRegistry([]);
    try {
      const [port] = await freePorts(1);
      const password = randomBytes(12).toString('base64url');
      const server = await startPostgres({
        label: 'pg15-lost',
        loaded: await loadPostgres('pg15'),
        port: port!,
        password,
        settings: { wal_level: 'logical', max_replication_slots: 4, max_wal_senders: 4, max_slot_wal_keep_size: '1MB', wal_keep_size: 0 },
        extraFlags: [],
        owner: process.getuid?.() === 0 ? await ensurePostgresOsUser() : undefined,
        cleanup: registry,
        onLog: undefined,
      });
      const url = `postgres://postgres:${password}@${server.host}:${server.port}/postgres`;
      const exec = async (text: string) => {
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        try {
          return (await c.query(text)).rows as Array<Record<string, unknown>>;
        } finally {
          await c.end();
        }
      };
      await exec(
        `CREATE TABLE public.readings (id bigint PRIMARY KEY, v text NOT NULL); INSERT INTO public.readings SELECT g, md5(g::text) FROM generate_series(1, 100) g`,
      );
      const s = await hospitalScenario('slotlost', { load: false });
      try {
        const env = { ...s.env, SOURCE_DATABASE_URL: url };
        const file = s.plan(`version: 1
name: slotlost
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables: [{ name: public.readings }]
sync: { mode: logical }
`);
        expect((await cli(['run', file, '--until', 'synced'], env)).code).toBe(0);
        // While nothing streams, the source writes far more WAL than the slot may keep.
        for (let i = 0; i < 8; i++) {
          await exec(
            `INSERT INTO public.readings SELECT g, repeat(md5(g::text), 20) FROM generate_series(${1000 + i * 5000}, ${5999 + i * 5000}) g`,
          );
          await exec(`SELECT pg_switch_wal()`);
          await exec(`CHECKPOINT`);
          const [slot] = await exec(`SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'cloudshift_slotlost'`);
          if (slot?.wal_status === 'lost') break;
        }
        const [slot] = await exec(`SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'cloudshift_slotlost'`);
        expect(slot?.wal_status).toBe('lost');
        const r = await cli(['run', file, '--until', 'synced'], env);
        expect(r.code, r.stderr).toBe(3);
        expect(r.stderr).toMatch(/invalidated by the source \(wal_status = lost\)/);
        expect(r.stderr).toMatch(/a fresh copy is needed/);
        await cli(['cleanup', file], env);
      } finally {
        await s.drop();
      }
    } finally {
      await registry.runAll();
    }
  });
});
