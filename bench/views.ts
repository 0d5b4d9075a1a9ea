/** Benchmarks of the operator views: verify's throughput and status on a run with 100,000 batches. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { runCloudshift } from './child.js';
import { BENCH_TABLES } from './copy.js';

export async function measureVerify(
  dir: string,
  env: Record<string, string>,
  jobs: number,
  bytes: number,
): Promise<{ seconds: number; mbPerSecond: number }> {
  const plan = join(dir, 'bench-plan.yaml');
  const r = await runCloudshift(['verify', plan, '--jobs', String(jobs), '--json'], env);
  if (r.code !== 0) throw new Error(`cloudshift verify exited with ${r.code}: ${r.stdout.slice(0, 2000)}`);
  return { seconds: r.seconds, mbPerSecond: bytes / 1024 / 1024 / r.seconds };
}

/**
 * A state store holding one run with `batches` batches (synthetic, spread over the bench tables,
 * a third done), then `cloudshift status --json` timed as an operator would run it.
 */
export async function measureStatus(dir: string, targetUrl: string, batches: number): Promise<{ batches: number; seconds: number }> {
  const plan = join(dir, 'status-plan.yaml');
  writeFileSync(
    plan,
    `version: 1\nname: statusbench\nsource: { postgres: "\${env:TARGET_DATABASE_URL}" }\ntarget: { postgres: "\${env:TARGET_DATABASE_URL}" }\ntables:\n  - name: public.patients\n`,
  );
  const env = { TARGET_DATABASE_URL: targetUrl };
  // status on a plan with no run creates nothing; a run is needed: start one through the state store schema.
  const c = new pg.Client({ connectionString: targetUrl });
  await c.connect();
  try {
    const { StateStore } = await import('../src/state/store.js');
    const store = await StateStore.open({ connectionString: targetUrl, schema: 'cloudshift' });
    await store.migrate();
    const run = await store.createRun({ planName: 'statusbench', planFingerprint: 'x', toolVersion: 'bench' });
    await store.close();
    await c.query(
      `INSERT INTO cloudshift.batches (run_id, kind, relation, seq, key_low, key_high, status, rows, bytes, claimed_at, finished_at)
       SELECT $1, 'table', ($2::text[])[1 + g % $4], g, to_jsonb(ARRAY[g::text]), to_jsonb(ARRAY[(g + 1)::text]),
              CASE WHEN g % 3 = 0 THEN 'verified' ELSE 'pending' END,
              CASE WHEN g % 3 = 0 THEN 50000 END, CASE WHEN g % 3 = 0 THEN 8000000 END,
              CASE WHEN g % 3 = 0 THEN now() - interval '1 hour' END, CASE WHEN g % 3 = 0 THEN now() - (g % 120) * interval '1 second' END
         FROM generate_series(1, $3) g`,
      [run.id, BENCH_TABLES.map((t) => `${t.schema}.${t.name}`), batches, BENCH_TABLES.length],
    );
    await c.query('ANALYZE cloudshift.batches');
  } finally {
    await c.end();
  }
  const r = await runCloudshift(['status', plan, '--json'], env);
  if (r.code !== 0) throw new Error(`cloudshift status exited with ${r.code}`);
  const o = JSON.parse(r.stdout) as { totals: { batches: number } };
  return { batches: o.totals.batches, seconds: r.seconds };
}
