/**
 * The documents benchmark: the same bytes uploaded to Azurite by a plain @azure/storage-blob
 * upload from memory (the baseline) and by `cloudshift run` from PostgreSQL (streamed, verified),
 * at the same concurrency. cloudshift runs as a child process so its peak RSS is its own.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BlobServiceClient } from '@azure/storage-blob';
import PQueue from 'p-queue';
import pg from 'pg';
import { copyPhaseSeconds, runCloudshift } from './child.js';

export interface DocumentsMeasure {
  documents: number;
  bytes: number;
  seconds: number;
  documentsPerSecond: number;
  mbPerSecond: number;
  peakRssMb?: number;
}

function measure(started: bigint, documents: number, bytes: number, peakRssMb?: number): DocumentsMeasure {
  return sized(Number(process.hrtime.bigint() - started) / 1e9, documents, bytes, peakRssMb);
}

function sized(seconds: number, documents: number, bytes: number, peakRssMb?: number): DocumentsMeasure {
  return {
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
export async function measureBaseline(sourceUrl: string, connectionString: string, concurrency: number): Promise<DocumentsMeasure> {
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
  const started = process.hrtime.bigint();
  const container = await upload('baseline', docs);
  const result = measure(started, docs.length, bytes);
  await container.delete();
  return result;
}

export async function measureCloudshiftDocuments(
  dir: string,
  env: Record<string, string>,
  concurrency: number,
  documents: number,
  bytes: number,
): Promise<DocumentsMeasure> {
  const plan = writeDocumentsPlan(dir);
  const r = await runCloudshift(['run', plan, '--json', '--blob-concurrency', String(concurrency)], env);
  if (r.code !== 0) throw new Error(`cloudshift run exited with ${r.code}`);
  return sized(copyPhaseSeconds(r.stdout), documents, bytes, r.peakRssMb);
}

/** The documents benchmark's plan (also run by several workers). */
export function writeDocumentsPlan(dir: string, container = 'documents'): string {
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
