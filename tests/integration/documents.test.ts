import { createHash } from 'node:crypto';
import {
  BlobServiceClient,
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  StorageSharedKeyCredential,
} from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClaimLostError } from '../../src/engine/copyBatch.js';
import { runMigration } from '../../src/engine/run.js';
import { loadPlan } from '../../src/plan/parse.js';
import { verifyPlan } from '../../src/verify/verifyTables.js';
import type { Overview } from '../../src/views/overview.js';
import type { ChildProcess } from 'node:child_process';
import { cli, spawnCli } from '../harness/cli.js';
import { expectSameRows } from '../harness/compare.js';
import { harness, rewritingTrigger, sql } from '../harness/db.js';
import { startFaultProxy, type FaultProxy } from '../harness/faultProxy.js';
import { hospitalScenario, type Scenario } from '../harness/scenario.js';

/** A plan's opening: the servers of the scenario, its container. */
const planHead = (name: string) => `version: 1
name: ${name}
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target:
  postgres: "\${env:TARGET_DATABASE_URL}"
  blob: { connectionString: "\${env:AZURE_STORAGE_CONNECTION_STRING}", container: "{{container}}" }
`;

const PLAN = `${planHead('docs')}tables:
  - name: public.patients
  - name: public.documents
    batch: { rows: 40 }
documents:
  - table: public.documents
    content: content
    blob: "patients/{patient_id}/{id}-{filename}"
    contentType: "{mime_type}"
    metadata: { kind: "{kind}", file: "{filename}" }
    tags: { kind: "{kind}" }
    keep: { column: blob_path }
  - table: public.scans
    content: image
    blob: "scans/{id}.dcm"
    contentType: application/dicom
    tier: Cool
    tags: { patient: "{patient_id}", system: "RIS PACS/2" }
    keep: { column: blob_name }
copy: { jobs: 2 }
`;

/** PLAN without its scans entry: the documents table's bytea documents only. */
const DOCUMENTS_ONLY_PLAN = PLAN.replace(/ {2}- table: public.scans[\s\S]*?blob_name \}\n/, '');

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const container = (s: Scenario) =>
  BlobServiceClient.fromConnectionString(harness().azurite.connectionString).getContainerClient(s.container);

async function addDocuments(s: Scenario) {
  await sql(
    'source',
    s.dbs.source,
    `-- every byte value, a name that needs encoding, and a document bigger than one 4 MiB block
     INSERT INTO public.documents (id, patient_id, filename, mime_type, kind, content)
       SELECT 1001, 1, 'all bytes/é?.bin', 'application/octet-stream', 'test', decode(string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b), 'hex') FROM generate_series(0, 255) b;
     INSERT INTO public.documents (id, patient_id, filename, mime_type, kind, content)
       SELECT 1002, 2, 'scan.pdf', 'application/pdf', 'scan', decode(string_agg(md5(g::text), ''), 'hex') FROM generate_series(1, 600000) g;
     CREATE TABLE public.scans (id int PRIMARY KEY, patient_id bigint, image oid);
     INSERT INTO public.scans SELECT g, g, lo_from_bytea(0, decode(repeat(md5(g::text), 100 * g), 'hex')) FROM generate_series(1, 6) g;
     ANALYZE;`,
  );
}

async function sourceBytes(s: Scenario, query: string): Promise<Buffer> {
  const rows = await sql<{ b: Buffer }>('source', s.dbs.source, query);
  return rows[0]!.b;
}

/** Runs the documents-only plan, doing `act` once as the first batch of documents starts (before it writes anything). */
async function onFirstDocumentsBatch(s: Scenario, act: () => Promise<unknown>) {
  let done = false;
  const result = await runMigration(await loadPlan(s.plan(DOCUMENTS_ONLY_PLAN)), {
    env: s.env,
    hooks: {
      beforeBatchWrite: async (b) => {
        if (done || b.table !== 'public.documents') return;
        done = true;
        await act();
      },
    },
  });
  expect(done).toBe(true);
  return result;
}

