/**
 * npm run bench: generates the hospital dataset, starts local servers, and measures the floor
 * and cloudshift over the same data in one run. Prints a table and writes bench/results/*.json.
 *   --scale 1        dataset scale (1 ≈ 1,000,000 observations, ~300 MB)
 *   --scales 1,4     several scales side by side (RSS must not grow with table size)
 *   --jobs 4         cloudshift --jobs
 *   --rate 200       transactions/s of the application during the cutover benchmark
 *   --rounds 3       documents: rounds of baseline, floor and cloudshift (the ratio is their median)
 *   --service-core   Azurite on the last core, everything else on the others (Linux, taskset), as a
 *                    blob service elsewhere has its own CPU; by default all share every core
 *   --profile DIR    each cloudshift child writes a V8 CPU profile (.cpuprofile) into DIR
 *   --skip-tables, --skip-documents, --skip-cutover, --skip-workers
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { createHospitalDataset } from '../src/demo/dataset.js';
import { startLocalServers } from '../src/embedded/servers.js';
import { profileChildrenInto } from './child.js';
import { CpuMeter, pinService } from './cpu.js';
import { createDatabase, measureCloudshift, measureFloor, prepareTarget, sourceSize, writeTablesPlan } from './copy.js';
import { measureStatus, measureVerify } from './views.js';
import {
  measureBaseline,
  measureCloudshiftDocuments,
  measureDocumentsFloor,
  writeDocumentsPlan,
  type DocumentsMeasure,
} from './documents.js';
import { measureCutover } from './cutover.js';
import { measureWorkers, type WorkersMeasure } from './workers.js';
import { scratchDir } from '../src/embedded/util.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

function findPsql(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v psql'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('psql not found: install the PostgreSQL client (Debian: apt-get install postgresql-client)');
  }
}

const profile = arg('profile', '');
if (profile) profileChildrenInto(profile);
const scales = arg('scales', arg('scale', '1')).split(',').map(Number);
const jobs = Number(arg('jobs', '4'));
const psql = findPsql();
const servers = await startLocalServers({ azurite: true });
const serviceCore = process.argv.includes('--service-core');
if (serviceCore) pinService(servers);
const skipTables = process.argv.includes('--skip-tables');
const skipDocuments = process.argv.includes('--skip-documents');
const skipWorkers = process.argv.includes('--skip-workers');
const results: unknown[] = [];
try {
  for (const scale of skipTables ? [] : scales) {
    await createDatabase(servers, 'source', 'bench');
    const src = servers.url('source', 'bench');
    const generated = Date.now();
    const c = new pg.Client({ connectionString: src });
    await c.connect();
    await createHospitalDataset(c, { scale, documents: null }, (m) => console.error(`  ${m}`));
    await c.end();
    console.error(`scale ${scale}: dataset generated in ${((Date.now() - generated) / 1000).toFixed(1)} s`);
    const size = await sourceSize(src);

    await createDatabase(servers, 'target', 'floor');
    await prepareTarget(src, servers.url('target', 'floor'));
    const floor = await measureFloor(psql, src, servers.url('target', 'floor'), size);
    await createDatabase(servers, 'target', 'floor');

    await createDatabase(servers, 'target', 'cs');
    const dir = scratchDir('cs-bench');
    const csEnv = { SOURCE_DATABASE_URL: src, TARGET_DATABASE_URL: servers.url('target', 'cs') };
    const cs = await measureCloudshift(dir, csEnv, jobs, size);
    const verify = await measureVerify(dir, csEnv, jobs, size.bytes);
    await createDatabase(servers, 'target', 'cs');
    const scaling: WorkersMeasure[] = [];
    if (!skipWorkers && scale === scales[0]) {
      for (const n of [1, 2, 4]) {
        await createDatabase(servers, 'target', 'cs');
        scaling.push(await measureWorkers(writeTablesPlan(dir, 2), csEnv, n, size.bytes));
      }
      await createDatabase(servers, 'target', 'cs');
    }

    const ratio = cs.copy.mbPerSecond / floor.mbPerSecond;
    results.push({
      scale,
      rows: size.rows,
      bytes: size.bytes,
      floor,
      cloudshift: cs,
      ratio,
      verify: { ...verify, ratioToCopy: verify.mbPerSecond / cs.copy.mbPerSecond },
      workers: scaling,
    });
    console.log(`\nscale ${scale}: ${size.rows.toLocaleString('en-GB')} rows, ${(size.bytes / 1024 / 1024).toFixed(0)} MB of table data`);
    console.log(
      `  floor (psql COPY binary, 2 tables at a time): ${floor.seconds.toFixed(1)} s, ${Math.round(floor.rowsPerSecond).toLocaleString('en-GB')} rows/s, ${floor.mbPerSecond.toFixed(1)} MB/s`,
    );
    console.log(
      `  cloudshift copy phase (verified, --jobs ${jobs}): ${cs.copy.seconds.toFixed(1)} s, ${Math.round(cs.copy.rowsPerSecond).toLocaleString('en-GB')} rows/s, ${cs.copy.mbPerSecond.toFixed(1)} MB/s`,
    );
    console.log(`    cloudshift whole run (schema, copy, indexes, FKs, sequences): ${cs.total.seconds.toFixed(1)} s`);
    console.log(`    ratio (copy phase / floor): ${ratio.toFixed(2)}   peak RSS: ${cs.copy.peakRssMb?.toFixed(0)} MB`);
    console.log(
      `    cloudshift verify (full, --jobs ${jobs}): ${verify.seconds.toFixed(1)} s, ${verify.mbPerSecond.toFixed(1)} MB/s, ${(verify.mbPerSecond / cs.copy.mbPerSecond).toFixed(2)} x the copy's throughput`,
    );
    for (const w of scaling) {
      console.log(
        `    ${w.workers} worker process${w.workers > 1 ? 'es' : ''} (--jobs 2 each): copy phase ${w.seconds.toFixed(1)} s, ${w.mbPerSecond.toFixed(1)} MB/s`,
      );
    }
  }
  if (!skipDocuments) {
    const count = Number(arg('documents', '2000'));
    const documentRounds = Number(arg('rounds', '3'));
    const totalMb = Number(arg('documents-mb', '300'));
    const hugeMb = Number(arg('huge-mb', '200'));
    await createDatabase(servers, 'source', 'docs');
    const src = servers.url('source', 'docs');
    const c = new pg.Client({ connectionString: src });
    await c.connect();
    await createHospitalDataset(c, { scale: 0.01, documents: { count, totalBytes: totalMb * 1024 * 1024, maxBytes: 4 * 1024 * 1024 } });
    const sizes = await c.query<{ n: string; bytes: string }>(
      'SELECT count(*)::text AS n, sum(octet_length(content))::text AS bytes FROM public.documents',
    );
    await c.end();
    const documents = Number(sizes.rows[0]!.n);
    const bytes = Number(sizes.rows[0]!.bytes);
    const az = servers.azurite!.connectionString;
    await createDatabase(servers, 'target', 'docs');
    const dir = scratchDir('cs-bench');
    const env = { SOURCE_DATABASE_URL: src, TARGET_DATABASE_URL: servers.url('target', 'docs'), AZURE_STORAGE_CONNECTION_STRING: az };
    // The machine's speed drifts by a third from one minute to the next: each round measures all
    // three, in a rotating order so none always goes first or last, and the ratio is the median
    // of the rounds' ratios (each taken between measurements minutes apart at most).
    const meter = new CpuMeter(servers);
    const contenders = {
      baseline: () => measureBaseline(src, az, 8, meter),
      floor: () => measureDocumentsFloor(src, az, 8, meter),
      cloudshift: async () => {
        await createDatabase(servers, 'target', 'docs');
        return measureCloudshiftDocuments(dir, env, 8, documents, bytes, meter);
      },
    };
    const order = ['baseline', 'floor', 'cloudshift'] as const;
    const rounds: Array<Record<(typeof order)[number], DocumentsMeasure>> = [];
    for (let r = 0; r < documentRounds; r += 1) {
      const round: Partial<(typeof rounds)[number]> = {};
      for (let k = 0; k < order.length; k += 1) {
        const name = order[(r + k) % order.length]!;
        round[name] = await contenders[name]();
      }
      rounds.push(round as (typeof rounds)[number]);
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const ratio = median(rounds.map((x) => x.cloudshift.mbPerSecond / x.baseline.mbPerSecond));
    const floorRatio = median(rounds.map((x) => x.floor.mbPerSecond / x.baseline.mbPerSecond));
    console.log(
      `\ndocuments: ${documents.toLocaleString('en-GB')} documents, ${(bytes / 1024 / 1024).toFixed(0)} MB, sizes 1 KB to 4 MB, ${rounds.length} rounds`,
    );
    if (serviceCore) console.log('  Azurite on its own core (--service-core); the rest on the others');
    console.log('  baseline: @azure/storage-blob upload from memory, 8 at a time');
    console.log('  floor: one COPY from PostgreSQL, MD5 and SHA-256, upload; nothing recorded or verified');
    console.log('  cloudshift: streamed from PostgreSQL, recorded, verified, --blob-concurrency 8');
    console.log('  CPU seconds: of Azurite, each PostgreSQL server and the client while each was timed, and the cores idle');
    rounds.forEach((x, i) => {
      const line = order.map((n) => `${n} ${x[n].seconds.toFixed(1)} s (${x[n].mbPerSecond.toFixed(1)} MB/s)`).join(', ');
      console.log(`  round ${i + 1}: ${line}; ratio ${(x.cloudshift.mbPerSecond / x.baseline.mbPerSecond).toFixed(2)}`);
      for (const n of order) {
        const cpu = Object.entries(x[n].cpu)
          .map(([k, v]) => `${k} ${v.toFixed(2)}`)
          .join(', ');
        console.log(`    ${n} CPU seconds: ${cpu}`);
      }
    });
    const best = (n: (typeof order)[number]) => rounds.map((x) => x[n]).reduce((a, b) => (b.seconds < a.seconds ? b : a));
    console.log(
      `    ratio (cloudshift / baseline, median of the rounds): ${ratio.toFixed(2)}   documents/s: ${best('cloudshift').documentsPerSecond.toFixed(0)} vs ${best('baseline').documentsPerSecond.toFixed(0)} (best rounds)`,
    );
    console.log(
      `    floor / baseline (median): ${floorRatio.toFixed(2)}   peak RSS: ${Math.max(...rounds.map((x) => x.cloudshift.peakRssMb ?? 0)).toFixed(0)} MB`,
    );
    results.push({ documents: { serviceCore, rounds, ratio, floorRatio } });
    if (!skipWorkers) {
      const docScaling: WorkersMeasure[] = [];
      for (const n of [1, 2, 4]) {
        await createDatabase(servers, 'target', 'docs');
        docScaling.push(await measureWorkers(writeDocumentsPlan(dir, `workers${n}`), env, n, bytes, ['--blob-concurrency', '8']));
        console.log(
          `  ${n} worker process${n > 1 ? 'es' : ''}: ${docScaling.at(-1)!.seconds.toFixed(1)} s, ${docScaling.at(-1)!.mbPerSecond.toFixed(1)} MB/s`,
        );
      }
      results.push({ documentsWorkers: docScaling });
    }
    // one huge document: memory must not follow its size
    await createDatabase(servers, 'source', 'huge');
    const hs = servers.url('source', 'huge');
    const h = new pg.Client({ connectionString: hs });
    await h.connect();
    await createHospitalDataset(h, { scale: 0.001, documents: { count: 10, totalBytes: 100 * 1024, maxBytes: 64 * 1024 } });
    await h.query('ALTER TABLE public.documents ALTER COLUMN content SET STORAGE EXTERNAL');
    await h.query(
      `INSERT INTO public.documents (patient_id, filename, mime_type, kind, content)
       SELECT 1, 'huge.bin', 'application/octet-stream', 'scan', decode(repeat(string_agg(md5(g::text || 'x'), ''), $1), 'hex') FROM generate_series(1, 65536) g`,
      [hugeMb],
    );
    await h.end();
    await createDatabase(servers, 'target', 'huge');
    const huge = await measureCloudshiftDocuments(
      dir,
      { ...env, SOURCE_DATABASE_URL: hs, TARGET_DATABASE_URL: servers.url('target', 'huge') },
      8,
      11,
      hugeMb * 1024 * 1024,
      new CpuMeter(servers),
    );
    console.log(`  with one ${hugeMb} MB document: ${huge.seconds.toFixed(1)} s, peak RSS ${huge.peakRssMb?.toFixed(0)} MB`);
    results.push({ hugeDocument: huge });
  }
  if (!process.argv.includes('--skip-cutover')) {
    const cut = await measureCutover(servers, Number(arg('rate', '200')));
    if (cut) {
      results.push({ cutover: cut });
      console.log(`\ncutover through PgBouncer, an application writing ${cut.ratePerSecond} transactions/s throughout:`);
      console.log(
        `  write pause over ${cut.cutoverPausesMs.length} cutovers: median ${cut.median} ms, max ${cut.max} ms (${cut.cutoverPausesMs.join(', ')}); rollbacks: ${cut.rollbackPausesMs.join(', ')} ms`,
      );
      console.log(
        `  apply rate on a burst of ${cut.burst.changes.toLocaleString('en-GB')} row changes: ${Math.round(cut.burst.changesPerSecond).toLocaleString('en-GB')} changes/s (${cut.burst.seconds.toFixed(2)} s from commit to applied); lag back under 1 s ${cut.burst.lagBackUnderOneSecondAfter.toFixed(1)} s after the commit`,
      );
      console.log(
        `  application: ${cut.application.transactions} transactions, ${cut.application.errors} errors, slowest ${cut.application.slowestMs} ms`,
      );
    }
  }
  await createDatabase(servers, 'target', 'statusbench');
  const status = await measureStatus(scratchDir('cs-bench'), servers.url('target', 'statusbench'), 100_000);
  results.push({ status });
  console.log(
    `\nstatus on a run with ${status.batches.toLocaleString('en-GB')} batches: ${status.seconds.toFixed(2)} s (the whole command, process start included)`,
  );
} finally {
  await servers.stop();
}
const machine = { cpus: cpus().length, cpu: cpus()[0]?.model ?? '?', memoryGb: Math.round(totalmem() / 1024 ** 3), node: process.version };
mkdirSync('bench/results', { recursive: true });
const file = join('bench/results', `copy-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, `${JSON.stringify({ machine, jobs, results }, null, 2)}\n`);
console.log(`\nresults written to ${file}`);
