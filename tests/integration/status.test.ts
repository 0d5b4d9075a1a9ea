import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMigration } from '../../src/engine/run.js';
import { loadPlan } from '../../src/plan/parse.js';
import type { Overview } from '../../src/views/overview.js';
import { cli } from '../harness/cli.js';
import { sql } from '../harness/db.js';
import { hospitalScenario, type Scenario } from '../harness/scenario.js';

const PLAN = `version: 1
name: statustest
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.patients
  - name: public.observations
    batch: { rows: 400 }
copy: { jobs: 1 }
`;

let s: Scenario;
let file: string;
beforeAll(async () => {
  s = await hospitalScenario('status');
  file = s.plan(PLAN);
});
afterAll(async () => s.drop());

async function status(): Promise<Overview> {
  const r = await cli(['status', file, '--json'], s.env);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as Overview;
}

/**
 * `read` while the run's process seems to have stopped reporting: its heartbeat is backdated an
 * hour and held there (a trigger keeps the old value) until `read` is done, then reported again.
 */
async function whileHeartbeatStopped<T>(read: () => Promise<T>): Promise<T> {
  await sql(
    'target',
    s.dbs.target,
    `CREATE FUNCTION cloudshift.keep_last_seen() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN NEW.last_seen := OLD.last_seen; RETURN NEW; END';
     CREATE TRIGGER keep_last_seen BEFORE UPDATE ON cloudshift.workers FOR EACH ROW EXECUTE FUNCTION cloudshift.keep_last_seen();
     SET session_replication_role = replica;
     UPDATE cloudshift.workers SET last_seen = now() - interval '1 hour';`,
  );
  try {
    return await read();
  } finally {
    // And it reports again.
    await sql(
      'target',
      s.dbs.target,
      `DROP TRIGGER keep_last_seen ON cloudshift.workers; DROP FUNCTION cloudshift.keep_last_seen(); UPDATE cloudshift.workers SET last_seen = now()`,
    );
  }
}