/** Target rows of public.documents that name their blob. */
async function rowsWithBlobs(s: Scenario): Promise<number> {
  const [rows] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM public.documents WHERE blob_path IS NOT NULL`);
  return Number(rows!.n);
}

/**
 * A scenario whose blob requests go through a fault proxy, and its plan without the scans entry;
 * both go after `test`.
 */
async function behindProxy(prefix: string, test: (s: Scenario, proxy: FaultProxy, file: string) => Promise<void>): Promise<void> {
  const s = await hospitalScenario(prefix);
  const proxy = await startFaultProxy(harness().azurite.connectionString);
  try {
    await test(s, proxy, s.plan(DOCUMENTS_ONLY_PLAN));
  } finally {
    await proxy.close();
    await s.drop();
  }
}

describe('documents to Blob Storage', () => {
  let s: Scenario;
  beforeAll(async () => {
    s = await hospitalScenario('docs');
    await addDocuments(s);
  });
  afterAll(async () => s.drop());

  it('moves bytea and large-object documents to blobs, the rows keep the blob names', async () => {
    const r = await cli(['run', s.plan(PLAN)], s.env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const c = container(s);
    // every byte value 0-255 arrives unchanged, under a safely encoded name
    const allBytes = await c.getBlockBlobClient('patients/1/1001-all%20bytes%2F%C3%A9%3F.bin').downloadToBuffer();
    expect(allBytes).toEqual(await sourceBytes(s, 'SELECT content AS b FROM public.documents WHERE id = 1001'));
    // the big one was staged in blocks and carries the whole document's MD5
    const big = c.getBlockBlobClient('patients/2/1002-scan.pdf');
    const props = await big.getProperties();
    const bigSource = await sourceBytes(s, 'SELECT content AS b FROM public.documents WHERE id = 1002');
    expect(props.contentLength).toBe(9_600_000);
    expect(Buffer.from(props.contentMD5!).toString('base64')).toBe(createHash('md5').update(bigSource).digest('base64'));
    expect(props.contentType).toBe('application/pdf');
    expect(props.metadata).toEqual({ kind: 'scan', file: 'scan.pdf' });
    expect((await big.getTags()).tags).toEqual({ kind: 'scan' });
    const blocks = await big.getBlockList('committed');
    expect(blocks.committedBlocks?.length).toBe(3);
    // compared by hash: a deep equality of 9.6 MB buffers takes vitest a minute
    expect(sha256(await big.downloadToBuffer())).toBe(sha256(bigSource));
    // large objects
    const scan = c.getBlockBlobClient('scans/3.dcm');
    expect(await scan.downloadToBuffer()).toEqual(await sourceBytes(s, 'SELECT lo_get(image) AS b FROM public.scans WHERE id = 3'));
    expect((await scan.getProperties()).accessTier).toBe('Cool');
    expect((await scan.getTags()).tags).toEqual({ patient: '3', system: 'RIS PACS/2' });
    // the target rows carry the names, not the bytes
    const cols = await sql<{ column_name: string }>(
      'target',
      s.dbs.target,
      `SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'documents' ORDER BY ordinal_position`,
    );
    expect(cols.map((x) => x.column_name)).toEqual(['id', 'patient_id', 'filename', 'mime_type', 'kind', 'blob_path']);
    const names = await sql<{ id: string; blob_path: string }>(
      'target',
      s.dbs.target,
      `SELECT id::text, blob_path FROM public.documents WHERE id IN (5, 1002) ORDER BY documents.id`,
    );
    expect(names).toEqual([
      { id: '5', blob_path: 'patients/6/5-letter-5.pdf' },
      { id: '1002', blob_path: 'patients/2/1002-scan.pdf' },
    ]);
    const count = { blobs: 0 };
    for await (const _b of c.listBlobsFlat()) count.blobs += 1;
    expect(count.blobs).toBe(102 + 6);
    const { source, target } = await expectSameRows(s, 'public.patients', 'id');
    expect(target).toBe(source);
    const recorded = await sql<{ n: string; verified: string }>(
      'target',
      s.dbs.target,
      `SELECT count(*) AS n, count(*) FILTER (WHERE status = 'verified') AS verified FROM cloudshift.documents`,
    );
    expect(recorded[0]).toEqual({ n: '108', verified: '108' });
    const batches = await sql<{ status: string }>('target', s.dbs.target, `SELECT DISTINCT status FROM cloudshift.batches`);
    expect(batches).toEqual([{ status: 'verified' }]);
    // status tells a documents table from a table.
    const status = JSON.parse((await cli(['status', s.plan(PLAN), '--json'], s.env)).stdout) as {
      tables: Array<{ table: string; kind: string }>;
    };
    expect(status.tables.map((t) => `${t.table} ${t.kind}`).sort()).toEqual([
      'public.documents documents',
      'public.patients table',
      'public.scans documents',
    ]);
  });

  it('the sweep finds blobs changed behind its back (by size and MD5, and by sampled bytes) and copies their batches again', async () => {
    const again = await hospitalScenario('docssweep');
    try {
      await addDocuments(again);
      const c = container(again);
      const resized = 'patients/6/5-letter-5.pdf';
      const forged = 'patients/1/1001-all%20bytes%2F%C3%A9%3F.bin';
      const done = new Set<string>();
      const events: Array<{ type: string; reason?: string }> = [];
      const result = await runMigration(await loadPlan(again.plan(PLAN)), {
        env: again.env,
        sampleEvery: 1,
        onEvent: (e) => events.push(e as { type: string; reason?: string }),
        hooks: {
          // once committed, one blob is replaced by other bytes, another by as many other bytes
          // that keep the original Content-MD5 (only reading the bytes back can tell)
          afterBatchCommit: async () => {
            for (const name of [resized, forged]) {
              const blob = c.getBlockBlobClient(name);
              if (done.has(name) || !(await blob.exists())) continue;
              done.add(name);
              const p = await blob.getProperties();
              if (name === resized) {
                await blob.upload(Buffer.from('not the letter'), 14, { blobHTTPHeaders: { blobContentType: p.contentType } });
                continue;
              }
              // a committed block list: the service stores the Content-MD5 it is given unchecked;
              // every property kept, so that a retry can tell only by the sweep's verdict
              const id = Buffer.from('forged').toString('base64');
              const { tags } = await blob.getTags();
              await blob.stageBlock(id, Buffer.alloc(p.contentLength!, 7), p.contentLength!);
              await blob.commitBlockList([id], {
                blobHTTPHeaders: { blobContentType: p.contentType, blobContentMD5: p.contentMD5 },
                metadata: p.metadata,
                tags,
              });
            }
          },
        },
      });
      expect(done.size).toBe(2);
      expect(result.mismatches).toBe(0);
      const retried = events.filter((e) => e.type === 'batch:retry').map((e) => e.reason);
      expect(retried).toEqual(
        expect.arrayContaining([`document ${resized}: different size or MD5`, `document ${forged}: different bytes`]),
      );
      expect(await c.getBlockBlobClient(forged).downloadToBuffer()).toEqual(
        await sourceBytes(again, 'SELECT content AS b FROM public.documents WHERE id = 1001'),
      );
      expect(await c.getBlockBlobClient(resized).downloadToBuffer()).toEqual(
        await sourceBytes(again, 'SELECT content AS b FROM public.documents WHERE id = 5'),
      );
      const batches = await sql<{ status: string }>('target', again.dbs.target, `SELECT DISTINCT status FROM cloudshift.batches`);
      expect(batches).toEqual([{ status: 'verified' }]);
    } finally {
      await again.drop();
    }
  });

  it('runs with a SAS for the container alone (which cannot create containers), and never prints or stores it', async () => {
    const again = await hospitalScenario('docssas');
    try {
      const { connectionString, blobEndpoint } = harness().azurite;
      const key = /AccountKey=([^;]+)/.exec(connectionString)![1]!;
      const sas = generateBlobSASQueryParameters(
        {
          containerName: again.container,
          permissions: ContainerSASPermissions.parse('racwdl'),
          expiresOn: new Date(Date.now() + 3600_000),
        },
        new StorageSharedKeyCredential('devstoreaccount1', key),
      ).toString();
      const file = again.plan(
        PLAN.replace(
          'blob: { connectionString: "${env:AZURE_STORAGE_CONNECTION_STRING}", container: "{{container}}" }',
          `blob: { account: devstoreaccount1, endpoint: "${blobEndpoint}", sas: "\${env:AZURE_STORAGE_SAS}", container: "{{container}}" }`,
        ).replace(/ {2}- table: public.scans[\s\S]*?blob_name \}\n/, ''),
      );
      // The SAS may use the container, not make one: until someone does, the run is refused.
      const early = await cli(['run', file], { ...again.env, AZURE_STORAGE_SAS: sas });
      expect(early.code).toBe(3);
      const refusal = `container ${again.container} does not exist, and the credential may not create it (HTTP 403`;
      expect(early.stderr).toContain(`error: ${refusal}`);
      // The dry run says so too.
      const before = await cli(['dry-run', file, '--format', 'json'], { ...again.env, AZURE_STORAGE_SAS: sas });
      const blobCheck = (out: string) =>
        (JSON.parse(out) as { checks: Array<{ id: string; status: string; message: string }> }).checks.find(
          (c) => c.id === 'blob.container',
        );
      expect(blobCheck(before.stdout)).toMatchObject({ status: 'fail', message: expect.stringContaining(refusal) });
      await container(again).createIfNotExists();
      const run = await cli(['run', file, '--json'], { ...again.env, AZURE_STORAGE_SAS: sas });
      expect(run.stderr).toBe('');
      expect(run.code, run.stdout.slice(-1500)).toBe(0);
      expect(await rowsWithBlobs(again)).toBe(100);
      // The longest run of letters and digits in the signature: found however the SAS is encoded.
      const signature = new URLSearchParams(sas)
        .get('sig')!
        .split(/[^A-Za-z0-9]/)
        .reduce((a, b) => (b.length > a.length ? b : a));
      expect(signature.length).toBeGreaterThanOrEqual(8);
      expect(run.stdout).not.toContain(signature);
      const dry = await cli(['dry-run', file, '--format', 'json'], { ...again.env, AZURE_STORAGE_SAS: sas });
      expect(blobCheck(dry.stdout)).toMatchObject({
        status: 'pass',
        message: `container ${again.container} exists at ${harness().azurite.blobEndpoint}/${again.container}`,
      });
      expect(dry.stdout + dry.stderr).not.toContain(signature);
      const tables = ['runs', 'events', 'batches', 'documents', 'workers'];
      const stored = await sql<{ n: string }>(
        'target',
        again.dbs.target,
        `SELECT ${tables.map((t) => `(SELECT count(*) FROM cloudshift.${t} x WHERE x::text LIKE '%' || $1 || '%')`).join(' + ')} AS n`,
        [signature],
      );
      expect(stored[0]!.n).toBe('0');
    } finally {
      await again.drop();
    }
  });

  it("a target row whose kept name is not its blob's (a trigger left on the target rewrites it) fails the batch's checksum", async () => {
    const again = await hospitalScenario('docskept');
    try {
      const result = await onFirstDocumentsBatch(again, () =>
        rewritingTrigger(again.dbs.target, 'public.documents', `NEW.blob_path := NEW.blob_path || '.old'`),
      );
      expect(result.mismatches).toBeGreaterThan(0);
      const bad = await sql<{ error: string }>(
        'target',
        again.dbs.target,
        `SELECT error FROM cloudshift.batches WHERE status = 'mismatch'`,
      );
      expect(bad.length).toBe(result.mismatches);
      expect(bad[0]!.error).toMatch(/^checksum mismatch: /);
    } finally {
      await again.drop();
    }
  });

  it("reads documents in the run's snapshot: one changed on the source during the copy goes up as it was when the copy began", async () => {
    const again = await hospitalScenario('docssnap');
    try {
      const original = await sourceBytes(again, 'SELECT content AS b FROM public.documents WHERE id = 90');
      // As the first batch of documents starts, the application replaces one of a later batch.
      const result = await onFirstDocumentsBatch(again, () =>
        sql('source', again.dbs.source, `UPDATE public.documents SET content = '\\x00'::bytea WHERE id = 90`),
      );
      expect(result.mismatches).toBe(0);
      const [row] = await sql<{ blob_path: string }>('target', again.dbs.target, 'SELECT blob_path FROM public.documents WHERE id = 90');
      expect(await container(again).getBlockBlobClient(row!.blob_path).downloadToBuffer()).toEqual(original);
      expect(await sourceBytes(again, 'SELECT content AS b FROM public.documents WHERE id = 90')).toEqual(Buffer.from([0]));
    } finally {
      await again.drop();
    }
  });

  it('documents in the Archive tier (unreadable until rehydrated) are checked by their stored size and MD5: the run and verify pass', async () => {
    const again = await hospitalScenario('docsarchive');
    try {
      await addDocuments(again);
      const loaded = await loadPlan(again.plan(PLAN.replace('tier: Cool', 'tier: Archive')));
      const result = await runMigration(loaded, { env: again.env, sampleEvery: 1 });
      expect(result.mismatches).toBe(0);
      const scan = container(again).getBlockBlobClient('scans/3.dcm');
      expect((await scan.getProperties()).accessTier).toBe('Archive');
      await expect(scan.downloadToBuffer()).rejects.toMatchObject({ code: 'BlobArchived' });
      const verified = await verifyPlan(loaded, { env: again.env, documentSampleEvery: 1 });
      expect(verified.findings).toEqual([]);
      expect(verified.ok).toBe(true);
    } finally {
      await again.drop();
    }
  });

  it('a sampled document whose row was deleted since its upload (the rerun reads a newer snapshot) sends its batch back, and its blob is reported', async () => {
    const again = await hospitalScenario('docsgone');
    try {
      await addDocuments(again);
      const plan = await loadPlan(again.plan(PLAN.replace('copy: { jobs: 2 }', 'copy: { jobs: 1 }')));
      const crash = new Error('simulated crash');
      // The first batch is copied and its documents recorded; the run stops before the sweep.
      const first = await runMigration(plan, {
        env: again.env,
        transientAttempts: 1,
        hooks: {
          afterBatchCommit: (b) => {
            if (b.table === 'public.documents' && b.seq === 2) throw crash;
          },
        },
      }).catch((e: unknown) => e);
      expect(first).toBe(crash);
      const [gone] = await sql<{ id: string; blob_name: string }>(
        'target',
        again.dbs.target,
        `SELECT d.key->>0 AS id, d.blob_name FROM cloudshift.documents d JOIN cloudshift.batches b ON b.id = d.batch_id
          WHERE d.relation = 'public.documents' AND b.seq = 1 ORDER BY d.blob_name LIMIT 1`,
      );
      expect(gone).toBeDefined();
      await sql('source', again.dbs.source, `DELETE FROM public.documents WHERE id = ${Number(gone!.id)}`);
      const events: Array<{ type: string; reason?: string; message?: string }> = [];
      const result = await runMigration(plan, {
        env: again.env,
        sampleEvery: 1,
        onEvent: (e) => events.push(e as (typeof events)[number]),
      });
      expect(result.mismatches).toBe(0);
      expect(events.filter((e) => e.type === 'batch:retry').map((e) => e.reason)).toContain(`document ${gone!.blob_name}: different bytes`);
      expect(events.filter((e) => e.type === 'warning').map((e) => e.message)).toEqual([
        expect.stringContaining(`1 blob in container "${again.container}" is no document of this run (${gone!.blob_name})`),
      ]);
      const left = await sql('target', again.dbs.target, `SELECT 1 FROM public.documents WHERE id = ${Number(gone!.id)}`);
      expect(left).toEqual([]);
    } finally {
      await again.drop();
    }
  });

  it('an unrecorded blob is told as extra only by a sweep with no batch in flight elsewhere (another worker records its uploads after them)', async () => {
    const again = await hospitalScenario('docsextra');
    try {
      await addDocuments(again);
      const c = container(again);
      const extra = 'patients/1/99999-not-recorded.pdf';
      let staged = false;
      const warnings: string[] = [];
      await runMigration(await loadPlan(again.plan(PLAN.replace('copy: { jobs: 2 }', 'copy: { jobs: 1 }'))), {
        env: again.env,
        onEvent: (e) => {
          if (e.type === 'warning') warnings.push(e.message);
        },
        hooks: {
          // As another worker would leave things: a batch it holds, a blob it uploaded and has not recorded.
          afterBatchCommit: async (b) => {
            if (staged || b.table !== 'public.documents') return;
            staged = true;
            await c.getBlockBlobClient(extra).upload(Buffer.from('x'), 1);
            await sql(
              'target',
              again.dbs.target,
              `UPDATE cloudshift.batches SET status = 'claimed', claimed_by = 'ghost', attempts = attempts + 1
                WHERE id = (SELECT id FROM cloudshift.batches WHERE relation = 'public.documents' AND status = 'pending' ORDER BY seq DESC LIMIT 1)`,
            );
          },
        },
      });
      expect(staged).toBe(true);
      // The first pass's sweep ran with the ghost's batch claimed; the next pass copied it, and its sweep told.
      expect(warnings.filter((w) => w.includes('no document of this run'))).toEqual([
        `1 blob in container "${again.container}" is no document of this run (${extra}); \`cloudshift verify --repair\` deletes them`,
      ]);
      const batches = await sql<{ status: string }>('target', again.dbs.target, `SELECT DISTINCT status FROM cloudshift.batches`);
      expect(batches).toEqual([{ status: 'verified' }]);
    } finally {
      await again.drop();
    }
  });

  it('a batch left unverified by its worker, found with a blob missing by the last pass, is copied again before the indexes', async () => {
    const again = await hospitalScenario('docsleft');
    try {
      await addDocuments(again);
      const c = container(again);
      let lost: string | null = null;
      let missing: string | null = null;
      const events: Array<{ type: string; reason?: string }> = [];
      const result = await runMigration(await loadPlan(again.plan(PLAN)), {
        env: again.env,
        onEvent: (e) => events.push(e as { type: string; reason?: string }),
        hooks: {
          // Its worker loses the batch between the commit and the verification: it stays copied.
          afterBatchCommit: (b) => {
            if (lost !== null || b.table !== 'public.documents') return;
            lost = b.batchId;
            throw new ClaimLostError(`batch ${b.batchId} lost in the test`);
          },
          // As if its documents were recorded after the pass's sweep began, and one blob then went.
          afterCopyPass: async () => {
            if (lost === null || missing !== null) return;
            const [doc] = await sql<{ blob_name: string }>(
              'target',
              again.dbs.target,
              `UPDATE cloudshift.documents SET status = 'uploaded' WHERE batch_id = '${lost}' RETURNING blob_name`,
            );
            missing = doc!.blob_name;
            await c.getBlockBlobClient(missing).delete();
          },
        },
      });
      expect(missing).not.toBeNull();
      expect(result.mismatches).toBe(0);
      expect(events.filter((e) => e.type === 'batch:retry').map((e) => e.reason)).toContain(`document ${missing!}: missing`);
      expect(await c.getBlockBlobClient(missing!).exists()).toBe(true);
      const batches = await sql<{ status: string }>('target', again.dbs.target, `SELECT DISTINCT status FROM cloudshift.batches`);
      expect(batches).toEqual([{ status: 'verified' }]);
      const docs = await sql<{ status: string }>('target', again.dbs.target, `SELECT DISTINCT status FROM cloudshift.documents`);
      expect(docs).toEqual([{ status: 'verified' }]);
    } finally {
      await again.drop();
    }
  });
});

