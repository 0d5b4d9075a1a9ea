/**
 * Several `cloudshift run` processes share one run: the proof of issue 8. Real processes (the
 * built executable), one source and target, the state store in the target.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cli } from '../harness/cli.js';
import { expectTablesMatch } from '../harness/compare.js';
import pg from 'pg';
import { connectionUrl, sql } from '../harness/db.js';
import { hospitalScenario, type Scenario } from '../harness/scenario.js';
import { runMigration } from '../../src/engine/run.js';
import { loadPlan } from '../../src/plan/parse.js';
import { whoAmI, workerId } from '../../src/state/who.js';

const READINGS_SQL = `
CREATE TABLE public.readings (id bigint PRIMARY KEY, patient int NOT NULL, value numeric(10,3) NOT NULL, note text NOT NULL);
INSERT INTO public.readings SELECT g, g % 997, (g % 1000) / 7.0, repeat(md5(g::text), 4) FROM generate_series(1, 120000) g;
CREATE TABLE public.wards (code text PRIMARY KEY, beds int NOT NULL);
INSERT INTO public.wards SELECT 'W' || g, g % 40 FROM generate_series(1, 3000) g;
`;

/** A scenario whose source holds only the readings table. */
async function readingsScenario(prefix: string): Promise<Scenario> {
  const s = await hospitalScenario(prefix, { load: false });
  await sql('source', s.dbs.source, READINGS_SQL);
  return s;
}

function planText(name: string, sync: 'none' | 'logical'): string {
  return `version: 1
name: ${name}
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.readings
  - name: public.wards
copy: { jobs: 1, batch: { rows: 400 }, workerTimeout: 10s }
sync: { mode: ${sync} }
`;
}

interface Proc {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }>;
}

function start(args: string[], env: Record<string, string>): Proc {
  const child = spawn('node', ['bin/cloudshift.js', ...args], { env: { ...process.env, ...env } });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  return { child, done: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, out }))) };
}

/** Resolves once the process is stopped (SIGSTOP: state T in /proc). */
async function stopped(p: Proc): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    const stat = readFileSync(`/proc/${p.child.pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('T')) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`process ${p.child.pid} never stopped`);
}

async function waitForPhase(s: Scenario, phase: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const rows = await sql<{ phase: string }>('target', s.dbs.target, `SELECT phase FROM cloudshift.runs WHERE status = 'active'`).catch(
      () => [],
    );
    if (rows[0]?.phase === phase) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the run never reached phase ${phase}`);
}

