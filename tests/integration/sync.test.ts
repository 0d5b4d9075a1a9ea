import { readFileSync } from 'node:fs';
import { BlobServiceClient } from '@azure/storage-blob';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runMigration } from '../../src/engine/run.js';
import { loadPlan } from '../../src/plan/parse.js';
import { verifyPlan } from '../../src/verify/verifyTables.js';
import { rejectionOf } from '../harness/outcome.js';
import { cli, spawnCli } from '../harness/cli.js';
import { expectTablesMatch } from '../harness/compare.js';
import { connectionUrl, harness, sql } from '../harness/db.js';
import { cutRunLockSession, hospitalScenario, inScenario, type Scenario } from '../harness/scenario.js';

const ORDER: Record<string, string> = {
  'public.patients': 'id',
  'public.encounters': 'id',
  'public.observations': 'id',
  'public.medications': 'patient_id, prescribed_at, drug',
  'public.notes': 'id',
};

const NOTES_SQL = `
CREATE TABLE public.notes (id bigint PRIMARY KEY, title text NOT NULL, body text NOT NULL, edited int NOT NULL DEFAULT 0);
-- body is TOASTed: about 40 kB of incompressible text per row.
INSERT INTO public.notes (id, title, body)
SELECT g, 'note ' || g, (SELECT string_agg(md5(g::text || '-' || i), '') FROM generate_series(1, 1250) i) FROM generate_series(1, 20) g;
`;

function planText(name: string, extra = ''): string {
  return `version: 1
name: ${name}
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target:
  postgres: "\${env:TARGET_DATABASE_URL}"
  blob: { connectionString: "\${env:AZURE_STORAGE_CONNECTION_STRING}", container: "{{container}}" }
tables:
  - name: public.patients
  - name: public.encounters
  - name: public.observations
  - name: public.medications
  - name: public.notes
documents:
  - table: public.documents
    content: content
    blob: "patients/{patient_id}/{id}-{filename}"
    contentType: "{mime_type}"
    keep: { column: blob_path }
copy: { jobs: 2, batch: { rows: 500 } }
sync: { mode: logical }
cutover:
  switch: { command: { run: "true" } }
  maxLag: 2s
${extra}`;
}

/** Beds (keyed) and cots (no key) under live sync, in batches of 100 rows. */
function bedsPlan(name: string, moreTables = '', copy = ''): string {
  return `version: 1
name: ${name}
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.beds
  - name: public.cots
    replicaIdentity: full
${moreTables}copy: { ${copy}batch: { rows: 100 } }
sync: { mode: logical }
cutover: { maxLag: 2s, switch: { command: { run: "true" } } }
`;
}

async function expectConverged(s: Scenario): Promise<void> {
  await expectTablesMatch(s, ORDER);
  // Documents: every source row is on the target with its blob name, and each blob holds the bytes.
  const src = await sql<{ id: string; patient_id: string; filename: string; hex: string }>(
    'source',
    s.dbs.source,
    `SELECT id::text, patient_id::text, filename, encode(content, 'hex') AS hex FROM public.documents ORDER BY id`,
  );
  const tgt = await sql<{ id: string; blob_path: string }>(
    'target',
    s.dbs.target,
    `SELECT id::text, blob_path FROM public.documents ORDER BY id`,
  );
  expect(tgt.map((r) => r.id)).toEqual(src.map((r) => r.id));
  const container = BlobServiceClient.fromConnectionString(harness().azurite.connectionString).getContainerClient(s.container);
  const names: string[] = [];
  for await (const b of container.listBlobsFlat()) names.push(b.name);
  expect(names.sort()).toEqual(src.map((r) => `patients/${r.patient_id}/${r.id}-${r.filename}`).sort());
  for (const r of src.slice(-5)) {
    const buf = await container.getBlobClient(`patients/${r.patient_id}/${r.id}-${r.filename}`).downloadToBuffer();
    expect(buf.toString('hex'), `document ${r.id}`).toBe(r.hex);
  }
}

async function slots(s: Scenario): Promise<string[]> {
  const rows = await sql<{ slot_name: string }>('source', 'postgres', `SELECT slot_name FROM pg_replication_slots WHERE database = $1`, [
    s.dbs.source,
  ]);
  return rows.map((r) => r.slot_name);
}

/** `n` transactions, each bumping one note's edit count (notes 1..n). */
const noteEdits = (n: number) =>
  Array.from({ length: n }, (_, i) => `BEGIN; UPDATE public.notes SET edited = edited + 1 WHERE id = ${i + 1}; COMMIT;`).join('\n');

/** How many times live sync reconnected, by the events the runs of this scenario recorded. */
async function reconnects(s: Scenario): Promise<number> {
  const [r] = await sql<{ n: string }>(
    'target',
    s.dbs.target,
    `SELECT count(*)::text AS n FROM cloudshift.events WHERE kind = 'sync:reconnect'`,
  );
  return Number(r!.n);
}

/**
 * A scenario of its own (`prefix`) with the notes table added, its plan (`${prefix}test`) written
 * and run until in sync; `test` gets both, and the scenario is dropped after.
 */
async function inSyncedScenario(prefix: string, test: (s: Scenario, file: string) => Promise<void>): Promise<void> {
  const s = await hospitalScenario(prefix);
  try {
    await sql('source', s.dbs.source, NOTES_SQL);
    const file = s.plan(planText(`${prefix}test`));
    expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
    await test(s, file);
  } finally {
    await s.drop();
  }
}