describe('cloudshift verify on documents', () => {
  let s: Scenario;
  let file: string;
  beforeAll(async () => {
    s = await hospitalScenario('docsverify');
    await addDocuments(s);
    file = s.plan(PLAN);
    expect((await cli(['run', file], s.env)).code).toBe(0);
  });
  afterAll(async () => s.drop());

  it('finds a changed, a deleted and an extra blob and a wrong kept name, then repairs them', async () => {
    const c = container(s);
    await c.getBlockBlobClient('patients/6/5-letter-5.pdf').upload('tampered', 8);
    await c.deleteBlob('scans/3.dcm');
    await c.getBlockBlobClient('patients/999/999-stray.pdf').upload('stray', 5);
    // Not a name the template gives: another application's, never reported or deleted.
    await c.getBlockBlobClient('patients/README.txt').upload('not ours', 8);
    await sql('target', s.dbs.target, `UPDATE public.documents SET blob_path = 'patients/wrong' WHERE id = 10`);
    const r = await cli(['verify', file, '--json'], s.env);
    expect(r.code).toBe(1);
    const result = JSON.parse(r.stdout) as {
      findings: Array<{ table: string; kind: string; key: Record<string, string>; blob?: string; repaired: boolean }>;
    };
    expect(result.findings.map((f) => [f.table, f.kind, f.key, f.blob])).toEqual(
      expect.arrayContaining([
        ['public.documents', 'blob different', { id: '5' }, 'patients/6/5-letter-5.pdf'],
        ['public.documents', 'kept name different', { id: '10' }, 'patients/11/10-letter-10.pdf'],
        ['public.documents', 'blob extra', {}, 'patients/999/999-stray.pdf'],
        ['public.scans', 'blob missing', { id: '3' }, 'scans/3.dcm'],
      ]),
    );
    expect(result.findings).toHaveLength(4);
    expect(await c.getBlockBlobClient('patients/999/999-stray.pdf').exists()).toBe(true);
    // One entry's table alone: its own extra blob too, and nothing of the other entry's.
    const one = JSON.parse((await cli(['verify', file, '--table', 'public.documents', '--json'], s.env)).stdout) as typeof result;
    expect(one.findings.map((f) => [f.kind, f.blob])).toEqual([
      ['blob extra', 'patients/999/999-stray.pdf'],
      ['blob different', 'patients/6/5-letter-5.pdf'],
      ['kept name different', 'patients/11/10-letter-10.pdf'],
    ]);

    const repaired = await cli(['verify', file, '--repair'], s.env);
    expect(repaired.code).toBe(0);
    expect(repaired.stdout).toContain('  blob missing: id=3, blob scans/3.dcm (repaired)');
    expect(await c.getBlockBlobClient('patients/999/999-stray.pdf').exists()).toBe(false);
    expect(await c.getBlockBlobClient('patients/README.txt').exists()).toBe(true);
    const scan = await c.getBlockBlobClient('scans/3.dcm').downloadToBuffer();
    expect(sha256(scan)).toBe(sha256(await sourceBytes(s, 'SELECT lo_get(image) AS b FROM public.scans WHERE id = 3')));
    const again = await cli(['verify', file, '--json'], s.env);
    expect(again.code).toBe(0);
    expect((JSON.parse(again.stdout) as { findings: unknown[] }).findings).toEqual([]);
  });

  it('a row whose document the source no longer has must name no blob: its kept name is cleared, its blob removed', async () => {
    const c = container(s);
    const [scan] = await sql<{ oid: string }>('source', s.dbs.source, `SELECT image::text AS oid FROM public.scans WHERE id = 2`);
    await sql('source', s.dbs.source, `UPDATE public.scans SET image = NULL WHERE id = 2`);
    try {
      const r = await cli(['verify', file, '--json', '--repair'], s.env);
      expect(r.code).toBe(0);
      const found = (JSON.parse(r.stdout) as { findings: Array<{ kind: string; key: Record<string, string>; blob: string }> }).findings;
      expect(found.map((f) => [f.kind, f.key, f.blob])).toEqual(
        expect.arrayContaining([
          ['kept name without document', { id: '2' }, 'scans/2.dcm'],
          ['blob extra', {}, 'scans/2.dcm'],
        ]),
      );
      const [row] = await sql<{ name: string | null }>('target', s.dbs.target, `SELECT blob_name AS name FROM public.scans WHERE id = 2`);
      expect(row!.name).toBeNull();
      expect(await c.getBlockBlobClient('scans/2.dcm').exists()).toBe(false);
    } finally {
      // As it was, for the next test: the document back on the source, its blob and name by repair.
      await sql('source', s.dbs.source, `UPDATE public.scans SET image = ${Number(scan!.oid)} WHERE id = 2`);
      expect((await cli(['verify', file, '--repair'], s.env)).code).toBe(0);
    }
  });

  it('reads sampled bytes back: a blob of other bytes under the right size and Content-MD5 is found and repaired', async () => {
    const c = container(s);
    const name = 'patients/8/7-letter-7.pdf';
    const blob = c.getBlockBlobClient(name);
    const p = await blob.getProperties();
    // A committed block list: the service stores the Content-MD5 it is given, unchecked.
    const id = Buffer.from('forged').toString('base64');
    await blob.stageBlock(id, Buffer.alloc(p.contentLength!, 7), p.contentLength!);
    await blob.commitBlockList([id], { blobHTTPHeaders: { blobContentType: p.contentType, blobContentMD5: p.contentMD5 } });
    const loaded = await loadPlan(file);
    const found = await verifyPlan(loaded, { env: s.env, documentSampleEvery: 1 });
    expect(found.findings.map((f) => [f.kind, f.blob])).toEqual([['blob different', name]]);
    const repaired = await verifyPlan(loaded, { env: s.env, documentSampleEvery: 1, repair: true });
    expect(repaired.findings.map((f) => [f.kind, f.repaired])).toEqual([['blob different', true]]);
    expect(await blob.downloadToBuffer()).toEqual(await sourceBytes(s, 'SELECT content AS b FROM public.documents WHERE id = 7'));
    expect((await verifyPlan(loaded, { env: s.env, documentSampleEvery: 1 })).ok).toBe(true);
  });

  it('reads the rows two at a time and names no more than the cap, the rest left unmatched', async () => {
    const c = container(s);
    await c.deleteBlob('patients/4/3-letter-3.pdf');
    await c.getBlockBlobClient('patients/9/8-letter-8.pdf').upload('tampered', 8);
    await c.getBlockBlobClient('patients/999/999-stray.pdf').upload('stray', 5);
    const loaded = await loadPlan(file);
    const verify = (o: { maxFindings?: number; repair?: boolean }) => verifyPlan(loaded, { env: s.env, documentChunkRows: 2, ...o });
    const found = (r: Awaited<ReturnType<typeof verify>>) => r.findings.map((f) => [f.kind, f.blob]);
    const all = [
      ['blob missing', 'patients/4/3-letter-3.pdf'],
      ['blob different', 'patients/9/8-letter-8.pdf'],
      ['blob extra', 'patients/999/999-stray.pdf'],
    ];
    // Findings are listed by key: the extra blob (no key) first; it is found last, after the rows.
    const whole = await verify({});
    expect(found(whole)).toEqual([all[2], all[0], all[1]]);
    const capped = await verify({ maxFindings: 2 });
    expect(found(capped)).toEqual(all.slice(0, 2));
    expect(capped.tables.find((t) => t.table === 'public.documents')?.matched).toBe(false);
    expect(capped.ok).toBe(false);
    // With --repair each run mends what it names: the third finding waits for the next run.
    expect(found(await verify({ maxFindings: 2, repair: true }))).toEqual(all.slice(0, 2));
    expect(found(await verify({ repair: true }))).toEqual(all.slice(2));
    const after = await verify({});
    expect(after.findings).toEqual([]);
    expect(after.ok).toBe(true);
  });
});

