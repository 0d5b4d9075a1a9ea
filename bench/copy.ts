/**
 * The table-copy benchmark: the floor (COPY binary piped between the servers by psql, two
 * tables at a time) against `cloudshift run` with verification on, over the same data, in one
 * process run. cloudshift runs as a child process so its peak RSS is its own.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import type { LocalServers } from '../src/embedded/servers.js';
import { quoteQualified, type QualifiedName } from '../src/plan/names.js';
import { applyPreData, readSourceSchema } from '../src/target/postgres/schema/index.js';
import { copyPhaseSeconds, runCloudshift } from './child.js';

export const BENCH_TABLES: QualifiedName[] = ['patients', 'encounters', 'observations', 'medications'].map((name) => ({
  schema: 'public',
  name,
}));

export interface CopyMeasure {
  seconds: number;
  rows: number;
  bytes: number;
  rowsPerSecond: number;
  mbPerSecond: number;
  peakRssMb?: number;
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function sourceSize(url: string): Promise<{ rows: number; bytes: number }> {
  return withClient(url, async (c) => {
    const { rows } = await c.query<{ rows: string; bytes: string }>(
      `SELECT sum(c.reltuples)::bigint::text AS rows, sum(pg_table_size(c.oid))::text AS bytes FROM pg_class c WHERE c.oid = ANY($1::regclass[])`,
      [BENCH_TABLES.map(quoteQualified)],
    );
    return { rows: Number(rows[0]!.rows), bytes: Number(rows[0]!.bytes) };
  });
}

export async function createDatabase(servers: LocalServers, side: 'source' | 'target', name: string): Promise<void> {
  await withClient(servers.url(side, 'postgres'), (c) =>
    c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).then(() => c.query(`CREATE DATABASE ${name}`)),
  );
}

/** Target tables without secondary indexes, as both contenders load into. */
export async function prepareTarget(sourceUrl: string, targetUrl: string): Promise<void> {
  await withClient(sourceUrl, (source) =>
    withClient(targetUrl, async (target) => {
      const schema = await readSourceSchema(
        source,
        BENCH_TABLES.map((name) => ({ name, omitColumns: [], addColumns: [] })),
      );
      await applyPreData(target, schema);
    }),
  );
}

function pipeTable(psql: string, sourceUrl: string, targetUrl: string, table: QualifiedName): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = spawn(psql, [sourceUrl, '-qAtX', '-c', `COPY ${quoteQualified(table)} TO STDOUT (FORMAT binary)`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const into = spawn(
      psql,
      [targetUrl, '-qAtX', '-v', 'ON_ERROR_STOP=1', '-c', `COPY ${quoteQualified(table)} FROM STDIN (FORMAT binary)`],
      {
        stdio: ['pipe', 'ignore', 'inherit'],
      },
    );
    out.stdout.pipe(into.stdin);
    let pending = 2;
    const done = (code: number | null, who: string) => {
      if (code !== 0) reject(new Error(`${who} for ${table.name} exited with ${code}`));
      else if (--pending === 0) resolve();
    };
    out.on('exit', (code) => done(code, 'psql COPY TO'));
    into.on('exit', (code) => done(code, 'psql COPY FROM'));
  });
}

export async function measureFloor(
  psql: string,
  sourceUrl: string,
  targetUrl: string,
  size: { rows: number; bytes: number },
): Promise<CopyMeasure> {
  const started = process.hrtime.bigint();
  const queue = [...BENCH_TABLES];
  const worker = async () => {
    for (let t = queue.shift(); t; t = queue.shift()) await pipeTable(psql, sourceUrl, targetUrl, t);
  };
  await Promise.all([worker(), worker()]);
  return sized(Number(process.hrtime.bigint() - started) / 1e9, size);
}

function sized(seconds: number, size: { rows: number; bytes: number }, peakRssMb?: number): CopyMeasure {
  return {
    seconds,
    rows: size.rows,
    bytes: size.bytes,
    rowsPerSecond: size.rows / seconds,
    mbPerSecond: size.bytes / 1024 / 1024 / seconds,
    ...(peakRssMb === undefined ? {} : { peakRssMb }),
  };
}

export interface CloudshiftMeasure {
  /** The copy phase alone (batches copied and verified), comparable with the floor. */
  copy: CopyMeasure;
  /** The whole run: schema, copy, indexes and constraints, sequences. */
  total: CopyMeasure;
}

/** The table benchmark's plan (also run by several workers). */
export function writeTablesPlan(dir: string, jobs: number): string {
  const plan = join(dir, 'bench-plan.yaml');
  writeFileSync(
    plan,
    `version: 1
name: bench
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}", existingData: truncate }
tables:
${BENCH_TABLES.map((t) => `  - name: ${t.schema}.${t.name}`).join('\n')}
copy: { jobs: ${jobs} }
`,
  );
  return plan;
}

export async function measureCloudshift(
  dir: string,
  env: Record<string, string>,
  jobs: number,
  size: { rows: number; bytes: number },
): Promise<CloudshiftMeasure> {
  const plan = writeTablesPlan(dir, jobs);
  const r = await runCloudshift(['run', plan, '--json'], env);
  if (r.code !== 0) {
    const problems = r.stdout.split('\n').filter((l) => /"type":"(batch:mismatch|batch:retry|run:result)"/.test(l));
    throw new Error(`cloudshift run exited with ${r.code}\n${problems.join('\n').slice(0, 4000)}`);
  }
  const total = sized(r.seconds, size, r.peakRssMb);
  const copySeconds = copyPhaseSeconds(r.stdout);
  return { total, copy: sized(copySeconds, size, r.peakRssMb) };
}
