/**
 * The documents benchmark: the same bytes uploaded to Azurite by a plain @azure/storage-blob
 * upload from memory (the baseline) and by `cloudshift run` from PostgreSQL (streamed, verified),
 * at the same concurrency. cloudshift runs as a child process so its peak RSS is its own.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BlobServiceClient, type BlockBlobClient } from '@azure/storage-blob';
import PQueue from 'p-queue';
import pg from 'pg';
import { createHash } from 'node:crypto';
import { copyRows } from '../src/pg/copyBinary.js';
import { copyPhaseSeconds, runCloudshift } from './child.js';
import type { CpuMeter, CpuSeconds } from './cpu.js';

export interface DocumentsMeasure {
  documents: number;
  bytes: number;
  seconds: number;
  documentsPerSecond: number;
  mbPerSecond: number;
  peakRssMb?: number;
  /** CPU seconds of each party during the timed part. */
  cpu: CpuSeconds;
}

function measure(started: bigint, meter: CpuMeter, documents: number, bytes: number): DocumentsMeasure {
  return sized(Number(process.hrtime.bigint() - started) / 1e9, meter.stop(), documents, bytes);
}

function sized(seconds: number, cpu: CpuSeconds, documents: number, bytes: number, peakRssMb?: number): DocumentsMeasure {
  return {
    cpu,
    documents,
    bytes,
    seconds,
    documentsPerSecond: documents / seconds,
    mbPerSecond: bytes / 1024 / 1024 / seconds,
    ...(peakRssMb === undefined ? {} : { peakRssMb }),
  };
}

/**
 * Reads every document into memory (not timed), then uploads them all (timed). Azurite is warmed
 * up first (its code is compiled on first use: a cold start costs a third of the throughput), and
 * the baseline's blobs are deleted after, so cloudshift finds Azurite as the baseline did.
 */
export async function measureBaseline(
  sourceUrl: string,
  connectionString: string,
  concurrency: number,
  meter: CpuMeter,
): Promise<DocumentsMeasure> {
  const c = new pg.Client({ connectionString: sourceUrl });
  await c.connect();
  const docs: Array<{ name: string; body: Buffer }> = [];
  try {
    const { rows } = await c.query<{ id: string }>('SELECT id::text AS id FROM public.documents ORDER BY id');
    for (const r of rows) {
      const { rows: b } = await c.query<{ b: Buffer }>('SELECT content AS b FROM public.documents WHERE id = $1', [r.id]);
      docs.push({ name: `baseline/${r.id}`, body: b[0]!.b });
    }
  } finally {
    await c.end();
  }
  const service = BlobServiceClient.fromConnectionString(connectionString);
  const upload = async (container: string, set: typeof docs) => {
    const c = service.getContainerClient(container);
    await c.createIfNotExists();
    const queue = new PQueue({ concurrency });
    await Promise.all(
      set.map((d) => queue.add(() => c.getBlockBlobClient(d.name).uploadData(d.body, { concurrency: 2, blockSize: 4 * 1024 * 1024 }))),
    );
    return c;
  };
  await (await upload('warmup', docs.slice(0, 500))).delete();
  const bytes = docs.reduce((n, d) => n + d.body.length, 0);
  meter.start();
  const started = process.hrtime.bigint();
  const container = await upload('baseline', docs);
  const result = measure(started, meter, docs.length, bytes);
  await container.delete();
  return result;
}

/**
 * The least a tool reading the documents from PostgreSQL does: one binary COPY of them all (with
 * cloudshift's own reader), the MD5 and SHA-256 of each, one upload each carrying its MD5, at the
 * same concurrency; no rows copied, nothing recorded, nothing verified after. Against the
 * baseline it shows what reading from PostgreSQL and hashing cost on this machine; against it,
 * cloudshift's ratio shows what the rows, the bookkeeping and the verification cost.
 */