describe('documents: bad rows and resume', () => {
  /** A scenario whose source has public.letters (id, note, body), filled by `fill`, and a plan moving its bodies to blobs. */
  async function letters(prefix: string, fill: string, blob = 'letters/{id}') {
    const s = await hospitalScenario(prefix, { load: false });
    await sql('source', s.dbs.source, `CREATE TABLE public.letters (id int PRIMARY KEY, note text NOT NULL, body bytea NOT NULL); ${fill}`);
    const plan = s.plan(`${planHead(prefix)}tables:
  - name: public.letters
    batch: { rows: 50000 }
documents:
  - table: public.letters
    content: body
    blob: "${blob}"
    contentType: application/octet-stream
    keep: { column: blob_name }
`);
    const run = async () => {
      const r = await cli(['run', plan], s.env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      await verified();
    };
    const verified = async () => {
      const batches = await sql('target', s.dbs.target, `SELECT status, count(*) AS n FROM cloudshift.batches GROUP BY status`);
      expect(batches).toEqual([{ status: 'verified', n: '1' }]);
    };
    return { s, plan, run, verified };
  }

  it('after kill -9, a retried batch looks up the blobs of its unrecorded documents only until it is past the last one uploaded', async () => {
    const { s, plan, verified } = await letters(
      'docsheads',
      `INSERT INTO public.letters SELECT g, 'letter ' || g, decode(repeat(md5(g::text), 64), 'hex') FROM generate_series(1, 400) g;`,
    );
    const proxy = await startFaultProxy(harness().azurite.connectionString);
    try {
      const killed = await spawnCli(['run', plan], { ...s.env, CLOUDSHIFT_FAULT: 'afterDocumentUpload:5' });
      expect(killed.signal, killed.out).toBe('SIGKILL');
      const c = container(s);
      const before = new Map<string, string>();
      for await (const b of c.listBlobsFlat()) before.set(b.name, (await c.getBlockBlobClient(b.name).getProperties()).etag!);
      expect(before.size).toBeGreaterThanOrEqual(5);
      let heads = 0;
      proxy.failWhen = (req) => {
        if (req.method === 'HEAD') heads += 1;
        return false;
      };
      const rerun = await cli(['run', plan], { ...s.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString });
      expect(rerun.code, rerun.stderr).toBe(0);
      await verified();
      for (const [name, etag] of before) expect((await c.getBlockBlobClient(name).getProperties()).etag, name).toBe(etag);
      // Those found, those the kill cut short (8 upload slots and one waiting), then one group and
      // twice the slots of rows without a blob: not all 400.
      expect(heads).toBeLessThanOrEqual(before.size + 9 + 32 + 2 * 8);
    } finally {
      await proxy.close();
      await s.drop();
    }
  });

  it("a content column of a domain over oid (as contrib's lo type) holds large objects, copied like oid ones", async () => {
    const s = await hospitalScenario('docsdomain', { load: false });
    try {
      await sql(
        'source',
        s.dbs.source,
        `CREATE DOMAIN public.lo AS oid;
         CREATE TABLE public.films (id int PRIMARY KEY, reel public.lo);
         INSERT INTO public.films SELECT g, lo_from_bytea(0, decode(repeat(md5(g::text), 50 * g), 'hex')) FROM generate_series(1, 3) g;`,
      );
      const plan = s.plan(`${planHead('docsdomain')}documents:
  - table: public.films
    content: reel
    blob: "films/{id}"
    contentType: video/mpeg
    keep: { column: blob_name }
`);
      const dry = await cli(['dry-run', plan, '--format', 'json'], s.env);
      const checks = (JSON.parse(dry.stdout) as { checks: Array<{ id: string; status: string; message: string }> }).checks;
      expect(checks.find((c) => c.id === 'documents.content')).toMatchObject({
        status: 'pass',
        message: 'content column is a large object (oid)',
      });
      const run = await cli(['run', plan], s.env);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      for (let id = 1; id <= 3; id += 1) {
        expect(await container(s).getBlockBlobClient(`films/${id}`).downloadToBuffer(), `film ${id}`).toEqual(
          await sourceBytes(s, `SELECT lo_get(reel) AS b FROM public.films WHERE id = ${id}`),
        );
      }
    } finally {
      await s.drop();
    }
  });

  it('a batch of 900 kB of rows in multi-byte characters arrives unchanged and verifies (more than a stream buffer, split anywhere)', async () => {
    const { s, run } = await letters(
      'docswide',
      `INSERT INTO public.letters SELECT g, repeat('患者', 75) || g, decode(md5(g::text), 'hex') FROM generate_series(1, 2000) g;`,
    );
    try {
      await run();
      // the stream's socket reads end inside characters (3 bytes each here): none may be split
      const notes = `SELECT count(*) AS n, md5(string_agg(note, '' ORDER BY id)) AS digest FROM public.letters`;
      const [source] = await sql('source', s.dbs.source, notes);
      expect(source).toEqual({ n: '2000', digest: expect.any(String) });
      expect((await sql('target', s.dbs.target, notes))[0]).toEqual(source);
    } finally {
      await s.drop();
    }
  });

  it('documents of exactly three blocks and one block end where they should, and the next document is whole', async () => {
    const block = 4 * 1024 * 1024;
    // md5() gives 16 bytes: a document of n digests is 16n bytes
    const { s, plan, verified } = await letters(
      'docsblocks',
      `INSERT INTO public.letters
         SELECT 1, 'three blocks', decode(string_agg(md5(g::text), ''), 'hex') FROM generate_series(1, ${(3 * block) / 16}) g
         UNION ALL SELECT 2, 'after', '\\x0102030405'::bytea
         UNION ALL SELECT 3, 'one block', decode(string_agg(md5((-g)::text), ''), 'hex') FROM generate_series(1, ${block / 16}) g
         UNION ALL SELECT 4, 'last', '\\x06'::bytea;`,
    );
    const proxy = await startFaultProxy(harness().azurite.connectionString);
    try {
      // The first two blocks of the three-block document are refused once: they are still in
      // flight, backing off, when its third and last block is read and the rows move on, to a
      // next document that waits for the one upload slot.
      const refused = new Set<string>();
      proxy.failWhen = (req) => {
        const block = /letters\/1\?.*comp=block&blockid=([^&]+)/.exec(req.url ?? '')?.[1];
        if (!block || refused.has(block) || refused.size === 2) return false;
        refused.add(block);
        return true;
      };
      const result = await runMigration(await loadPlan(plan), {
        env: { ...s.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString },
        retryBaseDelayMs: 300,
        blobConcurrency: 1,
      });
      expect(result.mismatches).toBe(0);
      expect(proxy.failed).toBe(2);
      await verified();
      const c = container(s);
      const source = await sql<{ id: number; size: number; digest: string }>(
        'source',
        s.dbs.source,
        `SELECT id, octet_length(body) AS size, encode(sha256(body), 'hex') AS digest FROM public.letters ORDER BY id`,
      );
      expect(source.map((d) => d.size)).toEqual([3 * block, 5, block, 1]);
      for (const d of source) {
        const blob = await c.getBlockBlobClient(`letters/${d.id}`).downloadToBuffer();
        expect({ id: d.id, size: blob.length, digest: sha256(blob) }).toEqual(d);
      }
    } finally {
      await proxy.close();
      await s.drop();
    }
  });

  it('a bad row early in a big batch stops the run with its error while the rest of the batch is still streaming (no wait on the abandoned COPY)', async () => {
    const { s, plan } = await letters(
      'docsstop',
      `ALTER TABLE public.letters ALTER COLUMN note DROP NOT NULL;
       INSERT INTO public.letters SELECT g, CASE WHEN g = 50 THEN NULL ELSE repeat('clinic letter ', 30) END, decode(md5(g::text), 'hex')
         FROM generate_series(1, 30000) g;`,
      'letters/{note}/{id}',
    );
    try {
      const r = await cli(['run', plan], s.env);
      expect(r.stderr).toContain(
        'error: public.letters id=50: column "note" is NULL, but the blob name template needs it\nhint: give the row a value, or change the blob name template\n',
      );
      expect(r.code).toBe(1);
    } finally {
      await s.drop();
    }
  });

  it('large objects are read on fresh sessions after the source drops the ones they were read on', async () => {
    const s = await hospitalScenario('docslodrop');
    try {
      await addDocuments(s);
      const plan = PLAN.replace(/ {2}- table: public.documents\n[\s\S]*?blob_path \}\n/, '')
        .replace('copy: { jobs: 2 }', 'copy: { jobs: 1 }')
        .replace('  - name: public.documents\n    batch: { rows: 40 }\n', '  - name: public.scans\n    batch: { rows: 2 }\n');
      let dropped = 0;
      const result = await runMigration(await loadPlan(s.plan(plan)), {
        env: s.env,
        retryBaseDelayMs: 5,
        hooks: {
          afterBatchCommit: async (b) => {
            if (b.table !== 'public.scans' || dropped > 0) return;
            const killed = await sql<{ pid: number }>(
              'source',
              'postgres',
              `SELECT pg_terminate_backend(pid) AS pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'cloudshift documents'`,
              [s.dbs.source],
            );
            dropped = killed.length;
          },
        },
      });
      expect(dropped).toBeGreaterThan(0);
      expect(result.mismatches).toBe(0);
      const c = container(s);
      for (const id of [1, 6]) {
        expect(await c.getBlockBlobClient(`scans/${id}.dcm`).downloadToBuffer()).toEqual(
          await sourceBytes(s, `SELECT lo_get(image) AS b FROM public.scans WHERE id = ${id}`),
        );
      }
    } finally {
      await s.drop();
    }
  });

  it('a tag value Azure would refuse stops the run at its row, naming the tag; a content type is sent percent-encoded, never refused', async () => {
    const s = await hospitalScenario('docsheaders');
    try {
      await sql(
        'source',
        s.dbs.source,
        `UPDATE public.documents SET mime_type = E'text/plain\\r\\nX-Injected: 1 é' WHERE id = 12;
         UPDATE public.documents SET kind = 'x-ray (chest)' WHERE id = 77`,
      );
      const file = s.plan(DOCUMENTS_ONLY_PLAN);
      const r = await cli(['run', file], s.env);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(
        'error: public.documents id=77: tag "kind" would be "x-ray (chest)", which Azure refuses in a tag (up to 256 letters, digits, spaces and + - . / : = _)',
      );
      expect(r.stderr).not.toContain('internal error');
      await sql('source', s.dbs.source, `UPDATE public.documents SET kind = 'x-ray' WHERE id = 77`);
      expect((await cli(['run', file], s.env)).code).toBe(0);
      const [row] = await sql<{ blob_path: string }>('target', s.dbs.target, `SELECT blob_path FROM public.documents WHERE id = 12`);
      const p = await container(s).getBlobClient(row!.blob_path).getProperties();
      expect(p.contentType).toBe('text/plain%0D%0AX-Injected: 1 %C3%A9');
    } finally {
      await s.drop();
    }
  });

  it('a NULL placeholder stops the run naming table, key and column; documents already done are kept, and status says why it stopped', async () => {
    const s = await hospitalScenario('docsnull');
    try {
      await sql(
        'source',
        s.dbs.source,
        `ALTER TABLE public.documents ALTER COLUMN filename DROP NOT NULL; UPDATE public.documents SET filename = NULL WHERE id = 77`,
      );
      const file = s.plan(DOCUMENTS_ONLY_PLAN);
      const r = await cli(['run', file], s.env);
      expect(r.code).toBe(1);
      const why = 'public.documents id=77: column "filename" is NULL, but the blob name template needs it';
      expect(r.stderr).toContain(`error: ${why}`);
      const done = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM public.documents`);
      expect(Number(done[0]!.n)).toBeGreaterThanOrEqual(40);
      const status = async () => JSON.parse((await cli(['status', file, '--json'], s.env)).stdout) as Overview;
      const stopped = await status();
      expect(stopped.run!.lastFailure).toMatchObject({ code: 'CS_DOCUMENT', message: expect.stringContaining(why) as string });
      expect(stopped.next).toMatch(
        /^the last process \(.+\) stopped at .+ with CS_DOCUMENT: public\.documents id=77: .+ resume it with `cloudshift run /,
      );
      // Mended and resumed: the failure is history.
      await sql('source', s.dbs.source, `UPDATE public.documents SET filename = 'mended.pdf' WHERE id = 77`);
      expect((await cli(['run', file], s.env)).code).toBe(0);
      expect((await status()).run!.lastFailure).toBeNull();
    } finally {
      await s.drop();
    }
  });

  it('a missing large object stops the run naming table, key and column; the documents done are kept, not uploaded again', async () => {
    const s = await hospitalScenario('docslo');
    try {
      await addDocuments(s);
      await sql('source', s.dbs.source, `SELECT lo_unlink(image) FROM public.scans WHERE id = 4`);
      const file = s.plan(PLAN);
      const r = await cli(['run', file], s.env);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/error: public\.scans id=4: column "image" names large object \d+, which does not exist/);
      const done = await sql<{ blob_name: string }>('target', s.dbs.target, `SELECT blob_name FROM cloudshift.documents`);
      expect(done.length).toBeGreaterThan(0);
      const c = container(s);
      const etags = new Map<string, string>();
      for (const d of done) etags.set(d.blob_name, (await c.getBlockBlobClient(d.blob_name).getProperties()).etag!);
      // Mended: the scan's image column cleared.
      await sql('source', s.dbs.source, `UPDATE public.scans SET image = NULL WHERE id = 4`);
      const rerun = await cli(['run', file], s.env);
      expect(rerun.code).toBe(0);
      for (const [name, etag] of etags) expect((await c.getBlockBlobClient(name).getProperties()).etag, name).toBe(etag);
    } finally {
      await s.drop();
    }
  });

  it('after a crash before a batch commits, the rerun skips documents already uploaded, uploads those changed since (by size or bytes) and finishes', async () => {
    const s = await hospitalScenario('docsresume');
    try {
      await addDocuments(s);
      const file = s.plan(PLAN.replace('copy: { jobs: 2 }', 'copy: { jobs: 1 }'));
      const loaded = await loadPlan(file);
      const crash = new Error('simulated crash');
      const first = await runMigration(loaded, {
        env: s.env,
        hooks: {
          beforeBatchCommit: (b) => {
            if (b.table === 'public.documents') throw crash;
          },
        },
        transientAttempts: 1,
      }).catch((e: unknown) => e);
      expect(first).toBe(crash);
      const recorded = await sql<{ blob_name: string }>(
        'target',
        s.dbs.target,
        `SELECT blob_name FROM cloudshift.documents WHERE relation = 'public.documents'`,
      );
      expect(recorded.length).toBeGreaterThan(0);
      const c = container(s);
      const before = new Map<string, string>();
      for (const d of recorded) before.set(d.blob_name, (await c.getBlockBlobClient(d.blob_name).getProperties()).etag!);
      const [committed] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM public.documents`);
      expect(committed!.n).toBe('0');
      // Two uploaded documents change before the rerun, which reads a newer snapshot: one grows,
      // one keeps its size (only its bytes tell). Both go up again.
      const changed = await sql<{ id: string; blob_name: string }>(
        'target',
        s.dbs.target,
        `SELECT key->>0 AS id, blob_name FROM cloudshift.documents WHERE relation = 'public.documents' ORDER BY blob_name LIMIT 2`,
      );
      expect(changed).toHaveLength(2);
      await sql(
        'source',
        s.dbs.source,
        `UPDATE public.documents SET content = content || '\\x00ff'::bytea WHERE id = ${Number(changed[0]!.id)};
         UPDATE public.documents SET content = set_byte(content, 0, (get_byte(content, 0) + 1) % 256) WHERE id = ${Number(changed[1]!.id)}`,
      );
      for (const d of changed) before.delete(d.blob_name);
      // Two more are deleted: their blobs, recorded by the first attempt, are no documents any more.
      const deleted = await sql<{ id: string; blob_name: string }>(
        'target',
        s.dbs.target,
        `SELECT key->>0 AS id, blob_name FROM cloudshift.documents WHERE relation = 'public.documents' ORDER BY blob_name OFFSET 2 LIMIT 2`,
      );
      expect(deleted).toHaveLength(2);
      await sql('source', s.dbs.source, `DELETE FROM public.documents WHERE id IN (${deleted.map((d) => Number(d.id)).join(', ')})`);
      for (const d of deleted) before.delete(d.blob_name);
      // One keeps its bytes, but the column its content type comes from changes: its blob is restated.
      const [restated] = await sql<{ id: string; blob_name: string }>(
        'target',
        s.dbs.target,
        `SELECT key->>0 AS id, blob_name FROM cloudshift.documents WHERE relation = 'public.documents' ORDER BY blob_name OFFSET 4 LIMIT 1`,
      );
      await sql(
        'source',
        s.dbs.source,
        `UPDATE public.documents SET mime_type = 'application/x-restated' WHERE id = ${Number(restated!.id)}`,
      );
      before.delete(restated!.blob_name);

      const rerun = await cli(['run', file], s.env);
      expect(rerun.code).toBe(0);
      const forgotten = await sql<{ n: string }>(
        'target',
        s.dbs.target,
        `SELECT count(*) AS n FROM cloudshift.documents WHERE relation = 'public.documents' AND blob_name = ANY($1)`,
        [deleted.map((d) => d.blob_name)],
      );
      expect(forgotten[0]!.n).toBe('0');
      expect(rerun.stdout + rerun.stderr).toContain(`2 blobs in container "${s.container}" are no document of this run`);
      for (const [name, etag] of before) expect((await c.getBlockBlobClient(name).getProperties()).etag, name).toBe(etag);
      expect((await c.getBlockBlobClient(restated!.blob_name).getProperties()).contentType).toBe('application/x-restated');
      for (const d of changed) {
        expect(await c.getBlockBlobClient(d.blob_name).downloadToBuffer()).toEqual(
          await sourceBytes(s, `SELECT content AS b FROM public.documents WHERE id = ${Number(d.id)}`),
        );
      }
      expect(await rowsWithBlobs(s)).toBe(100);
    } finally {
      await s.drop();
    }
  });

  it('after kill -9 mid-batch, the rerun uploads again none of the blobs committed before the kill, recorded or not, and finishes', async () => {
    const s = await hospitalScenario('docskill');
    try {
      await addDocuments(s);
      const file = s.plan(PLAN);
      const killed = await spawnCli(['run', file], { ...s.env, CLOUDSHIFT_FAULT: 'afterDocumentUpload:12' });
      expect(killed.signal, killed.out).toBe('SIGKILL');
      const c = container(s);
      const before = new Map<string, string>();
      for await (const b of c.listBlobsFlat()) before.set(b.name, (await c.getBlockBlobClient(b.name).getProperties()).etag!);
      // Records are written a group at a time: the kill left most of these blobs unrecorded.
      const [recorded] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM cloudshift.documents`);
      expect(before.size).toBeGreaterThanOrEqual(12);
      expect(Number(recorded!.n)).toBeLessThan(before.size);

      const rerun = await spawnCli(['run', file], s.env);
      expect(rerun.code, rerun.out).toBe(0);
      for (const [name, etag] of before) expect((await c.getBlockBlobClient(name).getProperties()).etag, name).toBe(etag);
      const [documents] = await sql<{ n: string }>('source', s.dbs.source, `SELECT count(content) AS n FROM public.documents`);
      expect(await rowsWithBlobs(s)).toBe(Number(documents!.n));
      const states = await sql<{ status: string; n: string }>(
        'target',
        s.dbs.target,
        `SELECT status, count(*) AS n FROM cloudshift.documents WHERE sha256 ~ '^[0-9a-f]{64}$' GROUP BY status`,
      );
      expect(states).toEqual([{ status: 'verified', n: String(Number(documents!.n) + 6) }]);
    } finally {
      await s.drop();
    }
  });

  it('a batch copied again after a crash still gets its one more attempt when the sweep then finds a document wrong', async () => {
    const s = await hospitalScenario('docsreturn');
    try {
      await addDocuments(s);
      const file = s.plan(PLAN.replace('copy: { jobs: 2 }', 'copy: { jobs: 1 }'));
      const crash = new Error('simulated crash');
      const first = await runMigration(await loadPlan(file), {
        env: s.env,
        hooks: {
          beforeBatchCommit: (b) => {
            if (b.table === 'public.documents' && b.seq === 0) throw crash;
          },
        },
        transientAttempts: 1,
      }).catch((e: unknown) => e);
      expect(first).toBe(crash);
      // The rerun claims the batch a second time; once it commits, one of its blobs is replaced.
      const c = container(s);
      const [victim] = await sql<{ blob_name: string }>(
        'target',
        s.dbs.target,
        `SELECT d.blob_name FROM cloudshift.documents d JOIN cloudshift.batches b ON b.id = d.batch_id WHERE b.seq = 0 AND b.relation = 'public.documents' ORDER BY 1 LIMIT 1`,
      );
      let replaced = false;
      const events: Array<{ type: string; reason?: string }> = [];
      const rerun = await runMigration(await loadPlan(file), {
        env: s.env,
        onEvent: (e) => events.push(e as { type: string; reason?: string }),
        hooks: {
          afterBatchCommit: async (b) => {
            if (replaced || b.table !== 'public.documents' || b.seq !== 0) return;
            replaced = true;
            await c.getBlockBlobClient(victim!.blob_name).upload(Buffer.from('not the letter'), 14);
          },
        },
      });
      expect(replaced).toBe(true);
      expect(events.filter((e) => e.type === 'batch:retry').map((e) => e.reason)).toEqual([
        `document ${victim!.blob_name}: different size or MD5`,
      ]);
      expect(rerun.mismatches).toBe(0);
      const batches = await sql('target', s.dbs.target, `SELECT DISTINCT status FROM cloudshift.batches`);
      expect(batches).toEqual([{ status: 'verified' }]);
    } finally {
      await s.drop();
    }
  });

  it('after a crash before a large-object batch commits, the rerun uploads again a large object replaced or rewritten in place since, or whose tag or tier changed, and skips the rest', async () => {
    const s = await hospitalScenario('docslo');
    try {
      await addDocuments(s);
      const file = s.plan(
        `${planHead('docslo')}documents:
  - table: public.scans
    content: image
    blob: "scans/{id}.dcm"
    contentType: application/dicom
    tags: { patient: "{patient_id}" }
    tier: Hot
    keep: { column: blob_name }
`,
      );
      const crash = new Error('simulated crash');
      const first = await runMigration(await loadPlan(file), {
        env: s.env,
        hooks: {
          beforeBatchCommit: () => {
            throw crash;
          },
        },
        transientAttempts: 1,
      }).catch((e: unknown) => e);
      expect(first).toBe(crash);
      const c = container(s);
      const etags = new Map<number, string>();
      for (let id = 1; id <= 6; id += 1) etags.set(id, (await c.getBlockBlobClient(`scans/${id}.dcm`).getProperties()).etag!);
      // Same sizes, other bytes: scan 2 gets a new large object, scan 3's is rewritten where it is.
      await sql(
        'source',
        s.dbs.source,
        `UPDATE public.scans SET image = lo_from_bytea(0, decode(repeat(md5('other'), 200), 'hex')) WHERE id = 2;
         SELECT lo_put(image, 100, '\\xffff'::bytea) FROM public.scans WHERE id = 3;
         UPDATE public.scans SET patient_id = 44 WHERE id = 4`,
      );
      // Scan 5's blob is moved to another tier than the plan's behind its back.
      await c.getBlockBlobClient('scans/5.dcm').setAccessTier('Cool');
      const rerun = await cli(['run', file], s.env);
      expect(rerun.stderr).toBe('');
      expect(rerun.code).toBe(0);
      for (const id of [2, 3]) {
        expect(await c.getBlockBlobClient(`scans/${id}.dcm`).downloadToBuffer(), `scan ${id}`).toEqual(
          await sourceBytes(s, `SELECT lo_get(image) AS b FROM public.scans WHERE id = ${id}`),
        );
      }
      // Scan 4 keeps its bytes; its tag comes from a column that changed: its blob is restated.
      expect((await c.getBlockBlobClient('scans/4.dcm').getTags()).tags).toEqual({ patient: '44' });
      expect((await c.getBlockBlobClient('scans/5.dcm').getProperties()).accessTier).toBe('Hot');
      for (const id of [1, 6])
        expect((await c.getBlockBlobClient(`scans/${id}.dcm`).getProperties()).etag, `scan ${id}`).toBe(etags.get(id));
      const states = await sql('target', s.dbs.target, `SELECT status, count(*)::int AS n FROM cloudshift.documents GROUP BY status`);
      expect(states).toEqual([{ status: 'verified', n: 6 }]);
    } finally {
      await s.drop();
    }
  });
});