describe('live sync', () => {
  let s: Scenario;
  beforeAll(async () => {
    s = await hospitalScenario('sync');
    await sql('source', s.dbs.source, NOTES_SQL);
  });
  afterAll(async () => s.drop());

  it('copies inside the slot snapshot, then streams inserts, updates, deletes, truncates and documents', async () => {
    const file = s.plan(planText('synctest'));
    const loaded = await loadPlan(file);
    let wrote = false;
    const result = await runMigration(loaded, {
      env: s.env,
      until: 'synced',
      heartbeatMs: 100,
      hooks: {
        // Changes made while the copy runs: after the slot's consistent point, so only the stream carries them.
        afterBatchCommit: async () => {
          if (wrote) return;
          wrote = true;
          // The slot keeps WAL from the copy's start: its leader measures it for status meanwhile.
          await vi.waitFor(
            async () => {
              const [row] = await sql<{ retained: string | null }>(
                'target',
                s.dbs.target,
                `SELECT retained_wal_bytes AS retained FROM cloudshift.applied_lsn`,
              );
              expect(row!.retained).not.toBeNull();
            },
            { timeout: 10_000, interval: 50 },
          );
          const during = JSON.parse((await cli(['status', file, '--json'], s.env)).stdout) as {
            run: { phase: string };
            sync: Record<string, unknown>;
          };
          expect(during.run.phase).toBe('copy');
          expect(during.sync).toMatchObject({ lagMs: null, lagStale: false, slotDropped: false });
          expect(during.sync.retainedWalBytes).toBeGreaterThan(0);
          expect(during.sync.lagBytes).toBeGreaterThanOrEqual(0);
          expect((await cli(['status', file], s.env)).stdout).toMatch(
            / {2}.* of WAL to catch up once live sync begins; the source retains .* of WAL for the slot \(measured /,
          );
          await sql(
            'source',
            s.dbs.source,
            `BEGIN;
             INSERT INTO public.patients (nhs_number, family_name, given_name, born) VALUES ('9100000001', 'New', 'Patient', '1990-05-05');
             UPDATE public.patients SET family_name = 'Renamed' WHERE id = 7;
             DELETE FROM public.observations WHERE id BETWEEN 10 AND 19;
             UPDATE public.notes SET edited = edited + 1 WHERE id = 3;
             INSERT INTO public.documents (patient_id, filename, content) VALUES (5, 'scan.pdf', decode(repeat('00ff', 3000), 'hex'));
             UPDATE public.documents SET content = decode('deadbeef', 'hex') WHERE id = 2;
             DELETE FROM public.documents WHERE id = 3;
             COMMIT;`,
          );
        },
      },
    });
    expect(wrote).toBe(true);
    expect(result.sync?.reason).toBe('synced');
    expect(result.sync?.divergences).toBe(0);
    expect(result.mismatches).toBe(0);
    await expectConverged(s);
    expect(await slots(s)).toEqual(['cloudshift_synctest']);

    // While no sync runs: more changes, a multi-table TRUNCATE, a key change, an unchanged TOAST
    // column, and a document renamed (its bytes unchanged, so not in the WAL) then deleted: when
    // the rename is replayed the row is gone, and the delete further on settles it.
    await sql(
      'source',
      s.dbs.source,
      `INSERT INTO public.documents (patient_id, filename, content)
         SELECT 8, 'moving.pdf', decode(string_agg(md5(g::text), ''), 'hex') FROM generate_series(1, 500) g;
       UPDATE public.documents SET filename = 'moved.pdf' WHERE filename = 'moving.pdf';
       DELETE FROM public.documents WHERE filename = 'moved.pdf';
       UPDATE public.notes SET edited = edited + 1, title = 'edited' WHERE id IN (4, 5);
       UPDATE public.medications SET dose = '9 mg', drug = 'drug-x' WHERE patient_id = 3 AND drug = 'drug-3';
       INSERT INTO public.encounters (patient_id, started_at, ward) SELECT 1 + g % 200, now(), 'ICU' FROM generate_series(1, 300) g;
       TRUNCATE public.medications, public.notes;
       INSERT INTO public.notes (id, title, body) VALUES (99, 'after truncate', repeat('x', 5000));`,
    );
    const again = await cli(['run', file, '--until', 'synced'], s.env);
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/in sync: applied up to [0-9A-F]+\/[0-9A-F]+/);
    await expectConverged(s);
    const notes = await sql<{ body: string }>('target', s.dbs.target, `SELECT body FROM public.notes WHERE id = 99`);
    expect(notes[0]!.body).toBe('x'.repeat(5000));

    // status shows the sync: applied position, lag and the WAL the slot retains.
    const status = await cli(['status', file, '--json'], s.env);
    const view = JSON.parse(status.stdout) as { sync: Record<string, unknown> };
    expect(view.sync).toMatchObject({ slot: 'cloudshift_synctest', publication: 'cloudshift_synctest', divergences: 0 });
    expect(view.sync.appliedLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(view.sync.lagMs).toBeLessThan(2000);
    expect(view.sync.retainedWalBytes).toBeGreaterThan(0);
    const text = await cli(['status', file], s.env);
    expect(text.stdout).toMatch(
      /live sync: slot cloudshift_synctest \(publication cloudshift_synctest\), applied up to [0-9A-F]+\/[0-9A-F]+/,
    );
    expect(text.stdout).toMatch(/ {2}lag \d+ ms, .* of WAL; the source retains .* of WAL for the slot \(measured /);
    expect(view.sync.lagStale).toBe(false);
    // The lag over time is kept too (for the report's chart): one sample every few seconds at most.
    const samples = await sql<{ n: number; spaced: boolean }>(
      'target',
      s.dbs.target,
      `SELECT count(*)::int AS n, coalesce(min(gap) >= interval '5 seconds', true) AS spaced
         FROM (SELECT at - lag(at) OVER (ORDER BY at) AS gap FROM cloudshift.lag_samples) g`,
    );
    expect(samples[0]!.n).toBeGreaterThan(0);
    expect(samples[0]!.spaced).toBe(true);
    // Measured five minutes ago and not since (no syncing process): shown as what it was, not is.
    await sql('target', s.dbs.target, `UPDATE cloudshift.applied_lsn SET measured_at = now() - interval '5 minutes'`);
    const stale = await cli(['status', file], s.env);
    expect(stale.stdout).toMatch(/ {2}last known lag \d+ ms, .* \(measured .*, not since: no cloudshift run measures it now\)/);
    // What the slot holds now is read from the source itself (status can reach it from here).
    expect(stale.stdout).toMatch(/ {2}now, read from the source at \S+: it retains \d[^?]* of WAL for the slot, \d[^?]* not yet applied\n/);
    const staleJson = JSON.parse((await cli(['status', file, '--json'], s.env)).stdout) as {
      sync: { lagStale: boolean; readFromSource: { retainedWalBytes: number; walBehindBytes: number } | null };
    };
    expect(staleJson.sync.lagStale).toBe(true);
    expect(staleJson.sync.readFromSource!.retainedWalBytes).toBeGreaterThan(0);
    expect(staleJson.sync.readFromSource!.walBehindBytes).toBeGreaterThanOrEqual(0);
    // From a machine without the source's reference: the state store's figures, no error.
    const { SOURCE_DATABASE_URL: _, ...noSource } = s.env;
    const elsewhere = await cli(['status', file, '--json'], noSource);
    expect(elsewhere.code).toBe(0);
    expect((JSON.parse(elsewhere.stdout) as typeof staleJson).sync.readFromSource).toBeNull();
  });

  it('reports an UPDATE or DELETE that matches no target row as a divergence', async () => {
    const file = s.plan(planText('synctest'));
    await sql('source', s.dbs.source, `INSERT INTO public.notes (id, title, body) VALUES (100, 'a', 'a'), (101, 'b', 'b')`);
    expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
    await sql('target', s.dbs.target, `DELETE FROM public.notes WHERE id IN (100, 101)`);
    await sql('source', s.dbs.source, `UPDATE public.notes SET title = 'X' WHERE id = 100; DELETE FROM public.notes WHERE id = 101;`);
    const r = await cli(['run', file, '--until', 'synced'], s.env);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('2 DIVERGENCES');
    const events = await sql<{ message: string }>(
      'target',
      s.dbs.target,
      `SELECT message FROM cloudshift.events WHERE kind = 'sync:divergence' ORDER BY id`,
    );
    expect(events.map((e) => e.message)).toEqual([
      expect.stringMatching(/^public\.notes: UPDATE at [0-9A-F/]+ matched no row on the target \(id=100\)/),
      expect.stringMatching(/^public\.notes: DELETE at [0-9A-F/]+ matched no row on the target \(id=101\)/),
    ]);
    // verify --repair puts the row back.
    const repair = await cli(['verify', file, '--table', 'public.notes', '--repair'], s.env);
    expect(repair.code).toBe(0);
    await expectConverged(s);
    // A check of one table leaves the cutover's gate shut; a check of every table opens it.
    const divergences = async () =>
      (JSON.parse((await cli(['status', file, '--json'], s.env)).stdout) as { sync: { divergences: number } }).sync.divergences;
    expect(await divergences()).toBe(2);
    // While a process syncs (here: one holding the run's lock), status does not advise a cutover
    // that would refuse.
    const holder = new pg.Client({ connectionString: s.env.TARGET_DATABASE_URL });
    await holder.connect();
    try {
      await holder.query(
        `SELECT pg_advisory_lock(hashtextextended('cloudshift.run:' || id::text, 0)) FROM cloudshift.runs WHERE status = 'active'`,
      );
      const o = JSON.parse((await cli(['status', file, '--json'], s.env)).stdout) as { run: { processActive: boolean }; next: string };
      expect(o.run.processActive).toBe(true);
      expect(o.next).toBe(
        `in live sync, but the target differs from the source (2 divergences): find and repair it with \`cloudshift verify ${file} --repair\`; \`cloudshift cutover\` refuses until then`,
      );
    } finally {
      await holder.end();
    }
    expect((await cli(['verify', file], s.env)).code).toBe(0);
    expect(await divergences()).toBe(0);
    // One the sync counts while a verification runs may be in a table it checked already: it stays.
    await sql('target', s.dbs.target, `UPDATE cloudshift.applied_lsn SET divergences = 1`);
    let tables = 0;
    const during = await verifyPlan(await loadPlan(file), {
      env: s.env,
      onProgress: async () => {
        tables += 1;
        if (tables === 2) await sql('target', s.dbs.target, `UPDATE cloudshift.applied_lsn SET divergences = divergences + 1`);
      },
    });
    expect(during.ok).toBe(true);
    expect(tables).toBeGreaterThan(2);
    expect(await divergences()).toBe(1);
  });

  it('restates a blob whose content type comes from a column that changed while its (TOASTed) bytes did not', async () => {
    const file = s.plan(planText('synctest'));
    await sql(
      'source',
      s.dbs.source,
      `INSERT INTO public.documents (id, patient_id, filename, mime_type, kind, content)
         SELECT 5000, 1, 'big.pdf', 'application/pdf', 'letter', decode(string_agg(md5(i::text), ''), 'hex') FROM generate_series(1, 5000) i`,
    );
    expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
    // Only the content type's column changes: the stream leaves the 80 kB document out.
    await sql('source', s.dbs.source, `UPDATE public.documents SET mime_type = 'application/x-scan' WHERE id = 5000`);
    expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
    const [row] = await sql<{ blob_path: string }>('target', s.dbs.target, `SELECT blob_path FROM public.documents WHERE id = 5000`);
    const blob = BlobServiceClient.fromConnectionString(harness().azurite.connectionString)
      .getContainerClient(s.container)
      .getBlobClient(row!.blob_path);
    expect((await blob.getProperties()).contentType).toBe('application/x-scan');
    const [source] = await sql<{ b: Buffer }>('source', s.dbs.source, `SELECT content AS b FROM public.documents WHERE id = 5000`);
    expect((await blob.downloadToBuffer()).equals(source!.b)).toBe(true);
  });

  it('stops on DDL with the table and the change named, and resumes once the target has it', async () => {
    const file = s.plan(planText('synctest'));
    await sql(
      'source',
      s.dbs.source,
      `ALTER TABLE public.patients ADD COLUMN email text; UPDATE public.patients SET email = 'a@b' WHERE id = 1;`,
    );
    const stopped = await cli(['run', file, '--until', 'synced'], s.env);
    expect(stopped.code).toBe(1);
    expect(stopped.stderr).toContain(
      'public.patients changed on the source since it was copied (DDL): column "email" added; live sync stopped',
    );
    await sql('target', s.dbs.target, `ALTER TABLE public.patients ADD COLUMN email text`);
    const resumed = await cli(['run', file, '--until', 'synced'], s.env);
    expect(resumed.code).toBe(0);
    await expectConverged(s);
  });

  it('converges after kill -9 in the middle of streaming, applying nothing twice', async () => {
    const file = s.plan(planText('synctest'));
    await sql(
      'source',
      s.dbs.source,
      Array.from(
        { length: 20 },
        (_, i) =>
          `BEGIN; INSERT INTO public.observations (encounter_id, code, value, observed_at) VALUES (1, 'k${i}', ${i}, now()); COMMIT;`,
      ).join('\n'),
    );
    const killed = await spawnCli(['run', file, '--until', 'synced'], { ...s.env, CLOUDSHIFT_FAULT: 'afterSyncCommit:5' });
    expect(killed.signal).toBe('SIGKILL');
    const applied = await sql<{ n: string }>(
      'target',
      s.dbs.target,
      `SELECT count(*)::text AS n FROM public.observations WHERE code LIKE 'k%'`,
    );
    expect(Number(applied[0]!.n)).toBeGreaterThan(0);
    expect(Number(applied[0]!.n)).toBeLessThan(20);
    const syncPhases = async () =>
      (await sql('target', s.dbs.target, `SELECT 1 FROM cloudshift.events WHERE kind = 'run:phase' AND message = 'phase sync'`)).length;
    const before = await syncPhases();
    const resumed = await cli(['run', file, '--until', 'synced'], s.env);
    expect(resumed.code).toBe(0);
    await expectConverged(s);
    // The resumed stretch of sync is on the run's timeline (the report's phases).
    expect(await syncPhases()).toBe(before + 1);
  });

  it('refuses to stream into a target that went back (restored to an earlier point), whose slot confirmed more than it holds', async () => {
    const file = s.plan(planText('synctest'));
    const position = async () =>
      (
        await sql<{ id: string; lsn: string }>(
          'target',
          s.dbs.target,
          `SELECT r.id::text AS id, a.lsn::text AS lsn FROM cloudshift.runs r JOIN cloudshift.applied_lsn a ON a.run_id = r.id
            WHERE r.plan_name = 'synctest' AND r.status = 'active'`,
        )
      )[0]!;
    const before = await position();
    await sql(
      'source',
      s.dbs.source,
      `INSERT INTO public.observations (encounter_id, code, value, observed_at) VALUES (1, 'later', 1, now())`,
    );
    expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
    const after = await position();
    // The target restored to before that change: the position it applied goes back.
    await sql('target', s.dbs.target, `UPDATE cloudshift.applied_lsn SET lsn = $1 WHERE run_id = $2`, [before.lsn, before.id]);
    const refused = await cli(['run', file, '--until', 'synced'], s.env);
    expect(refused.code, refused.stderr).toBe(3);
    expect(refused.stderr).toContain(
      `error: the target has applied the stream up to ${before.lsn}, but replication slot "cloudshift_synctest" confirmed`,
    );
    expect(refused.stderr).toMatch(/the changes in between can no longer be streamed/);
    // Put back as it was, for the tests after.
    await sql('target', s.dbs.target, `UPDATE cloudshift.applied_lsn SET lsn = $1 WHERE run_id = $2`, [after.lsn, after.id]);
    expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
  });
});

describe('cleanup', () => {
  it('drops the slot and the publication the run created, and ends the run', async () => {
    await inSyncedScenario('cleanup', async (s, file) => {
      expect(await slots(s)).toEqual(['cloudshift_cleanuptest']);
      const r = await cli(['cleanup', file], s.env);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(
        `dropped slot cloudshift_cleanuptest on the source\ndropped publication cloudshift_cleanuptest on the source\nrun ${/run (\S+) is/.exec(r.stdout)![1]} is aborted\n`,
      );
      expect(await slots(s)).toEqual([]);
      const pubs = await sql('source', s.dbs.source, `SELECT pubname FROM pg_publication`);
      expect(pubs).toEqual([]);
      // status no longer shows the WAL the slot kept when last measured.
      const view = JSON.parse((await cli(['status', file, '--json'], s.env)).stdout) as { sync: Record<string, unknown> };
      expect(view.sync).toMatchObject({ slotDropped: true, retainedWalBytes: null, lagBytes: null, lagMs: null });
      expect((await cli(['status', file], s.env)).stdout).toContain(
        '  the slot was dropped (cleanup or rollback): the source keeps no WAL for it',
      );
      const again = await cli(['cleanup', file], s.env);
      expect(again.stdout).toMatch(/^no slot or publication of this run is left on either side\n/);
    });
  });
});

describe('WAL retained before live sync', () => {
  it('the run warns once during the copy when the slot retains more than sync.warnRetainedWal, and records it', async () => {
    await inScenario('walwarn', NOTES_SQL, async (s) => {
      const file = s.plan(planText('walwarntest').replace('sync: { mode: logical }', 'sync: { mode: logical, warnRetainedWal: 1B }'));
      const warnings: string[] = [];
      const duringCopy = (m: string) => m.includes('it grows until live sync begins after the copy');
      let waited = false;
      const result = await runMigration(await loadPlan(file), {
        env: s.env,
        until: 'synced',
        heartbeatMs: 50,
        onEvent: (e) => {
          if (e.type === 'warning') warnings.push(e.message);
        },
        hooks: {
          // The copy goes on until the leader has measured the slot past the threshold.
          afterBatchCommit: async () => {
            if (waited) return;
            waited = true;
            await vi.waitFor(() => expect(warnings.some(duringCopy)).toBe(true), { timeout: 10_000, interval: 20 });
          },
        },
      });
      expect(result.sync?.reason).toBe('synced');
      expect(warnings.filter(duringCopy)).toHaveLength(1);
      expect(warnings.filter(duringCopy)[0]).toMatch(
        /^the source retains \d+ MB of WAL for slot "cloudshift_walwarntest" \(warning threshold 0 MB\)/,
      );
      const recorded = await sql<{ message: string }>(
        'target',
        s.dbs.target,
        `SELECT message FROM cloudshift.events WHERE kind = 'sync:warning'`,
      );
      expect(recorded.filter((r) => duringCopy(r.message))).toHaveLength(1);
      await cli(['cleanup', file], s.env);
    });
  });
});

describe('a run ended while copying', () => {
  it('a rollback before cutover while the copy runs stops it: no batch is claimed after, and run says why (exit 4)', async () => {
    await inScenario('endcopy', NOTES_SQL, async (s) => {
      const file = s.plan(
        planText('endcopytest').replace('copy: { jobs: 2, batch: { rows: 500 } }', 'copy: { jobs: 1, batch: { rows: 100 } }'),
      );
      let endedAt: Date | null = null;
      const outcome = await runMigration(await loadPlan(file), {
        env: s.env,
        hooks: {
          // What `cloudshift rollback` records first, while this process copies.
          afterBatchCommit: async () => {
            if (endedAt) return;
            [{ now: endedAt }] = (await sql<{ now: Date }>(
              'target',
              s.dbs.target,
              `UPDATE cloudshift.runs SET status = 'aborted' RETURNING now()`,
            )) as [{ now: Date }];
          },
        },
      }).catch((e: unknown) => e);
      expect(String(outcome)).toMatch(
        /run \S+ was ended \(aborted: rolled back before cutover, or cleaned up\) while this process led it: it stopped/,
      );
      const after = await sql('target', s.dbs.target, `SELECT id FROM cloudshift.batches WHERE claimed_at > $1`, [endedAt]);
      expect(after).toEqual([]);
      const [left] = await sql<{ n: number }>(
        'target',
        s.dbs.target,
        `SELECT count(*)::int AS n FROM cloudshift.batches WHERE status = 'pending'`,
      );
      expect(left!.n).toBeGreaterThan(0);
      await cli(['cleanup', file], s.env);
    });
  });
});

describe('live sync faults', () => {
  let s: Scenario;
  beforeAll(async () => {
    s = await hospitalScenario('syncfault');
    await sql('source', s.dbs.source, NOTES_SQL);
  });
  afterAll(async () => s.drop());

  it('converges after kill -9 during the copy: the rest is copied from a newer snapshot, older changes find rows gone', async () => {
    const file = s.plan(planText('syncfaulttest'));
    const killed = await spawnCli(['run', file, '--until', 'synced'], { ...s.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:2' });
    expect(killed.signal).toBe('SIGKILL');
    // Changes after the slot's consistent point, to rows copied and not yet copied: the stream
    // replays them over rows the newer snapshot already shows changed or deleted.
    await sql(
      'source',
      s.dbs.source,
      `BEGIN; UPDATE public.observations SET unit = 'mmHg' WHERE id % 7 = 0; COMMIT;
       BEGIN; DELETE FROM public.observations WHERE id % 11 = 0; COMMIT;
       BEGIN; UPDATE public.patients SET given_name = 'Z' WHERE id % 5 = 0; COMMIT;
       BEGIN; DELETE FROM public.medications WHERE patient_id % 9 = 0; COMMIT;`,
    );
    const resumed = await cli(['run', file, '--until', 'synced'], s.env);
    expect(resumed.stderr).toBe('');
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).not.toContain('DIVERGENCES');
    await expectConverged(s);
    const events = await sql<{ kind: string }>('target', s.dbs.target, `SELECT kind FROM cloudshift.events WHERE kind = 'sync:resnapshot'`);
    expect(events).toHaveLength(1);
  });

  it('refuses to resume a copy whose slot is gone (the changes since it began went with it) rather than make a new one', async () => {
    const lost = await hospitalScenario('slotlost');
    try {
      await sql('source', lost.dbs.source, NOTES_SQL);
      const file = lost.plan(planText('slotlosttest'));
      const killed = await spawnCli(['run', file, '--until', 'synced'], { ...lost.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:2' });
      expect(killed.signal).toBe('SIGKILL');
      // The slot goes (a failover to a standby without it, an operator freeing WAL), and a row
      // some copied batch holds changes: no stream could bring that change any more.
      const [slot] = await slots(lost);
      await sql(
        'source',
        'postgres',
        `SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`,
        [slot],
      );
      await sql('source', 'postgres', `SELECT pg_drop_replication_slot($1)`, [slot]);
      await sql(
        'source',
        lost.dbs.source,
        `UPDATE public.patients SET given_name = 'Changed' WHERE id = (SELECT min(id) FROM public.patients)`,
      );
      const resumed = await cli(['run', file, '--until', 'synced'], lost.env);
      expect(resumed.code, resumed.stderr).toBe(3);
      expect(resumed.stderr).toContain(`error: replication slot "${slot}" does not exist on the source database`);
      expect(resumed.stderr).toMatch(/the changes since the copy began are lost: start a fresh copy/);
      // None made in its place.
      expect(await slots(lost)).toEqual([]);
    } finally {
      await lost.drop();
    }
  });

  it('resumed twice from newer snapshots: keeps a row whose key moved across batches, and a table without a key exactly once', async () => {
    // Beds: sparse keys (10, 20, …, 5000), five batches of 100, padded so it is the largest
    // table and copied first. Cots: no key at all, copied after it in ctid ranges.
    const schema = `CREATE TABLE public.beds (id int PRIMARY KEY, label text, code text UNIQUE, chart text);
         INSERT INTO public.beds SELECT g * 10, 'bed ' || g || repeat('.', 300), 'c' || g FROM generate_series(1, 500) g;
         UPDATE public.beds SET chart = (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1250) i) WHERE id = 4010;
         CREATE TABLE public.cots (label text, n int);
         INSERT INTO public.cots SELECT 'cot ' || g || repeat('-', 60), g FROM generate_series(1, 300) g;
         CREATE TABLE public.bed_notes (id int PRIMARY KEY, bed_id int REFERENCES public.beds (id));
         ANALYZE;`;
    await inScenario('syncmoves', schema, async (moves) => {
      const file = moves.plan(bedsPlan('syncmoves', '  - name: public.bed_notes\n', 'jobs: 1, '));
      // One batch at a time, in order: killed once beds' first two batches are in.
      const first = await spawnCli(['run', file, '--until', 'synced'], { ...moves.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:2' });
      expect(first.signal, first.out).toBe('SIGKILL');
      await sql(
        'source',
        moves.dbs.source,
        // Into a copied range from one not yet copied (the newer snapshot no longer has it there),
        // and the other way (the newer snapshot has it under its new key, the old row is still here).
        // Until the stream has passed the newer snapshot, the target holds the second row twice
        // (UNIQUE code), and a note copied later names a bed not yet there (FOREIGN KEY): no
        // constraint is built before.
        `UPDATE public.beds SET id = 15 WHERE id = 4500;
         UPDATE public.beds SET id = 4505, label = 'moved' WHERE id = 20;
         INSERT INTO public.beds VALUES (25, 'new bed', 'c-new');
         -- between two ranges both copied after it: the newer copy has it right, its TOASTed chart
         -- is not in the change
         UPDATE public.beds SET id = 3015 WHERE id = 4010;
         INSERT INTO public.bed_notes VALUES (1, 25);
         INSERT INTO public.cots VALUES ('first', 1001);
         DELETE FROM public.cots WHERE n = 3;
         UPDATE public.cots SET label = 'changed' WHERE n = 4;`,
      );
      // Killed again once the rest of beds and the first of cots' batches are in (from the newer snapshot).
      const second = await spawnCli(['run', file, '--until', 'synced'], { ...moves.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:4' });
      expect(second.signal, second.out).toBe('SIGKILL');
      await sql(
        'source',
        moves.dbs.source,
        `INSERT INTO public.cots VALUES ('second', 1002), ('second', 1002);
         UPDATE public.cots SET label = 'again' WHERE n = 5;
         INSERT INTO public.beds VALUES (7, 'new');`,
      );
      const resumed = await cli(['run', file, '--until', 'synced'], moves.env);
      expect(resumed.stderr).toBe('');
      expect(resumed.code).toBe(0);
      expect(resumed.stdout).not.toContain('DIVERGENCES');
      const rows = await expectTablesMatch(moves, { 'public.beds': 'id', 'public.bed_notes': 'id', 'public.cots': 'n, label' });
      expect(rows['public.beds']).toContain('(15,');
      expect(rows['public.beds']).toContain('(4505,moved,c2,)');
      const constraints = await sql<{ conname: string }>(
        'target',
        moves.dbs.target,
        `SELECT conname FROM pg_constraint WHERE conrelid IN ('public.beds'::regclass, 'public.bed_notes'::regclass) AND contype IN ('u', 'f') AND convalidated ORDER BY 1`,
      );
      expect(constraints.map((c) => c.conname)).toEqual(['bed_notes_bed_id_fkey', 'beds_code_key']);
      const events = await sql<{ message: string }>(
        'target',
        moves.dbs.target,
        `SELECT message FROM cloudshift.events WHERE kind = 'sync:resnapshot' ORDER BY id`,
      );
      expect(events).toHaveLength(2);
      expect(events[1]!.message).toContain('tables without a key are copied again whole (public.cots)');
    });
  });

  it('killed after the copy, before the indexes: the rerun takes no newer snapshot and copies nothing again', async () => {
    const schema = `CREATE TABLE public.beds (id int PRIMARY KEY, label text);
       INSERT INTO public.beds SELECT g, 'bed ' || g FROM generate_series(1, 300) g;
       CREATE TABLE public.cots (label text, n int);
       INSERT INTO public.cots SELECT 'cot ' || g, g FROM generate_series(1, 300) g;`;
    await inScenario('syncafter', schema, async (after) => {
      const file = after.plan(bedsPlan('syncafter'));
      const killed = await spawnCli(['run', file, '--until', 'synced'], { ...after.env, CLOUDSHIFT_FAULT: 'beforePostData:1' });
      expect(killed.signal, killed.out).toBe('SIGKILL');
      await sql(
        'source',
        after.dbs.source,
        `INSERT INTO public.cots VALUES ('late', 1000); UPDATE public.beds SET label = 'x' WHERE id = 5`,
      );
      const resumed = await cli(['run', file, '--until', 'synced'], after.env);
      expect(resumed.code, resumed.stderr).toBe(0);
      const kinds = await sql<{ kind: string }>('target', after.dbs.target, `SELECT kind FROM cloudshift.events WHERE kind LIKE 'sync:%'`);
      expect(kinds.map((k) => k.kind)).not.toContain('sync:resnapshot');
      await expectTablesMatch(after, { 'public.beds': 'id', 'public.cots': 'n, label' });
    });
  });

  it('killed as it made the slot, before recording its consistent point: a resume records it, and later resumes take no newer snapshot', async () => {
    const schema = `CREATE TABLE public.beds (id int PRIMARY KEY, label text);
       INSERT INTO public.beds SELECT g, 'bed ' || g FROM generate_series(1, 300) g;
       CREATE TABLE public.cots (label text, n int);
       INSERT INTO public.cots SELECT 'cot ' || g, g FROM generate_series(1, 300) g;`;
    await inScenario('syncpoint', schema, async (r) => {
      const file = r.plan(bedsPlan('syncpoint'));
      const first = await spawnCli(['run', file, '--until', 'synced'], { ...r.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:1' });
      expect(first.signal, first.out).toBe('SIGKILL');
      // As a kill between the slot's creation and the record of its point leaves the run.
      await sql('target', r.dbs.target, `UPDATE cloudshift.runs SET consistent_lsn = NULL`);
      const second = await spawnCli(['run', file, '--until', 'synced'], { ...r.env, CLOUDSHIFT_FAULT: 'beforePostData:1' });
      expect(second.signal, second.out).toBe('SIGKILL');
      const [run] = await sql<{ lsn: string | null }>('target', r.dbs.target, `SELECT consistent_lsn AS lsn FROM cloudshift.runs`);
      expect(run!.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
      const third = await cli(['run', file, '--until', 'synced'], r.env);
      expect(third.code, third.stderr).toBe(0);
      const resnapshots = await sql('target', r.dbs.target, `SELECT 1 FROM cloudshift.events WHERE kind = 'sync:resnapshot'`);
      expect(resnapshots).toHaveLength(1);
      await expectTablesMatch(r, { 'public.beds': 'id', 'public.cots': 'n, label' });
    });
  });

  it('reconnects when the walsender and the apply session are terminated', async () => {
    const file = s.plan(planText('syncfaulttest'));
    expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
    const reconnectsBefore = await reconnects(s);
    // Eight transactions to stream.
    await sql('source', s.dbs.source, noteEdits(8));
    let n = 0;
    const result = await runMigration(await loadPlan(file), {
      env: s.env,
      until: 'synced',
      heartbeatMs: 100,
      hooks: {
        afterSyncCommit: async (count) => {
          n = count;
          if (count === 2) {
            await sql(
              'source',
              'postgres',
              `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'cloudshift_syncfaulttest'`,
            );
          }
          if (count === 4) {
            await sql(
              'target',
              'postgres',
              `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cloudshift apply' AND datname = $1`,
              [s.dbs.target],
            );
          }
        },
      },
    }).catch((err: unknown) => err);
    expect(result).not.toBeInstanceOf(Error);
    expect(n).toBeGreaterThanOrEqual(8);
    await expectConverged(s);
    // Frames already received are applied before the broken stream is noticed, so the two
    // terminations may be handled by one reconnect (counted from this test's start: the
    // scenario's earlier runs recorded theirs too).
    expect((await reconnects(s)) - reconnectsBefore).toBeGreaterThanOrEqual(1);
  });
});

describe('a slow step in the sync', () => {
  it('does not let the server time the stream out (status every quarter of wal_sender_timeout)', async () => {
    await inSyncedScenario('syncslow', async (s, file) => {
      // The walsender gives up on a silent client after 1 s; the apply loop then stalls for 3 s.
      await sql('source', 'postgres', `ALTER DATABASE ${s.dbs.source} SET wal_sender_timeout = '1s'`);
      await sql('source', s.dbs.source, noteEdits(3));
      let applied = 0;
      await runMigration(await loadPlan(file), {
        env: s.env,
        until: 'synced',
        heartbeatMs: 100,
        hooks: {
          afterSyncCommit: async (n) => {
            applied = n;
            if (n === 1) await new Promise((r) => setTimeout(r, 3000)); // the slow step (fault injection)
          },
        },
      });
      expect(applied).toBeGreaterThanOrEqual(3);
      expect(await reconnects(s)).toBe(0);
      await expectConverged(s);
    });
  });
});

describe('a big transaction in the sync', () => {
  it('is applied in several inserts of at most 16 MB of values each, not one statement of them all', async () => {
    await inSyncedScenario('syncbig', async (s, file) => {
      // Counts the apply's INSERT statements on notes (ALWAYS: it fires under replication too).
      await sql(
        'target',
        s.dbs.target,
        `CREATE TABLE public.note_inserts (at timestamptz);
       CREATE FUNCTION public.note_inserted() RETURNS trigger LANGUAGE plpgsql AS
         $$BEGIN INSERT INTO public.note_inserts VALUES (now()); RETURN NULL; END$$;
       CREATE TRIGGER note_inserted AFTER INSERT ON public.notes FOR EACH STATEMENT EXECUTE FUNCTION public.note_inserted();
       ALTER TABLE public.notes ENABLE ALWAYS TRIGGER note_inserted;`,
      );
      // One transaction of 200 notes of 160 kB: 32 MB of values.
      await sql(
        'source',
        s.dbs.source,
        `INSERT INTO public.notes (id, title, body)
       SELECT 1000 + g, 'big ' || g, repeat(md5(g::text), 5000) FROM generate_series(1, 200) g`,
      );
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      const [inserts] = await sql<{ n: string }>('target', s.dbs.target, 'SELECT count(*)::text AS n FROM public.note_inserts');
      expect(Number(inserts!.n)).toBeGreaterThanOrEqual(2);
      await expectConverged(s);
    });
  });
});

describe('documents replaced inside one transaction', () => {
  it('keeps the blob of a document deleted and inserted again under its name, and of rows a TRUNCATE removed and the transaction put back', async () => {
    await inSyncedScenario('syncreplace', async (s, file) => {
      const ids = (await sql<{ id: string }>('source', s.dbs.source, `SELECT id::text FROM public.documents ORDER BY id LIMIT 3`)).map(
        (r) => Number(r.id),
      );
      expect(ids).toHaveLength(3);
      const synced = async () => {
        const r = await cli(['run', file, '--until', 'synced'], s.env);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        // Every row has its blob with its bytes, and no other blob is left.
        await expectConverged(s);
      };
      await sql(
        'source',
        s.dbs.source,
        `BEGIN;
         CREATE TEMP TABLE replaced AS SELECT * FROM public.documents WHERE id = ${ids[0]};
         DELETE FROM public.documents WHERE id = ${ids[0]};
         INSERT INTO public.documents SELECT id, patient_id, filename, mime_type, kind, '\\x0102'::bytea FROM replaced;
         COMMIT;`,
      );
      await synced();
      const [replaced] = await sql<{ name: string }>(
        'target',
        s.dbs.target,
        `SELECT blob_path AS name FROM public.documents WHERE id = ${ids[0]}`,
      );
      const blob = BlobServiceClient.fromConnectionString(harness().azurite.connectionString)
        .getContainerClient(s.container)
        .getBlobClient(replaced!.name);
      expect(await blob.downloadToBuffer()).toEqual(Buffer.from([1, 2]));

      await sql(
        'source',
        s.dbs.source,
        `BEGIN;
         CREATE TEMP TABLE kept AS SELECT * FROM public.documents WHERE id IN (${ids[1]}, ${ids[2]});
         TRUNCATE public.documents;
         INSERT INTO public.documents SELECT * FROM kept;
         COMMIT;`,
      );
      await synced();
      const rows = await sql<{ id: string }>('target', s.dbs.target, `SELECT id::text FROM public.documents ORDER BY id`);
      expect(rows.map((x) => Number(x.id))).toEqual([ids[1], ids[2]]);
    });
  });
});

describe('a rollback before cutover, or a cleanup, on other databases', () => {
  it('is refused (exit 4) before it ends the run or drops anything', async () => {
    await inSyncedScenario('syncelsewhere', async (s, file) => {
      const elsewhere = { ...s.env, SOURCE_DATABASE_URL: connectionUrl('source', 'postgres') };
      const refused = await cli(['rollback', file, '--drop-target'], elsewhere);
      expect(refused.code, refused.stderr).toBe(4);
      expect(refused.stderr).toContain('began on other databases: the source is database "postgres"');
      // Nor may cleanup end the run and drop its slot there.
      const cleanup = await cli(['cleanup', file], elsewhere);
      expect(cleanup.code, cleanup.stderr).toBe(4);
      const [run] = await sql<{ status: string }>('target', s.dbs.target, `SELECT status FROM cloudshift.runs`);
      expect(run!.status).toBe('active');
      expect(await slots(s)).toHaveLength(1);
      const [tables] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*)::text AS n FROM public.patients`);
      expect(Number(tables!.n)).toBeGreaterThan(0);
    });
  });
});

describe('blobs let go of by a committed transaction', () => {
  it('are removed by the next process when one is killed between the commit and their removal', async () => {
    await inSyncedScenario('syncrelease', async (s, file) => {
      const [before] = await sql<{ n: string }>('source', s.dbs.source, `SELECT count(*)::text AS n FROM public.documents`);
      await sql('source', s.dbs.source, `DELETE FROM public.documents WHERE id IN (SELECT id FROM public.documents ORDER BY id LIMIT 2)`);
      await sql(
        'source',
        s.dbs.source,
        `BEGIN;
         CREATE TEMP TABLE kept AS SELECT * FROM public.documents WHERE id = (SELECT max(id) FROM public.documents);
         TRUNCATE public.documents;
         INSERT INTO public.documents SELECT * FROM kept;
         COMMIT;`,
      );
      // Killed once the last of them (the TRUNCATE) committed on the target, before its blobs went:
      // the next process has no change left to apply.
      const killed = await spawnCli(['run', file, '--until', 'synced'], { ...s.env, CLOUDSHIFT_FAULT: 'afterSyncCommit:2' });
      expect(killed.signal).toBe('SIGKILL');
      const [waiting] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*)::text AS n FROM cloudshift.released_blobs`);
      expect(Number(waiting!.n)).toBe(Number(before!.n) - 3);
      const r = await cli(['run', file, '--until', 'synced'], s.env);
      expect(r.code, r.stderr).toBe(0);
      // Only the kept row's blob is left, and nothing waits.
      await expectConverged(s);
      const [left] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*)::text AS n FROM cloudshift.released_blobs`);
      expect(left!.n).toBe('0');
    });
  });
});

describe('an unchanged TOASTed column in a document template', () => {
  it('is taken from the target row when only the document changes (the stream leaves it out)', async () => {
    const s = await hospitalScenario('synctoast');
    try {
      await sql('source', s.dbs.source, NOTES_SQL);
      // A 3,000-character kind, stored out of line: an UPDATE that leaves it alone does not carry it.
      await sql('source', s.dbs.source, `ALTER TABLE public.documents ALTER COLUMN kind SET STORAGE EXTERNAL`);
      const [doc] = await sql<{ id: string }>(
        'source',
        s.dbs.source,
        `UPDATE public.documents SET kind = repeat('k', 3000) WHERE id = (SELECT min(id) FROM public.documents) RETURNING id::text`,
      );
      const file = s.plan(
        planText('synctoasttest').replace('keep: { column: blob_path }', 'metadata: { kind: "{kind}" }\n    keep: { column: blob_path }'),
      );
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      await sql('source', s.dbs.source, `UPDATE public.documents SET content = '\\x0102' WHERE id = ${doc!.id}`);
      const r = await cli(['run', file, '--until', 'synced'], s.env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const [row] = await sql<{ name: string }>(
        'target',
        s.dbs.target,
        `SELECT blob_path AS name FROM public.documents WHERE id = ${doc!.id}`,
      );
      const blob = BlobServiceClient.fromConnectionString(harness().azurite.connectionString)
        .getContainerClient(s.container)
        .getBlobClient(row!.name);
      expect(await blob.downloadToBuffer()).toEqual(Buffer.from([1, 2]));
      expect((await blob.getProperties()).metadata).toEqual({ kind: 'k'.repeat(3000) });
    } finally {
      await s.drop();
    }
  });
});

describe('a big document in the sync', () => {
  it('uploads a 300 MB bytea document, more hex than one JavaScript string holds', async () => {
    await inSyncedScenario('syncdoc', async (s, file) => {
      // 300 MB: its hex text (600 MB) is over V8's longest string (512 MB).
      const [doc] = await sql<{ id: string; md5: string }>(
        'source',
        s.dbs.source,
        `INSERT INTO public.documents (patient_id, filename, content)
       SELECT 1, 'ct-series.dcm', decode(repeat(md5('ct'), 300 * 1024 * 1024 / 16), 'hex')
       RETURNING id::text, md5(content) AS md5`,
      );
      const r = await cli(['run', file, '--until', 'synced'], s.env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const blob = BlobServiceClient.fromConnectionString(harness().azurite.connectionString)
        .getContainerClient(s.container)
        .getBlobClient(`patients/1/${doc!.id}-ct-series.dcm`);
      const p = await blob.getProperties();
      expect(p.contentLength).toBe(300 * 1024 * 1024);
      expect(Buffer.from(p.contentMD5!).toString('hex')).toBe(doc!.md5);
    });
  });
});

/** The sync stopped has let its slot go; a change made meanwhile arrives with the next run. */
async function expectStoppedThenResumed(s: Scenario, file: string, slot: string) {
  const active = await sql('source', 'postgres', `SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active`, [slot]);
  expect(active).toEqual([]);
  await sql('source', s.dbs.source, `INSERT INTO public.notes (id, title, body) VALUES (500, 'while stopped', 'b')`);
  expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
  await expectConverged(s);
}

describe('stopping the sync', () => {
  it('stops cleanly on Ctrl-C (abort), resumable', async () => {
    const s = await hospitalScenario('syncstop');
    try {
      await sql('source', s.dbs.source, NOTES_SQL);
      const file = s.plan(planText('syncstoptest'));
      const ac = new AbortController();
      const result = await runMigration(await loadPlan(file), {
        env: s.env,
        heartbeatMs: 100,
        abortSignal: ac.signal,
        onEvent: (e) => {
          if (e.type === 'sync:stats') ac.abort();
        },
      });
      expect(result.interrupted).toBe(true);
      expect(result.sync?.reason).toBe('stopped');
      await expectStoppedThenResumed(s, file, 'cloudshift_syncstoptest');
    } finally {
      await s.drop();
    }
  });

  it('stops at a safe point with exit 3 when the session holding its lock is cut, and no longer streams', async () => {
    const s = await hospitalScenario('synclock');
    try {
      await sql('source', s.dbs.source, NOTES_SQL);
      const file = s.plan(planText('synclocktest'));
      let cut = false;
      const err = await rejectionOf(
        runMigration(await loadPlan(file), {
          env: s.env,
          heartbeatMs: 100,
          onEvent: (e) => {
            if (e.type !== 'sync:stats' || cut) return;
            cut = true;
            void cutRunLockSession(s);
          },
        }),
      );
      expect(cut).toBe(true);
      expect(err).toMatchObject({ exitCode: 3 });
      expect((err as Error).message).toMatch(/^the state store session holding this process's locks ended/);
      await expectStoppedThenResumed(s, file, 'cloudshift_synclocktest');
    } finally {
      await s.drop();
    }
  });
});

describe('tables without a primary key in live sync', () => {
  const KEYLESS_SQL = `
CREATE TABLE public.ward_log (at timestamptz NOT NULL, what text NOT NULL, extra json, spot point, dose numeric);
CREATE TABLE public.beds (ward text NOT NULL, bed int NOT NULL, occupant text, UNIQUE (ward, bed));
INSERT INTO public.ward_log SELECT now(), 'event ' || g, json_build_object('n', g), point(g, g) FROM generate_series(1, 50) g;
INSERT INTO public.ward_log VALUES (now(), 'dose', NULL, NULL, 1.0), (now(), 'dose', NULL, NULL, 1.00);
INSERT INTO public.beds SELECT 'W' || (g % 5), g, NULL FROM generate_series(1, 40) g;
CREATE TABLE public.bed_moves (at date NOT NULL, bed int NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE public.bed_moves_2025 PARTITION OF public.bed_moves FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.bed_moves_2026 PARTITION OF public.bed_moves FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO public.bed_moves SELECT date '2025-11-01' + g, g FROM generate_series(1, 100) g;`;
  const identity = async (side: 'source' | 'target', db: string) =>
    sql<{ relname: string; relreplident: string }>(
      side,
      db,
      `SELECT relname, relreplident FROM pg_class WHERE relname IN ('ward_log', 'beds') ORDER BY relname`,
    );

  it('refuses one the plan says nothing of, changing nothing; sets the identity the plan asks for, so the application can update it', async () => {
    const s = await hospitalScenario('keyless');
    try {
      await sql('source', s.dbs.source, NOTES_SQL + KEYLESS_SQL);
      const tables = (log: string, beds: string) =>
        planText('keylesstest').replace(
          '  - name: public.notes\n',
          `  - name: public.notes\n  - name: public.ward_log\n${log}  - name: public.beds\n${beds}  - name: public.bed_moves\n${log}`,
        );
      const refused = await cli(['run', s.plan(tables('', ''))], s.env);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toContain(
        'public.ward_log has no primary key or replica identity: with live sync, UPDATE and DELETE on it would fail on the source. Set tables[5].replicaIdentity (full | index | insert-only), or add a primary key; nothing was changed',
      );
      expect(await identity('source', s.dbs.source)).toEqual([
        { relname: 'beds', relreplident: 'd' },
        { relname: 'ward_log', relreplident: 'd' },
      ]);
      expect(await slots(s)).toEqual([]);

      const file = s.plan(tables('    replicaIdentity: full\n', '    replicaIdentity: index\n'));
      const r = await cli(['run', file, '--until', 'synced'], s.env);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(
        'warning: public.beds: set on the source for live sync: ALTER TABLE "public"."beds" REPLICA IDENTITY USING INDEX "beds_ward_bed_key"',
      );
      for (const side of ['source', 'target'] as const)
        expect(await identity(side, side === 'source' ? s.dbs.source : s.dbs.target)).toEqual([
          { relname: 'beds', relreplident: 'i' },
          { relname: 'ward_log', relreplident: 'f' },
        ]);
      // A partitioned table's partitions, where its rows are changed, have it too.
      const leaves = await sql<{ relname: string; relreplident: string }>(
        'source',
        s.dbs.source,
        `SELECT relname, relreplident FROM pg_class WHERE relname LIKE 'bed_moves%' ORDER BY relname`,
      );
      expect(leaves.map((l) => `${l.relname} ${l.relreplident}`)).toEqual(['bed_moves f', 'bed_moves_2025 f', 'bed_moves_2026 f']);
      // The application's UPDATE and DELETE work on the source, and reach the target.
      await sql(
        'source',
        s.dbs.source,
        `UPDATE public.bed_moves SET bed = -1 WHERE bed = 90;
         DELETE FROM public.bed_moves WHERE bed = 70;
         UPDATE public.beds SET occupant = 'patient 7' WHERE bed = 7;
         DELETE FROM public.ward_log WHERE what = 'event 3';
         UPDATE public.ward_log SET what = 'edited' WHERE what = 'event 4';
         -- equal to 1.0 by numeric's =, and yet another value: the row deleted is the one with 1.00
         DELETE FROM public.ward_log WHERE dose::text = '1.00';`,
      );
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      await expectTablesMatch(s, { 'public.beds': 'ward, bed', 'public.ward_log': 'what, dose::text', 'public.bed_moves': 'at, bed' });
    } finally {
      await s.drop();
    }
  });
});

describe('cleanup and rollback while a switch is under way', () => {
  it('are refused (exit 4) while a cutover or rollback holds the switch lock, cleanup (exit 3) after one killed half-way, and go ahead once it is over', async () => {
    await inSyncedScenario('switchheld', async (s, file) => {
      const [run] = await sql<{ id: string }>('target', s.dbs.target, `SELECT id FROM cloudshift.runs WHERE status = 'active'`);
      // What a cutover or rollback holds from its start to its end (its guard after it).
      const holder = new pg.Client({ connectionString: connectionUrl('target', s.dbs.target) });
      await holder.connect();
      try {
        await holder.query(`SELECT pg_advisory_lock(hashtextextended($1, 0))`, [`cloudshift.switch:${run!.id}`]);
        for (const args of [
          ['cleanup', file],
          ['rollback', file],
        ]) {
          const r = await cli(args, s.env);
          expect(r.code, args[0]).toBe(4);
          expect(r.stderr).toContain(`error: a cutover or rollback of run ${run!.id} is in progress`);
        }
        expect(await slots(s)).toEqual(['cloudshift_switchheldtest']);
      } finally {
        await holder.end();
      }
      // A cutover killed in its pause with no guard to undo it: cleanup leaves that to a command that can.
      const [sw] = await sql<{ id: string }>(
        'target',
        s.dbs.target,
        `INSERT INTO cloudshift.switches (run_id, kind, state, by) VALUES ($1, 'cutover', 'paused', 'test') RETURNING id::text AS id`,
        [run!.id],
      );
      const pending = await cli(['cleanup', file], s.env);
      expect(pending.code).toBe(3);
      expect(pending.stderr).toContain(`error: a cutover of run ${run!.id} did not end (it stopped at paused); nothing was dropped`);
      expect(await slots(s)).toEqual(['cloudshift_switchheldtest']);
      await sql('target', s.dbs.target, `UPDATE cloudshift.switches SET state = 'aborted' WHERE id = $1`, [sw!.id]);
      expect((await cli(['cleanup', file], s.env)).code).toBe(0);
      expect(await slots(s)).toEqual([]);
    });
  });
});

describe('a table created again on the source', () => {
  it('stops the sync, naming it: the publication holds the table it replaced, and its changes would be lost without a word', async () => {
    const s = await hospitalScenario('syncgone');
    try {
      await sql('source', s.dbs.source, NOTES_SQL);
      const file = s.plan(planText('syncgone'));
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      await sql(
        'source',
        s.dbs.source,
        `BEGIN; ALTER TABLE public.notes RENAME TO notes_old;
         CREATE TABLE public.notes (LIKE public.notes_old INCLUDING ALL);
         INSERT INTO public.notes SELECT * FROM public.notes_old; COMMIT;
         INSERT INTO public.notes (id, title, body) VALUES (500, 'after', 'x');`,
      );
      const r = await cli(['run', file, '--until', 'synced'], s.env);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        'error: public.notes is no longer in publication "cloudshift_syncgone" on the source (dropped, or dropped and created again, or swapped in by a rename): its changes would not reach the target; live sync stopped',
      );
      await cli(['cleanup', file], s.env);
    } finally {
      await s.drop();
    }
  });
});

describe('template columns of types whose text cast differs from their printed value', () => {
  it('a boolean in the name and metadata: an UPDATE of another column uploads nothing again, and verify finds the blobs', async () => {
    const s = await hospitalScenario('syncbool');
    try {
      await sql(
        'source',
        s.dbs.source,
        `${NOTES_SQL}
         ALTER TABLE public.documents ADD COLUMN confidential boolean NOT NULL DEFAULT false;
         INSERT INTO public.documents (id, patient_id, filename, mime_type, kind, content)
           SELECT 5000, 1, 'big.pdf', 'application/pdf', 'letter', decode(string_agg(md5(i::text), ''), 'hex') FROM generate_series(1, 5000) i`,
      );
      const file = s.plan(
        planText('syncbool')
          .replace('blob: "patients/{patient_id}/{id}-{filename}"', 'blob: "patients/{patient_id}/{id}-{confidential}-{filename}"')
          .replace('contentType: "{mime_type}"', 'contentType: "{mime_type}"\n    metadata: { confidential: "{confidential}" }'),
      );
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      const c = BlobServiceClient.fromConnectionString(harness().azurite.connectionString).getContainerClient(s.container);
      const blob = c.getBlobClient('patients/1/5000-f-big.pdf');
      const before = await blob.getProperties();
      expect(before.metadata).toEqual({ confidential: 'f' });
      // A column no template uses: the row changes, the 80 kB document is not uploaded again.
      await sql('source', s.dbs.source, `UPDATE public.documents SET kind = 'scan' WHERE id = 5000`);
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      expect((await blob.getProperties()).etag).toBe(before.etag);
      // verify names each blob from the same text run and the sync did.
      const verified = await cli(['verify', file], s.env);
      expect(verified.code, verified.stdout + verified.stderr).toBe(0);
      await cli(['cleanup', file], s.env);
    } finally {
      await s.drop();
    }
  });
});

describe('names with dots in live sync', () => {
  it('keeps "a.b".c and a."b.c" apart: each table gets its own changes', async () => {
    const s = await hospitalScenario('syncdots');
    try {
      await sql(
        'source',
        s.dbs.source,
        `CREATE SCHEMA "a.b"; CREATE SCHEMA a;
         CREATE TABLE "a.b".c (id int PRIMARY KEY, v text); CREATE TABLE a."b.c" (id int PRIMARY KEY, w int);
         INSERT INTO "a.b".c VALUES (1, 'one'); INSERT INTO a."b.c" VALUES (1, 10);`,
      );
      const file = s.plan(
        planText('syncdots')
          .replace('  - name: public.notes\n', `  - name: '"a.b".c'\n  - name: 'a."b.c"'\n`)
          .replace(/documents:[\s\S]*?blob_path \}\n/, ''),
      );
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      await sql(
        'source',
        s.dbs.source,
        `INSERT INTO "a.b".c VALUES (2, 'two'); UPDATE a."b.c" SET w = 11 WHERE id = 1; INSERT INTO a."b.c" VALUES (2, 20)`,
      );
      const r = await cli(['run', file, '--until', 'synced'], s.env);
      expect(r.code, r.stderr).toBe(0);
      expect(await sql('target', s.dbs.target, `SELECT id, v FROM "a.b".c ORDER BY id`)).toEqual([
        { id: 1, v: 'one' },
        { id: 2, v: 'two' },
      ]);
      expect(await sql('target', s.dbs.target, `SELECT id, w FROM a."b.c" ORDER BY id`)).toEqual([
        { id: 1, w: 11 },
        { id: 2, w: 20 },
      ]);
      await cli(['cleanup', file], s.env);
    } finally {
      await s.drop();
    }
  });
});

describe('a primary key that is no replica identity', () => {
  it('refuses a table set to REPLICA IDENTITY NOTHING, or with a partition so set, in the dry run and in run, changing nothing', async () => {
    const s = await hospitalScenario('identnothing');
    try {
      await sql(
        'source',
        s.dbs.source,
        `${NOTES_SQL}
         ALTER TABLE public.notes REPLICA IDENTITY NOTHING;
         CREATE TABLE public.rounds (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
         CREATE TABLE public.rounds_2025 PARTITION OF public.rounds FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE TABLE public.rounds_2026 PARTITION OF public.rounds FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         ALTER TABLE public.rounds_2026 REPLICA IDENTITY NOTHING;
         -- The partitioned table's own setting: its rows are changed in its partitions, so it does not count.
         ALTER TABLE public.rounds REPLICA IDENTITY NOTHING;
         INSERT INTO public.rounds VALUES (1, '2025-06-01'), (2, '2026-06-01');`,
      );
      const file = s.plan(
        planText('identnothing').replace('  - name: public.notes\n', '  - name: public.notes\n  - name: public.rounds\n'),
      );
      const dry = await cli(['dry-run', file, '--format', 'json'], s.env);
      expect(dry.code, dry.stderr + dry.stdout.slice(0, 3000)).toBe(1);
      const checks = (JSON.parse(dry.stdout) as { checks: Array<{ id: string; status: string; subject: string; message: string }> }).checks;
      expect(checks.filter((c) => c.id === 'table.key' && c.status === 'fail').map((c) => [c.subject, c.message])).toEqual([
        ['public.notes', expect.stringContaining('primary key (id), but REPLICA IDENTITY NOTHING on public.notes: with live sync')],
        [
          'public.rounds',
          expect.stringContaining('primary key (id, at), but REPLICA IDENTITY NOTHING on public.rounds_2026: with live sync'),
        ],
      ]);
      // replicaIdentity: index cannot serve a partitioned table: the dry run says so, as run would.
      const byIndex = await cli(
        [
          'dry-run',
          s.plan(
            readFileSync(file, 'utf8').replace('  - name: public.rounds\n', '  - name: public.rounds\n    replicaIdentity: index\n'),
            'index.yaml',
          ),
          '--format',
          'json',
        ],
        s.env,
      );
      expect(
        (JSON.parse(byIndex.stdout) as { checks: Array<{ id: string; subject: string; message: string }> }).checks.find(
          (c) => c.id === 'table.key' && c.subject === 'public.rounds',
        )?.message,
      ).toContain('replicaIdentity: index would have to name an index of each partition');
      const refused = await cli(['run', file], s.env);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toContain(
        'public.notes has a primary key, but REPLICA IDENTITY NOTHING on public.notes: with live sync, UPDATE and DELETE on it would fail on the source. Run ALTER TABLE … REPLICA IDENTITY DEFAULT on it, or set tables[4].replicaIdentity (full | index | insert-only); nothing was changed',
      );
      expect(await slots(s)).toEqual([]);
      // Nothing was published: the application still updates both.
      await sql('source', s.dbs.source, `UPDATE public.notes SET edited = 1 WHERE id = 1; UPDATE public.rounds SET id = 3 WHERE id = 2`);
      await sql(
        'source',
        s.dbs.source,
        `ALTER TABLE public.notes REPLICA IDENTITY DEFAULT; ALTER TABLE public.rounds_2026 REPLICA IDENTITY DEFAULT`,
      );
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      await sql('source', s.dbs.source, `UPDATE public.rounds SET id = 4 WHERE id = 3`);
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      expect(await sql('target', s.dbs.target, `SELECT id FROM public.rounds ORDER BY id`)).toEqual([{ id: 1 }, { id: 4 }]);
      await cli(['cleanup', file], s.env);
    } finally {
      await s.drop();
    }
  });
});

/** A table partitioned by the day a reading was taken, without partitions. */
const READINGS_SQL =
  'CREATE TABLE public.readings (id bigint NOT NULL, taken date NOT NULL, value int, PRIMARY KEY (id, taken)) PARTITION BY RANGE (taken);';

describe('a partition made on the source during live sync', () => {
  it('is created on the target when a change finds no partition for its row, and the stream goes on from that change', async () => {
    await inScenario(
      'syncnewpart',
      `${NOTES_SQL}
         ${READINGS_SQL}
         CREATE TABLE public.readings_2025_11 PARTITION OF public.readings FOR VALUES FROM ('2025-11-01') TO ('2025-12-01');
         INSERT INTO public.readings SELECT g, date '2025-11-01' + g % 30, g FROM generate_series(1, 300) g;`,
      async (s) => {
        const file = s.plan(
          planText('syncnewparttest').replace('  - name: public.notes\n', '  - name: public.notes\n  - name: public.readings\n'),
        );
        const stop = new AbortController();
        const warnings: string[] = [];
        const running = runMigration(await loadPlan(file), {
          env: s.env,
          heartbeatMs: 50,
          abortSignal: stop.signal,
          onEvent: (e) => {
            if (e.type === 'warning') warnings.push(e.message);
          },
        });
        try {
          await vi.waitFor(
            async () => {
              const [run] = await sql<{ phase: string }>('target', s.dbs.target, `SELECT phase FROM cloudshift.runs`).catch(() => []);
              expect(run?.phase).toBe('sync');
            },
            { timeout: 60_000, interval: 100 },
          );
          // The first of the month: the application's partition job makes December's.
          await sql(
            'source',
            s.dbs.source,
            `CREATE TABLE public.readings_2025_12 PARTITION OF public.readings FOR VALUES FROM ('2025-12-01') TO ('2026-01-01');
         INSERT INTO public.readings VALUES (1000, '2025-12-01', 1), (1001, '2025-12-02', 2);
         UPDATE public.readings SET value = -1 WHERE id = 5;`,
          );
          await vi.waitFor(
            async () => {
              const [n] = await sql<{ n: number }>('target', s.dbs.target, `SELECT count(*)::int AS n FROM public.readings_2025_12`);
              expect(n!.n).toBe(2);
            },
            { timeout: 30_000, interval: 100 },
          );
        } finally {
          stop.abort();
        }
        const result = await running;
        expect(result.interrupted).toBe(true);
        await expectTablesMatch(s, { 'public.readings': 'id, taken' });
        const message = 'created on the target the partitions made on the source since the schema was replayed: public.readings_2025_12';
        expect(warnings).toContain(message);
        const events = await sql<{ message: string }>(
          'target',
          s.dbs.target,
          `SELECT message FROM cloudshift.events WHERE kind = 'schema:partitions'`,
        );
        expect(events).toEqual([{ message }]);
        await cli(['cleanup', file], s.env);
      },
    );
  });
});

describe('a partitioned table in live sync', () => {
  it("streams its changes as the plan's table, whatever partition a row is in; and a GENERATED ALWAYS identity's, DEFERRABLE keys', and rows found by a replica identity that is not the key", async () => {
    const s = await hospitalScenario('syncparts');
    try {
      await sql(
        'source',
        s.dbs.source,
        `${NOTES_SQL}
         ${READINGS_SQL}
         CREATE TABLE public.readings_2025 PARTITION OF public.readings FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE TABLE public.readings_2026 PARTITION OF public.readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         INSERT INTO public.readings SELECT g, date '2025-06-01' + g, g FROM generate_series(1, 400) g;
         CREATE TABLE public.alerts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, msg text);
         INSERT INTO public.alerts (msg) SELECT 'alert ' || g FROM generate_series(1, 10) g;
         CREATE TABLE public.rota (id int PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE, shift text);
         INSERT INTO public.rota SELECT g, 'day' FROM generate_series(1, 10) g;
         CREATE TABLE public.tickets (id int PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY, note text);
         INSERT INTO public.tickets (id, note) SELECT g, 'n' FROM generate_series(1, 10) g;
         CREATE TABLE public.shifts (id int PRIMARY KEY DEFERRABLE, code text NOT NULL UNIQUE, who text);
         INSERT INTO public.shifts SELECT g, 's' || g, 'a' FROM generate_series(1, 10) g;
         CREATE TABLE public.wards (id int PRIMARY KEY, code text NOT NULL UNIQUE, name text);
         INSERT INTO public.wards SELECT g, 'w' || g, 'ward' FROM generate_series(1, 10) g;
         ALTER TABLE public.wards REPLICA IDENTITY USING INDEX wards_code_key;
         CREATE TABLE public.queue (list int, pos int, name text, PRIMARY KEY (list, pos) DEFERRABLE INITIALLY DEFERRED);
         INSERT INTO public.queue SELECT 1, g, 'item ' || g FROM generate_series(1, 5) g;`,
      );
      const file = s.plan(
        planText('syncpartstest').replace(
          '  - name: public.notes\n',
          '  - name: public.notes\n  - name: public.readings\n  - name: public.alerts\n  - name: public.rota\n    replicaIdentity: full\n  - name: public.tickets\n  - name: public.shifts\n    replicaIdentity: index\n  - name: public.wards\n  - name: public.queue\n    replicaIdentity: full\n',
        ),
      );
      const first = await cli(['run', file, '--until', 'synced'], s.env);
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      await sql(
        'source',
        s.dbs.source,
        `INSERT INTO public.readings VALUES (1000, '2025-02-02', 1), (1001, '2026-03-03', 2);
         UPDATE public.readings SET value = -1 WHERE id = 5;
         DELETE FROM public.readings WHERE id = 300;
         INSERT INTO public.alerts (msg) VALUES ('new');
         UPDATE public.alerts SET msg = 'edited' WHERE id = 3;
         DELETE FROM public.alerts WHERE id = 4;
         INSERT INTO public.rota VALUES (11, 'night');
         UPDATE public.rota SET shift = 'late' WHERE id = 2;
         INSERT INTO public.tickets (id, note) VALUES (100, 'new');
         UPDATE public.tickets SET note = 'seen' WHERE id = 2;
         UPDATE public.shifts SET code = 'zz' WHERE id = 3;
         DELETE FROM public.shifts WHERE id = 4;
         UPDATE public.shifts SET who = 'b' WHERE id = 5;
         DELETE FROM public.wards WHERE id = 3;
         UPDATE public.wards SET code = 'w-new' WHERE id = 4;
         UPDATE public.wards SET id = 50, name = 'moved' WHERE id = 5;
         INSERT INTO public.queue VALUES (1, 3, 'new');
         UPDATE public.queue SET pos = pos + 1 WHERE list = 1 AND pos >= 3 AND name <> 'new';`,
      );
      const r = await cli(['run', file, '--until', 'synced'], s.env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const rows = await expectTablesMatch(s, {
        'public.readings': 'id, taken',
        'public.alerts': 'id',
        'public.rota': 'id',
        'public.tickets': 'id',
        'public.shifts': 'id',
        'public.wards': 'id',
        'public.queue': 'list, pos',
      });
      expect(rows['public.readings']).toContain('(1001,2026-03-03,2)');
      // A GENERATED ALWAYS identity takes the source's values.
      expect(rows['public.alerts']).toContain('(11,new)');
      // A DEFERRABLE primary key (no ON CONFLICT arbiter).
      expect(rows['public.rota']).toContain('(11,night)');
      // A GENERATED ALWAYS identity that is not the key: inserted with the source's value, never SET.
      expect(rows['public.tickets']).toContain('(100,11,new)');
      // Rows found by their replica identity (a unique index), not by a primary key the stream leaves out.
      expect(rows['public.wards']).toContain('(50,w5,moved)');
      // An INITIALLY DEFERRED key two rows share inside a transaction (one inserted before the
      // other moves on): the insert replaces no row.
      expect(rows['public.queue']).toContain('(1,3,new)');
      expect(rows['public.queue']).toContain('(1,4,"item 3")');
      // SET to DEFAULT on the source: a new value the target would not take. The stream carries no
      // old value for a column outside the key, so the target's tells; never passed over.
      await sql('source', s.dbs.source, `UPDATE public.tickets SET seq = DEFAULT WHERE id = 3`);
      const stopped = await cli(['run', file, '--until', 'synced'], s.env);
      expect(stopped.code).toBe(1);
      expect(stopped.stderr).toContain(
        'public.tickets: an UPDATE changed seq, a GENERATED ALWAYS identity column, which the target takes only as DEFAULT; live sync stopped',
      );
    } finally {
      await s.drop();
    }
  });
});

describe('a TRUNCATE … CASCADE in the sync', () => {
  it('empties the tables the source emptied, and never a table outside the plan that refers to them', async () => {
    await inSyncedScenario('synccascade', async (s, file) => {
      // On the target only: a table the plan does not migrate, referring to the patients.
      await sql(
        'target',
        s.dbs.target,
        `CREATE TABLE public.portal_accounts (patient_id bigint REFERENCES public.patients (id)); INSERT INTO public.portal_accounts VALUES (1)`,
      );
      await sql('source', s.dbs.source, `TRUNCATE public.patients CASCADE`);
      const r = await cli(['run', file, '--until', 'synced'], s.env);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/portal_accounts/);
      expect(await sql('target', s.dbs.target, 'SELECT patient_id FROM public.portal_accounts')).toEqual([{ patient_id: '1' }]);
      // Once it no longer refers to them, the sync goes on and the tables are emptied as on the source.
      await sql('target', s.dbs.target, `DROP TABLE public.portal_accounts`);
      const again = await cli(['run', file, '--until', 'synced'], s.env);
      expect(again.code, again.stderr).toBe(0);
      for (const table of ['patients', 'encounters', 'observations', 'medications', 'documents'])
        expect(await sql('target', s.dbs.target, `SELECT count(*)::int AS n FROM public.${table}`), table).toEqual([{ n: 0 }]);
    });
  });
});