export async function measureDocumentsFloor(
  sourceUrl: string,
  connectionString: string,
  concurrency: number,
  meter: CpuMeter,
): Promise<DocumentsMeasure> {
  const c = new pg.Client({ connectionString: sourceUrl });
  await c.connect();
  const container = BlobServiceClient.fromConnectionString(connectionString).getContainerClient('floor');
  let documents = 0;
  let bytes = 0;
  meter.start();
  const started = process.hrtime.bigint();
  try {
    await container.createIfNotExists();
    const queue = new PQueue({ concurrency });
    const uploads: Array<Promise<unknown>> = [];
    await copyRows(c, 'SELECT id::text, content FROM public.documents ORDER BY id', async (rows) => {
      for (let row = await rows.next(); row !== null; row = await rows.next()) {
        const name = `floor/${row.leading[0]!.toString()}`;
        const body = await rows.read(row.size ?? 0); // whole: the benchmark's documents are at most 4 MB
        documents += 1;
        bytes += body.length;
        await queue.onSizeLessThan(concurrency);
        uploads.push(
          queue.add(async () => {
            const md5 = createHash('md5').update(body).digest();
            createHash('sha256').update(body).digest();
            await container
              .getBlockBlobClient(name)
              .upload(body, body.length, { blobHTTPHeaders: { blobContentMD5: md5 }, transactionalContentMD5: md5 } as Parameters<
                BlockBlobClient['upload']
              >[2]);
          }),
        );
      }
    });
    await Promise.all(uploads);
    return measure(started, meter, documents, bytes);
  } finally {
    await c.end();
    await container.deleteIfExists();
  }
}

/** The container of the documents benchmark's plan, unless a caller names another. */
const DOCUMENTS_CONTAINER = 'documents';

export async function measureCloudshiftDocuments(
  dir: string,
  env: Record<string, string>,
  concurrency: number,
  documents: number,
  bytes: number,
  meter: CpuMeter,
): Promise<DocumentsMeasure> {
  const plan = writeDocumentsPlan(dir);
  // CPU over the copy phase only, the part timed: metered from its event to the next phase's.
  const copy: { cpu?: CpuSeconds } = {};
  const r = await runCloudshift(['run', plan, '--json', '--blob-concurrency', String(concurrency)], env, (line) => {
    const phase = line.startsWith('{') ? (JSON.parse(line) as { type: string; phase?: string }) : null;
    if (phase?.type !== 'run:phase') return;
    if (phase.phase === 'copy') meter.start();
    else if (phase.phase === 'indexes') copy.cpu = meter.stop();
  });
  if (r.code !== 0) throw new Error(`cloudshift run exited with ${r.code}`);
  if (!copy.cpu) throw new Error('cloudshift did not report its copy phase');
  // As the baseline and the floor: the next measurement finds Azurite without these blobs.
  await BlobServiceClient.fromConnectionString(env.AZURE_STORAGE_CONNECTION_STRING!)
    .getContainerClient(DOCUMENTS_CONTAINER)
    .deleteIfExists();
  return sized(copyPhaseSeconds(r.stdout), copy.cpu, documents, bytes, r.peakRssMb);
}

/** The documents benchmark's plan (also run by several workers). */
export function writeDocumentsPlan(dir: string, container = DOCUMENTS_CONTAINER): string {
  const plan = join(dir, `bench-${container}.yaml`);
  writeFileSync(
    plan,
    `version: 1
name: benchdocs
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target:
  postgres: "\${env:TARGET_DATABASE_URL}"
  existingData: truncate
  blob: { connectionString: "\${env:AZURE_STORAGE_CONNECTION_STRING}", container: ${container} }
tables:
  - name: public.patients
documents:
  - table: public.documents
    content: content
    blob: "patients/{patient_id}/{id}-{filename}"
    contentType: "{mime_type}"
    keep: { column: blob_path }
copy: { jobs: 2, batch: { rows: 250 } }
`,
  );
  return plan;
}