describe('documents: the blob service answering 503', () => {
  it('uploads back off and complete while the service is busy for a while', async () => {
    await behindProxy('docs503', async (s, proxy, file) => {
      // every document's first two attempts are refused: the SDK's backoff must carry it through
      const attempts = new Map<string, number>();
      proxy.failWhen = (req) => {
        if (req.method !== 'PUT' || !req.url?.includes('/patients/')) return false;
        const n = (attempts.get(req.url) ?? 0) + 1;
        attempts.set(req.url, n);
        return n <= 2;
      };
      const result = await runMigration(await loadPlan(file), {
        env: { ...s.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString },
        retryBaseDelayMs: 5,
      });
      expect(result.mismatches).toBe(0);
      expect(proxy.failed).toBe(200);
      expect(await rowsWithBlobs(s)).toBe(100);
    });
  });

  it('past the retry budget the run stops resumably (exit 3, status and request id), and a rerun finishes', async () => {
    await behindProxy('docs503stop', async (s, proxy, file) => {
      let allowed = 30;
      proxy.failWhen = (req) => req.method === 'PUT' && req.url?.includes('/patients/') === true && --allowed < 0;
      const err = await runMigration(await loadPlan(file), {
        env: { ...s.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString },
        retryBaseDelayMs: 5,
        blobRetries: 3,
      }).catch((e: unknown) => e);
      expect(err).toMatchObject({ exitCode: 3, code: 'CS_BLOB' });
      expect((err as Error).message).toMatch(/^the Blob service failed: HTTP 503 ServerBusy \(request id fault-\d+\)/);
      expect((err as { hint: string }).hint).toBe(
        'documents already uploaded are kept; when the service answers again, run the same command to resume',
      );
      const [kept] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM cloudshift.documents`);
      expect(Number(kept!.n)).toBeGreaterThan(0);
      proxy.failWhen = () => false;
      const rerun = await cli(['run', file], { ...s.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString });
      expect(rerun.code).toBe(0);
      expect(await rowsWithBlobs(s)).toBe(100);
    });
  });

  it('a request never answered is given up after the try timeout and retried; hanging past the retry budget, the run stops resumably', async () => {
    await behindProxy('docshang', async (s, proxy, file) => {
      const env = { ...s.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString };
      const options = { env, retryBaseDelayMs: 5, blobRetries: 2, blobTryTimeoutMs: 300 };
      // The service takes every document and never answers.
      proxy.holdWhen = (req) => req.method === 'PUT' && req.url?.includes('/patients/') === true;
      const err = await runMigration(await loadPlan(file), options).catch((e: unknown) => e);
      expect(err).toMatchObject({ exitCode: 3, code: 'CS_BLOB' });
      expect((err as Error).message).toMatch(/^the Blob service failed: HTTP \? TIMEOUT: no answer from the Blob service within 0\.3 s/);
      expect(proxy.held).toBeGreaterThanOrEqual(2);
      // Then it loses only three requests: each is tried again, and the run completes.
      let lost = 3;
      proxy.holdWhen = (req) => req.method === 'PUT' && req.url?.includes('/patients/') === true && --lost >= 0;
      const held = proxy.held;
      const result = await runMigration(await loadPlan(file), options);
      expect(result.mismatches).toBe(0);
      expect(proxy.held - held).toBe(3);
      expect(await rowsWithBlobs(s)).toBe(100);
    });
  });

  it('kill -9 while a document is half staged: its blob is not there until the rerun uploads it whole', async () => {
    await behindProxy('docshalf', async (s, proxy, file) => {
      await addDocuments(s);
      const env = { ...s.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString };
      const big = 'patients/2/1002-scan.pdf'; // three blocks
      let child: ChildProcess | undefined;
      let staged = 0;
      // The process dies as the document's last block goes out: two are staged at a time, so the
      // third goes out once one of the first two is staged.
      proxy.holdWhen = (req) => {
        if (!(req.url?.includes('/1002-scan.pdf?') === true && req.url.includes('comp=block&'))) return false;
        staged += 1;
        if (staged === 3) child!.kill('SIGKILL');
        return staged >= 3;
      };
      const killed = await spawnCli(['run', file], env, (c) => (child = c));
      expect(killed.signal, killed.out).toBe('SIGKILL');
      const c = container(s);
      expect(await c.getBlockBlobClient(big).exists()).toBe(false);
      const { uncommittedBlocks } = await c.getBlockBlobClient(big).getBlockList('uncommitted');
      expect(uncommittedBlocks?.length).toBeGreaterThanOrEqual(1);

      proxy.holdWhen = () => false;
      const rerun = await spawnCli(['run', file], env);
      expect(rerun.code, rerun.out).toBe(0);
      // Compared as a whole: a deep equality of 9.6 MB would take the test a minute.
      const want = await sourceBytes(s, 'SELECT content AS b FROM public.documents WHERE id = 1002');
      expect((await c.getBlockBlobClient(big).downloadToBuffer()).equals(want), 'the blob holds the source bytes').toBe(true);
      expect(await rowsWithBlobs(s)).toBe(102);
    });
  });

  it('a block damaged on the way is refused by the service (each request carries its MD5): no such blob, the run stops resumably', async () => {
    await behindProxy('docsmd5', async (s, proxy, file) => {
      await addDocuments(s);
      const env = { ...s.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString };
      const big = 'patients/2/1002-scan.pdf'; // three blocks
      let damaged = 0;
      proxy.corruptWhen = (req) => req.url?.includes('/1002-scan.pdf?') === true && req.url.includes('comp=block&') && ++damaged === 2;
      const err = await runMigration(await loadPlan(file), { env, retryBaseDelayMs: 5 }).catch((e: unknown) => e);
      expect(damaged).toBeGreaterThanOrEqual(2);
      expect(err).toMatchObject({ exitCode: 3, code: 'CS_BLOB' });
      expect((err as Error).message).toMatch(/^the Blob service failed: HTTP 400 /);
      expect(await container(s).getBlockBlobClient(big).exists()).toBe(false);
      const rerun = await cli(['run', file], env);
      expect(rerun.code).toBe(0);
      const want = await sourceBytes(s, 'SELECT content AS b FROM public.documents WHERE id = 1002');
      expect((await container(s).getBlockBlobClient(big).downloadToBuffer()).equals(want), 'the blob holds the source bytes').toBe(true);
    });
  });

  it('--blob-concurrency bounds the uploads in flight', async () => {
    await behindProxy('docsconc', async (s, proxy, file) => {
      const run = await cli(['run', file, '--blob-concurrency', '3'], {
        ...s.env,
        AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString,
      });
      expect(run.code, run.stderr).toBe(0);
      // The documents are small (one request each); the sweep's sampled reads go 8 at a time, but
      // one sweep of 100 documents samples just one.
      expect(proxy.maxInFlight).toBeLessThanOrEqual(3);
      expect(proxy.maxInFlight).toBeGreaterThanOrEqual(2);
    });
  });

  it('Ctrl-C while documents upload stops at a safe point (interrupted, not an error), and a rerun finishes', async () => {
    await behindProxy('docsctrlc', async (s, proxy, file) => {
      const ctrlC = new AbortController();
      let puts = 0;
      // The tenth document's request is on its way when the operator presses Ctrl-C.
      proxy.failWhen = (req) => {
        if (req.method === 'PUT' && req.url?.includes('/patients/') === true && ++puts === 10) ctrlC.abort();
        return false;
      };
      const result = await runMigration(await loadPlan(file), {
        env: { ...s.env, AZURE_STORAGE_CONNECTION_STRING: proxy.connectionString },
        abortSignal: ctrlC.signal,
      });
      expect(ctrlC.signal.aborted).toBe(true);
      expect(result.interrupted).toBe(true);
      // The batch cut short is pending again at once, not claimed by a process that is gone.
      const claimed = await sql<{ id: string }>('target', s.dbs.target, `SELECT id FROM cloudshift.batches WHERE status = 'claimed'`);
      expect(claimed).toEqual([]);
      const rerun = await cli(['run', file], s.env);
      expect(rerun.stderr).toBe('');
      expect(rerun.code).toBe(0);
      expect(await rowsWithBlobs(s)).toBe(100);
    });
  });
});