async function waitForWorkers(s: Scenario, n: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const rows = await sql('target', s.dbs.target, `SELECT 1 FROM cloudshift.workers WHERE last_seen > now() - interval '10 seconds'`);
    if (rows.length >= n) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${n} workers never registered`);
}

async function waitForStandby(s: Scenario): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const rows = await sql('target', s.dbs.target, `SELECT 1 FROM cloudshift.workers WHERE doing LIKE 'standby%'`);
    if (rows.length > 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no worker became a standby');
}

async function expectEqual(s: Scenario): Promise<void> {
  await expectTablesMatch(s, { 'public.readings': 'id', 'public.wards': 'code' });
}

async function batchesBy(s: Scenario): Promise<Map<string, number>> {
  const rows = await sql<{ claimed_by: string; n: string }>(
    'target',
    s.dbs.target,
    `SELECT claimed_by, count(*)::text AS n FROM cloudshift.batches GROUP BY claimed_by`,
  );
  return new Map(rows.map((r) => [r.claimed_by, Number(r.n)]));
}

describe('several workers share one run', () => {
  let s: Scenario;
  beforeEach(async () => {
    s = await readingsScenario('workers');
  });
  afterEach(async () => s.drop());

  it('three processes copy one run together: each copies batches, nothing twice, the data equal', { timeout: 120_000 }, async () => {
    const file = s.plan(planText('workers3', 'none'));
    // Started together: the first to create the run leads, the others join it and wait for the copy.
    const leader = start(['run', file], s.env);
    const others = [start(['run', file], s.env), start(['run', file], s.env)];
    const results = await Promise.all([leader.done, ...others.map((o) => o.done)]);
    for (const r of results) expect(r.code, r.out).toBe(0);
    expect(results.filter((r) => /as a worker: copied \d+ batches/.test(r.out))).toHaveLength(2);
    const by = await batchesBy(s);
    expect(by.size, JSON.stringify([...by])).toBe(3);
    for (const n of by.values()) expect(n).toBeGreaterThan(0);
    const statuses = await sql<{ status: string; n: string }>(
      'target',
      s.dbs.target,
      `SELECT status, count(*)::text AS n FROM cloudshift.batches GROUP BY status`,
    );
    expect(statuses.map((r) => r.status)).toEqual(['verified']);
    await expectEqual(s);
    const workers = await cli(['status', file, '--json'], s.env);
    expect((JSON.parse(workers.stdout) as { workers: unknown[] }).workers).toHaveLength(3);
  });

  it(
    'two processes with one host name and pid (two containers, each its pid 1) work under distinct ids',
    { timeout: 120_000 },
    async () => {
      // In one process both are the same host:pid, as two such containers would be.
      const loaded = await loadPlan(s.plan(planText('workersame', 'none')));
      const results = await Promise.all([runMigration(loaded, { env: s.env }), runMigration(loaded, { env: s.env })]);
      expect(results.filter((r) => r.worker !== undefined)).toHaveLength(1);
      const base = workerId(whoAmI());
      const workers = await sql<{ id: string }>('target', s.dbs.target, `SELECT id FROM cloudshift.workers ORDER BY id`);
      expect(workers.map((w) => w.id)).toEqual([base, `${base}/2`]);
      const statuses = await sql<{ status: string }>('target', s.dbs.target, `SELECT DISTINCT status FROM cloudshift.batches`);
      expect(statuses.map((r) => r.status)).toEqual(['verified']);
      await expectEqual(s);
    },
  );

  it(
    'a worker killed mid-batch: its claim goes to the others; the leader killed mid-copy: a worker takes over',
    { timeout: 180_000 },
    async () => {
      const file = s.plan(planText('workerskill', 'logical'));
      const leader = start(['run', file, '--until', 'synced'], { ...s.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:25' });
      await waitForPhase(s, 'copy');
      const doomed = start(['run', file, '--until', 'synced'], { ...s.env, CLOUDSHIFT_FAULT: 'beforeBatchCommit:3' });
      const survivors = [start(['run', file, '--until', 'synced'], s.env), start(['run', file, '--until', 'synced'], s.env)];
      const killedWorker = await doomed.done;
      expect(killedWorker.signal).toBe('SIGKILL');
      const killedLeader = await leader.done;
      expect(killedLeader.signal, killedLeader.out).toBe('SIGKILL');
      const rest = await Promise.all(survivors.map((p) => p.done));
      for (const r of rest) expect(r.code, r.out).toBe(0);
      // A survivor took the lead and brought the run into sync (the other may take it after the
      // first returns: a worker stays a standby while the run is active).
      expect(rest.filter((r) => /in sync: applied up to/.test(r.out)).length).toBeGreaterThanOrEqual(1);
      // A worker that joined took the lead, or (when the leader died before the survivors started,
      // as happens on a loaded machine) a survivor found no leader and resumed the run itself.
      const events = await sql<{ kind: string }>(
        'target',
        s.dbs.target,
        `SELECT kind FROM cloudshift.events WHERE kind IN ('worker:lead', 'run:resume') ORDER BY id`,
      );
      expect(events.length, 'nobody took the run over').toBeGreaterThan(0);
      const statuses = await sql<{ status: string }>('target', s.dbs.target, `SELECT DISTINCT status FROM cloudshift.batches`);
      expect(statuses.map((r) => r.status)).toEqual(['verified']);
      await expectEqual(s);
      await cli(['cleanup', file], s.env);
    },
  );

  it(
    'a worker hung in a batch (its transaction open): its claim goes back after workerTimeout, its session is ended, the copy finishes',
    { timeout: 120_000 },
    async () => {
      const file = s.plan(planText('workershung', 'none'));
      // The leader stops after its second batch until the worker hangs in its first.
      const leader = start(['run', file], { ...s.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:2:SIGSTOP' });
      await stopped(leader);
      const hung = start(['run', file, '--worker-only'], { ...s.env, CLOUDSHIFT_FAULT: 'beforeBatchCommit:1:SIGSTOP' });
      try {
        await stopped(hung);
        leader.child.kill('SIGCONT');
        const r = await leader.done;
        expect(r.code, r.out).toBe(0);
        await expectEqual(s);
        const statuses = await sql<{ status: string }>('target', s.dbs.target, `SELECT DISTINCT status FROM cloudshift.batches`);
        expect(statuses.map((x) => x.status)).toEqual(['verified']);
      } finally {
        leader.child.kill('SIGKILL');
        hung.child.kill('SIGKILL');
      }
    },
  );

  it(
    'a worker that joined during the copy stands by through the index builds, and takes the run over when the leader goes',
    { timeout: 120_000 },
    async () => {
      await sql('source', s.dbs.source, `CREATE INDEX readings_patient ON public.readings (patient)`);
      const file = s.plan(planText('workersstandby', 'logical'));
      const leader = start(['run', file], { ...s.env, CLOUDSHIFT_FAULT: 'postDataStatement:1:SIGSTOP' });
      await waitForPhase(s, 'copy');
      const worker = start(['run', file], s.env);
      try {
        await stopped(leader);
        await waitForStandby(s);
        leader.child.kill('SIGKILL');
        await waitForPhase(s, 'sync');
        const events = await sql<{ kind: string }>('target', s.dbs.target, `SELECT kind FROM cloudshift.events WHERE kind = 'worker:lead'`);
        expect(events).toHaveLength(1);
      } finally {
        leader.child.kill('SIGKILL');
        worker.child.kill('SIGINT');
        await worker.done;
      }
      await cli(['cleanup', file], s.env);
    },
  );
});

describe('a plan changed under a worker', () => {
  let s: Scenario;
  beforeEach(async () => {
    s = await readingsScenario('workersplan');
  });
  afterEach(async () => s.drop());

  it(
    'a worker on the old plan, after its leader was resumed with --force and a changed plan, claims nothing more and stops with exit 4',
    { timeout: 120_000 },
    async () => {
      const file = s.plan(planText('workersplan', 'none'));
      // The leader stops after its second batch; a worker joins and stops after its first.
      const leader = start(['run', file], { ...s.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:2:SIGSTOP' });
      let worker: Proc | null = null;
      let resumed: Proc | null = null;
      try {
        await stopped(leader);
        worker = start(['run', file, '--worker-only'], { ...s.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:1:SIGSTOP' });
        await stopped(worker);
        // The leader dies; it is resumed with another plan (--force), and stops after a batch of its own.
        leader.child.kill('SIGKILL');
        await leader.done;
        const changed = s.plan(planText('workersplan', 'none').replace('workerTimeout: 10s', 'workerTimeout: 12s'));
        resumed = start(['run', changed, '--force'], { ...s.env, CLOUDSHIFT_FAULT: 'afterBatchCommit:1:SIGSTOP' });
        await stopped(resumed);
        const [{ now }] = (await sql<{ now: Date }>('target', s.dbs.target, 'SELECT now()')) as [{ now: Date }];
        worker.child.kill('SIGCONT');
        const w = await worker.done;
        expect(w.code, w.out).toBe(4);
        expect(w.out).toContain('changed since this process joined it (its leader resumed it with --force): this worker stopped');
        const claimedSince = await sql(
          'target',
          s.dbs.target,
          `SELECT b.id FROM cloudshift.batches b JOIN cloudshift.workers w ON w.id = b.claimed_by WHERE w.pid = $1 AND b.claimed_at >= $2`,
          [worker.child.pid, now],
        );
        expect(claimedSince).toEqual([]);
        // Recorded as a worker's failure, not the run's: the leader is fine.
        const failures = await sql<{ kind: string; message: string }>(
          'target',
          s.dbs.target,
          `SELECT kind, message FROM cloudshift.events WHERE kind LIKE '%:failed' ORDER BY id`,
        );
        expect(failures).toEqual([{ kind: 'worker:failed', message: expect.stringContaining('this worker stopped') as string }]);
        resumed.child.kill('SIGCONT');
        const r = await resumed.done;
        expect(r.code, r.out).toBe(0);
        await expectEqual(s);
      } finally {
        for (const p of [leader, worker, resumed]) p?.child.kill('SIGKILL');
      }
    },
  );
});

describe('joining limits', () => {
  let s: Scenario;
  beforeEach(async () => {
    s = await readingsScenario('workerlimits');
  });
  afterEach(async () => s.drop());

  it('--worker-only never starts a run; --max-workers refuses a worker too many', { timeout: 120_000 }, async () => {
    const file = s.plan(planText('workerlimits', 'logical'));
    const alone = await cli(['run', file, '--worker-only'], s.env);
    expect(alone.code).toBe(3);
    expect(alone.stderr).toMatch(/has no run in progress to join \(--worker-only never starts one\)/);

    // A leader that keeps syncing.
    const child = spawn('node', ['bin/cloudshift.js', 'run', file], { env: { ...process.env, ...s.env } });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      await waitForPhase(s, 'sync');
      const refused = await cli(['run', file, '--max-workers', '1'], s.env);
      expect(refused.code).toBe(4);
      expect(refused.stderr).toMatch(/already has 1 workers \(most 1\)/);
      const late = await cli(['run', file, '--worker-only'], s.env);
      expect(late.code, late.stderr).toBe(0);
      expect(late.stdout).toMatch(/as a worker: copied 0 batches/);
      const status = await cli(['status', file], s.env);
      expect(status.stdout).toMatch(/workers: 1\n {2}leader /);
    } finally {
      child.kill('SIGINT');
      await exited;
    }
    await cli(['cleanup', file], s.env);
  });
});

describe('the leader killed during live sync', () => {
  let s: Scenario;
  beforeEach(async () => {
    s = await readingsScenario('workersync');
  });
  afterEach(async () => s.drop());

  it('a standby worker takes the sync over from the recorded position', { timeout: 120_000 }, async () => {
    const file = s.plan(planText('workersync', 'logical'));
    const leader = spawn('node', ['bin/cloudshift.js', 'run', file], { env: { ...process.env, ...s.env } });
    const leaderExit = new Promise<NodeJS.Signals | null>((resolve) => leader.once('exit', (_c, sig) => resolve(sig)));
    await waitForPhase(s, 'sync');
    // Joins during the sync: a standby.
    const standby = spawn('node', ['bin/cloudshift.js', 'run', file], { env: { ...process.env, ...s.env } });
    const standbyExit = new Promise<number | null>((resolve) => standby.once('exit', (c) => resolve(c)));
    try {
      await waitForWorkers(s, 2);
      await sql('source', s.dbs.source, `UPDATE public.wards SET beds = 99 WHERE code = 'W1'`);
      leader.kill('SIGKILL');
      expect(await leaderExit).toBe('SIGKILL');
      await sql('source', s.dbs.source, `UPDATE public.wards SET beds = 77 WHERE code = 'W2'`);
      // Both changes arrive: the one the leader may not have applied, and the one after it died.
      for (let i = 0; i < 200; i++) {
        const rows = await sql<{ code: string; beds: number }>(
          'target',
          s.dbs.target,
          `SELECT code, beds FROM public.wards WHERE code IN ('W1', 'W2') ORDER BY code`,
        );
        if (rows[0]?.beds === 99 && rows[1]?.beds === 77) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await expectEqual(s);
      const events = await sql<{ kind: string }>('target', s.dbs.target, `SELECT kind FROM cloudshift.events WHERE kind = 'worker:lead'`);
      expect(events).toHaveLength(1);
    } finally {
      standby.kill('SIGINT');
      leader.kill('SIGKILL');
    }
    expect(await standbyExit).toBe(130);
    await cli(['cleanup', file], s.env);
  });

  it(
    'a standby that gets the lock after a cutover recorded its phase ends there, never putting the run back to sync',
    { timeout: 120_000 },
    async () => {
      const file = s.plan(planText('workercut', 'logical'));
      expect((await cli(['run', file, '--until', 'synced'], s.env)).code).toBe(0);
      // The leader: a session holding the run's lock.
      const leader = new pg.Client({ connectionString: connectionUrl('target', s.dbs.target) });
      let child: ChildProcess | undefined;
      await leader.connect();
      try {
        await leader.query(
          `SELECT pg_advisory_lock(hashtextextended('cloudshift.run:' || id::text, 0)) FROM cloudshift.runs WHERE status = 'active'`,
        );
        const standby = spawn('node', ['bin/cloudshift.js', 'run', file], { env: { ...process.env, ...s.env } });
        child = standby;
        const exited = new Promise<number | null>((resolve) => standby.once('exit', (c) => resolve(c)));
        await waitForStandby(s);
        // A cutover records its phase, and the leader goes before the cutover takes the lock: the
        // standby (held still meanwhile) finds both at its next look.
        standby.kill('SIGSTOP');
        await sql('target', s.dbs.target, `UPDATE cloudshift.runs SET phase = 'cutover' WHERE status = 'active'`);
        await leader.end();
        standby.kill('SIGCONT');
        expect(await exited).toBe(0);
        const phase = await sql<{ phase: string }>('target', s.dbs.target, `SELECT phase FROM cloudshift.runs`);
        expect(phase).toEqual([{ phase: 'cutover' }]);
      } finally {
        await leader.end().catch(() => undefined);
        child?.kill('SIGKILL');
      }
      await cli(['cleanup', file], s.env);
    },
  );
});
