/**
 * The cutover benchmark: an application writes through PgBouncer at a steady rate while
 * `cloudshift run` syncs in another process; a burst of row changes measures the apply rate and
 * how fast the lag comes back under a second; then 5 cutovers, each followed by a rollback,
 * measure the write pause (PAUSE sent → RESUME answered) the application sees.
 */
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import type { LocalServers } from '../src/embedded/servers.js';
import { findPgBouncer, startAppBouncer } from '../src/embedded/pgbouncer.js';
import { APP_SQL, AppSimulator } from '../src/demo/appSimulator.js';
import { StateStore } from '../src/state/store.js';
import { syncRow } from '../src/state/sql/sync.js';
import { parseLsn } from '../src/sync/lsn.js';
import { createDatabase } from './copy.js';
import { runCloudshift } from './child.js';
import { scratchDir } from '../src/embedded/util.js';

export interface CutoverMeasure {
  ratePerSecond: number;
  cutoverPausesMs: number[];
  rollbackPausesMs: number[];
  median: number;
  max: number;
  burst: { changes: number; seconds: number; changesPerSecond: number; lagBackUnderOneSecondAfter: number };
  application: { transactions: number; errors: number; slowestMs: number };
}

const APP_USER = 'cloudshift_bench_app';

async function exec(url: string, text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query(text, params);
  } finally {
    await c.end();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export async function measureCutover(servers: LocalServers, ratePerSecond = 200, cutovers = 5): Promise<CutoverMeasure | null> {
  if (!findPgBouncer()) {
    console.error('cutover: skipped, pgbouncer is not installed (apt-get install -y pgbouncer)');
    return null;
  }
  const db = `cut_${Date.now()}`;
  await createDatabase(servers, 'source', db);
  await createDatabase(servers, 'target', db);
  const src = servers.url('source', db);
  const tgt = servers.url('target', db);
  await exec(src, APP_SQL);
  const b = await startAppBouncer({
    sourceUrl: src,
    targetUrl: tgt,
    appUser: APP_USER,
    appPassword: randomBytes(18).toString('base64url'),
  });
  const bouncer = b.bouncer;
  const dir = scratchDir('cs-bench-cutover');
  const plan = join(dir, 'plan.yaml');
  writeFileSync(
    plan,
    `version: 1
name: cutbench
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables: [{ name: public.accounts }, { name: public.ledger }, { name: public.events }]
sync: { mode: logical }
cutover:
  switch:
    ${b.switchYaml}
  maxPause: 2s
  maxLag: 1s
`,
  );
  const env = {
    SOURCE_DATABASE_URL: src,
    TARGET_DATABASE_URL: tgt,
    PGBOUNCER_ADMIN_URL: b.adminUrl,
  };
  const app = new AppSimulator(b.appUrl, ratePerSecond, 'bench');
  const store = await StateStore.open({ connectionString: tgt, schema: 'cloudshift' });
  try {
    app.start();
    const first = await runCloudshift(['run', plan, '--until', 'synced'], env);
    if (first.code !== 0) throw new Error(`cutover bench: run exited ${first.code}`);
    const runner = spawn(process.execPath, ['bin/cloudshift.js', 'run', plan], { env: { ...process.env, ...env }, stdio: 'ignore' });
    const runnerExit = new Promise((resolve) => runner.once('exit', resolve));
    const run = (await store.getActiveRun('cutbench'))!;
    await new Promise((r) => setTimeout(r, 3000));

    // The burst: 200,000 row changes in one transaction, on top of the steady load.
    const changes = 200_000;
    const burst = await exec(
      src,
      `WITH i AS (INSERT INTO public.events (kind, payload) SELECT 'burst', md5(g::text) FROM generate_series(1, ${changes}) g RETURNING 1)
       SELECT count(*) FROM i`,
    );
    if (Number((burst.rows[0] as { count: string }).count) !== changes) throw new Error('burst insert');
    const committed = performance.now();
    const lsn = parseLsn(((await exec(src, `SELECT pg_current_wal_lsn()::text AS l`)).rows[0] as { l: string }).l);
    let applied = 0;
    for (;;) {
      const row = await syncRow(store.knex, run.id);
      if (row && row.lsn >= lsn) {
        applied = performance.now();
        break;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    let lagBack = 0;
    for (;;) {
      const row = await syncRow(store.knex, run.id);
      if (
        row?.measuredAt &&
        row.measuredAt.getTime() > Date.now() - 1500 &&
        row.lagMs !== null &&
        row.lagMs < 1000 &&
        performance.now() > applied
      ) {
        lagBack = performance.now();
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const seconds = (applied - committed) / 1000;

    const cutoverPausesMs: number[] = [];
    const rollbackPausesMs: number[] = [];
    for (let i = 0; i < cutovers; i++) {
      for (const command of ['cutover', 'rollback'] as const) {
        await new Promise((r) => setTimeout(r, 1000));
        const r = await runCloudshift([command, plan, '--json'], env);
        const json = JSON.parse(r.stdout) as {
          switched: boolean;
          pauseMs: number;
          reason?: string;
          steps: Array<{ step: string; ms: number }>;
        };
        if (!json.switched) throw new Error(`${command} did not switch: ${json.reason}`);
        (command === 'cutover' ? cutoverPausesMs : rollbackPausesMs).push(json.pauseMs);
        console.error(`  ${command} ${i + 1}: write pause ${json.pauseMs} ms (${json.steps.map((s) => `${s.step} ${s.ms}`).join(', ')})`);
      }
      if (i === 0) await runnerExit;
    }
    await app.stop();
    return {
      ratePerSecond,
      cutoverPausesMs,
      rollbackPausesMs,
      median: median(cutoverPausesMs),
      max: Math.max(...cutoverPausesMs),
      burst: { changes, seconds, changesPerSecond: changes / seconds, lagBackUnderOneSecondAfter: (lagBack - committed) / 1000 },
      application: { transactions: app.count, errors: app.errors.length, slowestMs: Math.round(app.slowestMs) },
    };
  } finally {
    await app.stop().catch(() => undefined);
    await runCloudshift(['cleanup', plan], env).catch(() => undefined);
    await store.close();
    await bouncer.stop();
  }
}