describe('cloudshift status', () => {
  it('before any run: says so, suggests the dry run, and creates nothing', async () => {
    const text = await cli(['status', file], s.env);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('plan statustest: no run yet');
    expect(text.stdout).toContain(
      `next: no run yet: check the plan with \`cloudshift dry-run ${file}\`, then start it with \`cloudshift run ${file}\``,
    );
    const o = await status();
    expect(o.run).toBeNull();
    const schemas = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'cloudshift'`);
    expect(schemas[0]!.n).toBe('0');
  });

  it('while a run is going: phase, batches done, a process working on it; then stopped: how to resume', async () => {
    const seen: Overview[] = [];
    let hung: Overview | undefined;
    const controller = new AbortController();
    const result = await runMigration(await loadPlan(file), {
      env: s.env,
      abortSignal: controller.signal,
      hooks: {
        afterBatchCommit: async () => {
          seen.push(await status());
          if (seen.length === 2) hung = await whileHeartbeatStopped(status);
          if (seen.length === 4) controller.abort();
        },
      },
    });
    expect(result.interrupted).toBe(true);
    // After the first batch one table has not begun (no rate of its own): the whole copy's ETA
    // comes from the run's batch rate.
    const first = seen[0]!;
    expect(first.tables.some((t) => t.batches.done === 0)).toBe(true);
    expect(first.totals.etaSeconds).toBeGreaterThan(0);
    const during = seen[3]!;
    expect(during.run).toMatchObject({ phase: 'copy', status: 'active', processActive: true, planChanged: false });
    const obs = during.tables.find((t) => t.table === 'public.observations')!;
    expect(obs.batches.total).toBe(8);
    expect(obs.batches.done).toBeGreaterThanOrEqual(2);
    expect(obs.verification).toBe('pending');
    expect(during.next).toBe(
      `run in progress (phase copy, started by ${during.run!.createdBy}); follow it with \`cloudshift status ${file} --watch\``,
    );

    // Holding the run's lock without reporting (hung, or cut off from the state store): said, with who to look at.
    expect(hung!.run).toMatchObject({ processActive: false, processStalled: { pid: process.pid } });
    expect(hung!.totals.etaSeconds).toBeNull();
    expect(hung!.next).toMatch(
      new RegExp(
        `^the process leading run ${hung!.run!.id} \\(pid ${process.pid} on .+\\) holds it but has not reported since .+: it may be hung`,
      ),
    );

    const after = await status();
    expect(after.run?.processActive).toBe(false);
    expect(after.run?.processStalled).toBeNull();
    // Nothing copies: no time is promised, though batches finished a moment ago.
    expect(after.totals.etaSeconds).toBeNull();
    expect(after.tables.find((t) => t.table === 'public.observations')!.etaSeconds).toBeNull();
    expect(after.next).toBe(
      `no cloudshift process is working on run ${after.run!.id} (phase copy): resume it with \`cloudshift run ${file}\``,
    );
    expect(after.events.map((e) => e.kind)).toContain('run:interrupted');
    expect(after.events[0]!.who).toMatch(/^.+@.+ \(pid \d+\)$/);
  });

  it('after the run: every table verified, throughput, totals and the next step', async () => {
    const r = await cli(['run', file], s.env);
    expect(r.code).toBe(0);
    const o = await status();
    expect(o.run).toMatchObject({ status: 'finished', phase: 'done', processActive: false });
    expect(o.tables.map((t) => [t.table, t.batches.done, t.batches.total, t.rows, t.verification])).toEqual([
      ['public.observations', 8, 8, 3000, 'verified'],
      ['public.patients', 1, 1, 200, 'verified'],
    ]);
    expect(o.totals).toMatchObject({ rows: 3200, batches: 9, done: 9, mismatched: 0, etaSeconds: 0 });
    expect(o.tables[0]!.rowsPerSecond).toBeGreaterThan(0);
    expect(o.next).toBe('copy finished and every batch verified (sync.mode: none: the target is a copy as of the run; nothing more to do)');
    const text = await cli(['status', file], s.env);
    expect(text.stdout).toMatch(/public\.observations\s+8\/8\s+3,000\s+.*\s+done\s+verified/);
    expect(text.stdout).toContain('live sync: not started');

    // A batch sent back for another attempt keeps its last figures until copied again: not counted.
    const [back] = await sql<{ id: string; rows: string }>(
      'target',
      s.dbs.target,
      `UPDATE cloudshift.batches SET status = 'pending' WHERE id = (SELECT min(id) FROM cloudshift.batches WHERE relation = 'public.observations') RETURNING id::text, rows::text`,
    );
    try {
      const o2 = await status();
      expect(o2.tables[0]).toMatchObject({ table: 'public.observations', rows: 3000 - Number(back!.rows) });
      expect(o2.tables[0]!.batches).toMatchObject({ done: 7, pending: 1 });
      expect(o2.totals.verified).toBe(8);
    } finally {
      await sql('target', s.dbs.target, `UPDATE cloudshift.batches SET status = 'verified' WHERE id = ${back!.id}`);
    }
  });

  it('a mismatched batch points the operator at verify --repair', async () => {
    await sql(
      'target',
      s.dbs.target,
      `UPDATE cloudshift.batches SET status = 'mismatch' WHERE seq = 3 AND relation = 'public.observations'`,
    );
    const o = await status();
    expect(o.tables[0]!.verification).toBe('mismatched');
    expect(o.next).toBe(
      `copy finished, but the target differs (1 mismatched batches): find and repair the rows with \`cloudshift verify ${file} --repair\``,
    );
    await sql(
      'target',
      s.dbs.target,
      `UPDATE cloudshift.batches SET status = 'verified' WHERE seq = 3 AND relation = 'public.observations'`,
    );
  });

  it('a table a later verify found differing is mismatched, whatever its batches say, until a verify finds it matching', async () => {
    await sql(
      'target',
      s.dbs.target,
      `UPDATE public.observations SET unit = md5(random()::text) WHERE id = (SELECT min(id) FROM public.observations)`,
    );
    expect((await cli(['verify', file], s.env)).code).toBe(1);
    const o = await status();
    expect(o.tables.find((t) => t.table === 'public.observations')).toMatchObject({
      verification: 'mismatched',
      batches: { mismatched: 0 },
    });
    expect(o.next).toBe(
      `copy finished, but the target differs (public.observations differing at the last verify): find and repair the rows with \`cloudshift verify ${file} --repair\``,
    );
    // A verify of another table says nothing of this one.
    expect((await cli(['verify', file, '--table', 'public.patients'], s.env)).code).toBe(0);
    expect((await status()).tables.find((t) => t.table === 'public.observations')!.verification).toBe('mismatched');
    expect((await cli(['verify', file, '--repair'], s.env)).code).toBe(0);
    const after = await status();
    expect(after.tables.find((t) => t.table === 'public.observations')!.verification).toBe('verified');
    expect(after.next).toMatch(/^copy finished and every batch verified/);
  });

  it('--watch redraws until interrupted', async () => {
    const controller = new AbortController();
    let out = '';
    let draws = 0;
    const { runCli } = await import('../../src/cli/main.js');
    const code = await runCli(['status', file, '--watch', '--interval', '10ms'], {
      stdout: {
        write: (t: string) => {
          out += t;
          if (t.includes('next:') && ++draws === 3) controller.abort();
          return true;
        },
      },
      stderr: { write: () => true },
      env: s.env,
      cwd: process.cwd(),
      signal: controller.signal,
    });
    expect(code).toBe(0);
    expect(out.match(/^plan statustest, run /gm)).toHaveLength(3);
  });

  it('--watch says when the state store cannot be read, and draws again once it can', async () => {
    // The runs table gone for a moment, as a state store failing over would be.
    await sql('target', s.dbs.target, `ALTER TABLE cloudshift.runs RENAME TO runs_away`);
    const controller = new AbortController();
    let out = '';
    let err = '';
    let back: Promise<unknown> | null = null;
    const { runCli } = await import('../../src/cli/main.js');
    const code = await runCli(['status', file, '--watch', '--interval', '10ms'], {
      stdout: {
        write: (t: string) => {
          out += t;
          if (t.includes('next:')) controller.abort();
          return true;
        },
      },
      stderr: {
        write: (t: string) => {
          err += t;
          back ??= sql('target', s.dbs.target, `ALTER TABLE cloudshift.runs_away RENAME TO runs`);
          return true;
        },
      },
      env: s.env,
      cwd: process.cwd(),
      signal: controller.signal,
    });
    await back;
    expect(code).toBe(0);
    expect(err).toMatch(/^cannot read the state store \(.*runs.* does not exist\); trying again$/m);
    expect(out).toMatch(/^plan statustest, run /m);
  });
});
