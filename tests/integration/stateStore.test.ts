import { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { connect } from '../../src/pg/connect.js';
import { replicationConnection } from '../../src/sync/replication.js';
import { tableProgress } from '../../src/state/sql/tableProgress.js';
import { throughputBuckets } from '../../src/state/sql/throughputBuckets.js';
import { StateStore } from '../../src/state/store.js';
import { MIGRATIONS } from '../../src/state/migrations.js';
import {
  markBatchCopied,
  markBatchMismatch,
  markBatchRetry,
  markBatchVerified,
  markRowsVerified,
  returnBatchesHoldingWrong,
  returnForDocuments,
  settleDocumentBatches,
} from '../../src/state/sql/batchStatus.js';
import {
  documentsNamed,
  forgetOtherDocuments,
  markDocumentsVerified,
  recordDocuments,
  recordedDocuments,
} from '../../src/state/sql/documents.js';
import { connectionUrl, freshDatabases, sql, type FreshDatabases } from '../harness/db.js';

let dbs: FreshDatabases;
let url: string;

beforeAll(async () => {
  dbs = await freshDatabases('state');
  url = connectionUrl('target', dbs.target);
});
afterAll(async () => dbs.drop());

async function open(schema: string) {
  return StateStore.open({ connectionString: url, schema });
}

/** A run of one batch of public.docs in a state store of its own schema. */
async function oneBatchRun(store: StateStore) {
  await store.migrate();
  const run = await store.createRun({ planName: store.schema, planFingerprint: 'f', toolVersion: '0.1.0' });
  await store.addBatches(run.id, [{ kind: 'table' as const, relation: 'public.docs', seq: 0, keyLow: [0], keyHigh: [10] }]);
  return run;
}

/** The run's batch claimed by `worker` and marked copied with this source checksum; its id. */
async function copiedBy(store: StateStore, runId: string, worker: string, sourceChecksum: string): Promise<string> {
  const [b] = await store.claimBatches(runId, worker, 1, 'f');
  const copied = { id: b!.id, workerId: worker, rows: 2, bytes: 20, sourceChecksum, snapshot: null };
  expect(await markBatchCopied(store.pool, store.schema, copied)).toBe(true);
  return b!.id;
}

/** Records document 2 (d/2) of the batch, and returns its record as a sweep finds it wrong. */
async function recordedDocument(store: StateStore, runId: string, batchId: string) {
  await recordDocuments(store.pool, store.schema, runId, 'public.docs', [{ key: ['2'], name: 'd/2', size: 10, md5: 'm', sha256: 'h' }], {
    id: batchId,
  });
  return documentsNamed(store.pool, store.schema, runId, new Date(), ['d/2']);
}

describe('state store', () => {
  it('migrates safely when several processes start at once', async () => {
    const stores = await Promise.all(Array.from({ length: 6 }, () => open('concurrent')));
    try {
      await Promise.all(stores.map((s) => s.migrate()));
      const applied = await sql<{ name: string }>('target', dbs.target, 'SELECT name FROM concurrent.knex_migrations');
      expect(applied.map((r) => r.name)).toEqual(MIGRATIONS.map((m) => m.name));
      const tables = await sql<{ table_name: string }>(
        'target',
        dbs.target,
        `SELECT table_name FROM information_schema.tables WHERE table_schema = 'concurrent' ORDER BY 1`,
      );
      expect(tables.map((t) => t.table_name)).toEqual([
        'applied_lsn',
        'batches',
        'documents',
        'events',
        'knex_migrations',
        'knex_migrations_lock',
        'lag_samples',
        'released_blobs',
        'replication_objects',
        'runs',
        'set_aside_constraints',
        'switches',
        'workers',
      ]);
      await stores[0]!.assertCurrent();
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it('refuses a state schema made by a newer cloudshift', async () => {
    const store = await open('newer');
    try {
      await store.migrate();
      await sql(
        'target',
        dbs.target,
        `INSERT INTO newer.knex_migrations (name, batch, migration_time) VALUES ('29990101000000_future', 2, now())`,
      );
      await expect(store.migrate()).rejects.toThrow(
        'the state store schema "newer" was created by a newer cloudshift (it has migration 29990101000000_future, which this version does not know)',
      );
      await expect(store.assertCurrent()).rejects.toMatchObject({ exitCode: 4 });
    } finally {
      await store.close();
    }
  });

  it('records runs and an append-only event log with who and when', async () => {
    const store = await open('events');
    try {
      await store.migrate();
      const run = await store.createRun({ planName: 'p', planFingerprint: 'f'.repeat(64), toolVersion: '0.1.0' });
      expect(await store.getActiveRun('p')).toMatchObject({ id: run.id, phase: 'created' });
      await expect(store.createRun({ planName: 'p', planFingerprint: 'x', toolVersion: '0.1.0' })).rejects.toThrow(
        /runs_one_active_per_plan/,
      );
      const e = await store.appendEvent(run.id, 'preflight:result', 'dry run passed', { checks: 3 });
      expect(e).toMatchObject({ kind: 'preflight:result', pid: process.pid, details: { checks: 3 } });
      expect(e.os_user).toBeTruthy();
      expect(e.host).toBeTruthy();
      await expect(sql('target', dbs.target, `UPDATE events.events SET message = 'changed'`)).rejects.toThrow(
        'the cloudshift event log is append-only',
      );
      expect((await store.listEvents(run.id)).map((x) => x.message)).toEqual(['dry run passed']);
      // Foreign text in a message or its details never brings a secret into the log.
      const leaky = await store.appendEvent(run.id, 'sync:reconnect', 'lost postgres://app:hunter2@db/ehr', {
        error: { message: 'password=hunter2 rejected', at: [1, 'AccountKey=abc123=='] },
      });
      expect(JSON.stringify(leaky)).not.toMatch(/hunter2|abc123/);
      expect(leaky.message).toBe('lost postgres://app:***@db/ehr');
    } finally {
      await store.close();
    }
  });

  it('lets concurrent workers claim batches without overlap (FOR UPDATE SKIP LOCKED)', async () => {
    const stores = await Promise.all([open('claims'), open('claims'), open('claims')]);
    try {
      await stores[0]!.migrate();
      const run = await stores[0]!.createRun({ planName: 'c', planFingerprint: 'f', toolVersion: '0.1.0' });
      await stores[0]!.addBatches(
        run.id,
        Array.from({ length: 90 }, (_, i) => ({
          kind: 'table' as const,
          relation: 'public.t',
          seq: i,
          keyLow: [i * 10],
          keyHigh: [i * 10 + 10],
        })),
      );
      // A worker still on an older plan than the run's claims nothing.
      expect(await stores[0]!.claimBatches(run.id, 'stale', 4, 'older plan')).toEqual([]);
      const claimed: string[][] = [[], [], []];
      await Promise.all(
        stores.map(async (s, w) => {
          for (;;) {
            const got = await s.claimBatches(run.id, `worker-${w}`, 4, 'f');
            if (got.length === 0) return;
            claimed[w]!.push(...got.map((b) => b.id));
          }
        }),
      );
      const all = claimed.flat();
      expect(all).toHaveLength(90);
      expect(new Set(all).size).toBe(90);
      const rows = await stores[0]!.listBatches(run.id);
      expect(rows.every((b) => b.status === 'claimed' && b.attempts === 1 && b.claimed_by?.startsWith('worker-'))).toBe(true);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it("marks a batch copied only in the run's current snapshot, and keeps its verdict from a verifier that comes late: a settled batch is not sent back, nor called a mismatch", async () => {
    const store = await open('verdicts');
    try {
      await store.migrate();
      const run = await store.createRun({ planName: 'v', planFingerprint: 'f', toolVersion: '0.1.0' });
      await store.addBatches(run.id, [{ kind: 'table' as const, relation: 'public.t', seq: 0, keyLow: [0], keyHigh: [10] }]);
      const [b] = await store.claimBatches(run.id, 'w1', 1, 'f');
      // Read in a snapshot the run has moved on from (a new leader resumed): not marked.
      await store.updateRun(run.id, { snapshot_name: 'S2' });
      const copied = { id: b!.id, workerId: 'w1', rows: 2, bytes: 20, sourceChecksum: 's' };
      expect(await markBatchCopied(store.pool, 'verdicts', { ...copied, snapshot: 'S1' })).toBe(false);
      expect(await markBatchCopied(store.pool, 'verdicts', { ...copied, snapshot: 'S2' })).toBe(true);
      expect(await markBatchVerified(store.pool, 'verdicts', { id: b!.id, sourceChecksum: 's', targetChecksum: 's' })).toBe(true);
      // w1's own digest, taken after the sync changed the range, arrives now.
      expect(await markBatchRetry(store.pool, 'verdicts', b!.id, 'w1', 'checksum mismatch')).toBe(false);
      expect(
        await markBatchMismatch(store.pool, 'verdicts', { id: b!.id, sourceChecksum: 's', targetChecksum: 'x' }, 'checksum mismatch'),
      ).toBe(false);
      const [after] = await store.listBatches(run.id);
      expect([after!.status, after!.attempts, after!.target_checksum]).toEqual(['verified', 1, 's']);
    } finally {
      await store.close();
    }
  });

  it('applies a verdict only to the copy it judged: one read slowly, after the batch was sent back and copied again, settles nothing', async () => {
    const store = await open('latecopy');
    try {
      const run = await oneBatchRun(store);
      const copy = (worker: string, sourceChecksum: string) => copiedBy(store, run.id, worker, sourceChecksum);
      const id = await copy('w1', 's1');
      // A sweep sends it back (a document found wrong); w2 copies it again, the source changed.
      const wrong = await recordedDocument(store, run.id, id);
      expect(await returnForDocuments(store.pool, 'latecopy', run.id, id, wrong, 'document d/2: missing')).toBe('pending');
      await copy('w2', 's2');
      // w2 uploaded document 2 again, and a sweep verified it.
      await recordedDocument(store, run.id, id);
      await store.db.query(`UPDATE latecopy.documents SET status = 'verified'`);
      // w1's digests of its own copy arrive now: none may settle w2's.
      expect(await markRowsVerified(store.pool, 'latecopy', { id, sourceChecksum: 's1', targetChecksum: 't1' })).toBe(false);
      expect(await settleDocumentBatches(store.pool, 'latecopy', run.id, ['public.docs'])).toEqual([]);
      expect(await markBatchVerified(store.pool, 'latecopy', { id, sourceChecksum: 's1', targetChecksum: 't1' })).toBe(false);
      expect(await markBatchMismatch(store.pool, 'latecopy', { id, sourceChecksum: 's1', targetChecksum: 't1' }, 'checksum mismatch')).toBe(
        false,
      );
      const [b] = await store.listBatches(run.id);
      expect([b!.status, b!.source_checksum, b!.target_checksum]).toEqual(['copied', 's2', null]);
      // w2's own verdict applies.
      expect(await markRowsVerified(store.pool, 'latecopy', { id, sourceChecksum: 's2', targetChecksum: 't2' })).toBe(true);
      expect((await settleDocumentBatches(store.pool, 'latecopy', run.id, ['public.docs'])).map((x) => x.id)).toEqual([id]);
    } finally {
      await store.close();
    }
  });

  it('returns a documents batch with wrong documents to pending in one step: their records marked wrong, its row checksum gone', async () => {
    const store = await open('docreturn');
    try {
      const run = await oneBatchRun(store);
      const copy = async () => {
        const id = await copiedBy(store, run.id, 'w', 's');
        expect(await markRowsVerified(store.pool, 'docreturn', { id, sourceChecksum: 's', targetChecksum: 't' })).toBe(true);
        const doc = (key: string) => ({ key: [key], name: `d/${key}`, size: 10, md5: 'm', sha256: 'h' });
        await recordDocuments(store.pool, 'docreturn', run.id, 'public.docs', [doc('1'), doc('2')], { id });
        return id;
      };
      // The records a next attempt reads, and which of them it must upload again.
      const records = async (keys: string[][]) => {
        const found = [...(await recordedDocuments(store.pool, 'docreturn', run.id, 'public.docs', keys))].sort();
        return { keys: found.map(([k]) => k), wrong: found.filter(([, d]) => d.foundWrong).map(([k]) => k) };
      };
      // What a sweep finds wrong: document 2's record as it is now.
      const found = async () => documentsNamed(store.pool, 'docreturn', run.id, new Date(), ['d/2']);
      const id = await copy();
      const wrong = await found();
      // What another sweep found wrong at the same time: document 1.
      const other = await documentsNamed(store.pool, 'docreturn', run.id, new Date(), ['d/1']);
      expect(await returnForDocuments(store.pool, 'docreturn', run.id, id, wrong, 'document d/2: missing')).toBe('pending');
      const [batch] = await store.listBatches(run.id);
      expect([batch!.status, batch!.target_checksum]).toEqual(['pending', null]);
      expect(await records([['1'], ['2']])).toEqual({ keys: ['["1"]', '["2"]'], wrong: ['["2"]'] });
      // The other sweep's verdict comes after the batch went back: document 1's record is marked
      // too, so the attempt uploads it again, and the batch stays as it is.
      expect(await returnForDocuments(store.pool, 'docreturn', run.id, id, other, 'document d/1: different bytes')).toBe(null);
      expect(await records([['1'], ['2']])).toEqual({ keys: ['["1"]', '["2"]'], wrong: ['["1"]', '["2"]'] });
      expect((await store.listBatches(run.id))[0]!.status).toBe('pending');
      // Once an attempt has claimed it, a late verdict marks the record it found wrong all the same (the
      // attempt may have read it already), which an attempt reading it does not skip.
      await recordDocuments(
        store.pool,
        'docreturn',
        run.id,
        'public.docs',
        [{ key: ['1'], name: 'd/1', size: 10, md5: 'm', sha256: 'h' }],
        { id },
      );
      const late = await documentsNamed(store.pool, 'docreturn', run.id, new Date(), ['d/1']);
      await store.claimBatches(run.id, 'w', 1, 'f');
      expect(await returnForDocuments(store.pool, 'docreturn', run.id, id, late, 'document d/1: different bytes')).toBe(null);
      expect(await records([['1']])).toEqual({ keys: ['["1"]'], wrong: ['["1"]'] });
      const [marked] = await sql<{ status: string }>('target', dbs.target, `SELECT status FROM docreturn.documents WHERE key = '["1"]'`);
      expect(marked!.status).toBe('mismatch');
      await store.db.query(`UPDATE docreturn.batches SET status = 'pending', claimed_by = NULL WHERE id = $1`, [id]);
      // A settle now finds nothing to call verified; the next attempt's rows are checked afresh.
      expect(await settleDocumentBatches(store.pool, 'docreturn', run.id, ['public.docs'])).toEqual([]);
      expect(await copy()).toBe(id);
      expect((await store.listBatches(run.id))[0]!.attempts).toBe(3);
      // A second sweep that found the first record wrong too, returning late: the new attempt's
      // record and the batch are left alone (not a mismatch of the copy that mended it).
      expect(await returnForDocuments(store.pool, 'docreturn', run.id, id, wrong, 'document d/2: missing')).toBe(null);
      expect((await store.listBatches(run.id))[0]!.status).toBe('copied');
      expect(await records([['2']])).toEqual({ keys: ['["2"]'], wrong: [] });
      const again = await found();
      expect(await returnForDocuments(store.pool, 'docreturn', run.id, id, again, 'document d/2: missing')).toBe('mismatch');
      expect(await returnForDocuments(store.pool, 'docreturn', run.id, id, again, 'again')).toBe(null);
    } finally {
      await store.close();
    }
  });

  it('a batch whose attempt kept a document a late verdict marked wrong goes back to pending, not stuck copied', async () => {
    const store = await open('keptwrong');
    try {
      const run = await oneBatchRun(store);
      const doc = (key: string) => ({ key: [key], name: `d/${key}`, size: 10, md5: 'm', sha256: 'h' });
      const id = await copiedBy(store, run.id, 'w1', 's');
      expect(await markRowsVerified(store.pool, 'keptwrong', { id, sourceChecksum: 's', targetChecksum: 's' })).toBe(true);
      await recordDocuments(store.pool, 'keptwrong', run.id, 'public.docs', [doc('1'), doc('2')], { id });
      const late = await documentsNamed(store.pool, 'keptwrong', run.id, new Date(), ['d/1']);
      // One sweep sends the batch back (document 2 missing); w2 takes it and reads the records.
      const first = await documentsNamed(store.pool, 'keptwrong', run.id, new Date(), ['d/2']);
      expect(await returnForDocuments(store.pool, 'keptwrong', run.id, id, first, 'document d/2: missing')).toBe('pending');
      const [claimed] = await store.claimBatches(run.id, 'w2', 1, 'f');
      expect(claimed!.id).toBe(id);
      // Another sweep's verdict on document 1 lands now: marked, after w2 read it as good.
      expect(await returnForDocuments(store.pool, 'keptwrong', run.id, id, late, 'document d/1: different bytes')).toBe(null);
      // w2 uploads document 2 again, keeps document 1, and commits.
      await recordDocuments(store.pool, 'keptwrong', run.id, 'public.docs', [doc('2')], { id, claim: { workerId: 'w2', snapshot: null } });
      const copied = { id, workerId: 'w2', rows: 2, bytes: 20, sourceChecksum: 's2', snapshot: null };
      expect(await markBatchCopied(store.pool, 'keptwrong', copied)).toBe(true);
      expect(await markRowsVerified(store.pool, 'keptwrong', { id, sourceChecksum: 's2', targetChecksum: 's2' })).toBe(true);
      await store.db.query(`UPDATE keptwrong.documents SET status = 'verified' WHERE key = '["2"]'`);
      expect(await settleDocumentBatches(store.pool, 'keptwrong', run.id, ['public.docs'])).toEqual([]);
      // Stuck for good, but for this: the batch goes back, and its next attempt uploads document 1.
      expect((await returnBatchesHoldingWrong(store.pool, 'keptwrong', run.id, ['public.docs'])).map((b) => b.id)).toEqual([id]);
      const [after] = await sql<{ status: string; claimed_by: string | null; sweep_returns: number }>(
        'target',
        dbs.target,
        `SELECT status, claimed_by, sweep_returns FROM keptwrong.batches`,
      );
      expect(after).toEqual({ status: 'pending', claimed_by: null, sweep_returns: 1 });
      expect(await returnBatchesHoldingWrong(store.pool, 'keptwrong', run.id, ['public.docs'])).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('a sweep that finds a document wrong after another sweep settled its batch (having missed it) makes the batch a mismatch, keeping the record', async () => {
    const store = await open('docsettled');
    try {
      const run = await oneBatchRun(store);
      const id = await copiedBy(store, run.id, 'w', 's');
      expect(await markRowsVerified(store.pool, 'docsettled', { id, sourceChecksum: 's', targetChecksum: 't' })).toBe(true);
      const wrong = await recordedDocument(store, run.id, id);
      // The other sweep did not sample the document: it verified it, and settled the batch.
      await store.db.query(`UPDATE docsettled.documents SET status = 'verified'`);
      expect((await settleDocumentBatches(store.pool, 'docsettled', run.id, ['public.docs'])).map((x) => x.id)).toEqual([id]);
      expect(await returnForDocuments(store.pool, 'docsettled', run.id, id, wrong, 'document d/2: different bytes')).toBe('mismatch');
      const [b] = await store.listBatches(run.id);
      expect([b!.status, b!.error]).toEqual(['mismatch', 'document d/2: different bytes']);
      const [doc] = await sql<{ status: string }>('target', dbs.target, `SELECT status FROM docsettled.documents`);
      expect(doc!.status).toBe('mismatch');
    } finally {
      await store.close();
    }
  });

  it("records a batch's uploads only while the claim holds, and marks verified only the record the sweep checked", async () => {
    const store = await open('docclaim');
    try {
      const run = await oneBatchRun(store);
      const [b] = await store.claimBatches(run.id, 'old', 1, 'f');
      const doc = (md5: string) => ({ key: ['1'], name: 'd/1', size: 10, md5, sha256: 'h' });
      const record = (md5: string, workerId: string) =>
        recordDocuments(store.pool, 'docclaim', run.id, 'public.docs', [doc(md5)], { id: b!.id, claim: { workerId, snapshot: null } });
      const md5Now = async () => (await recordedDocuments(store.pool, 'docclaim', run.id, 'public.docs', [['1']])).get('["1"]')?.md5;
      await record('m1', 'old');
      expect(await md5Now()).toBe('m1');
      // Another process holds the batch now: the first one's uploads, finishing late, are not recorded.
      await store.db.query(`UPDATE docclaim.batches SET claimed_by = 'new' WHERE id = $1`, [b!.id]);
      await record('stale', 'old');
      expect(await md5Now()).toBe('m1');
      await record('m2', 'new');
      expect(await md5Now()).toBe('m2');
      // A sweep read that record; another upload of the document is recorded before its verdict.
      const swept = await documentsNamed(store.pool, 'docclaim', run.id, new Date(), ['d/1']);
      await record('m3', 'new');
      await markDocumentsVerified(store.pool, 'docclaim', run.id, 'public.docs', swept);
      const [row] = await sql<{ status: string; md5: string }>('target', dbs.target, `SELECT status, md5 FROM docclaim.documents`);
      expect(row).toEqual({ status: 'uploaded', md5: 'm3' });
      await markDocumentsVerified(
        store.pool,
        'docclaim',
        run.id,
        'public.docs',
        await documentsNamed(store.pool, 'docclaim', run.id, new Date(), ['d/1']),
      );
      const [after] = await sql<{ status: string }>('target', dbs.target, `SELECT status FROM docclaim.documents`);
      expect(after!.status).toBe('verified');
    } finally {
      await store.close();
    }
  });

  it("forgets a batch's records of rows gone only while the claim still holds: a process that lost it forgets nothing", async () => {
    const store = await open('docforget');
    try {
      const run = await oneBatchRun(store);
      const [b] = await store.claimBatches(run.id, 'old', 1, 'f');
      const doc = (key: string) => ({ key: [key], name: `d/${key}`, size: 10, md5: 'm', sha256: 'h' });
      await recordDocuments(store.pool, 'docforget', run.id, 'public.docs', [doc('1'), doc('2'), doc('3')], { id: b!.id });
      // Another process holds the batch now (the first lost its claim): its records stay.
      await store.db.query(`UPDATE docforget.batches SET claimed_by = 'new' WHERE id = $1`, [b!.id]);
      const claim = (workerId: string) => ({ batchId: b!.id, workerId, snapshot: null });
      expect(await forgetOtherDocuments(store.pool, 'docforget', run.id, 'public.docs', [['1']], claim('old'))).toBe(0);
      // Its holder, whose attempt found rows 1 and 3 only, forgets row 2's record.
      expect(await forgetOtherDocuments(store.pool, 'docforget', run.id, 'public.docs', [['1'], ['3']], claim('new'))).toBe(1);
      const left = await recordedDocuments(store.pool, 'docforget', run.id, 'public.docs', [['1'], ['2'], ['3']]);
      expect([...left.keys()].sort()).toEqual(['["1"]', '["3"]']);
    } finally {
      await store.close();
    }
  });

  it("spreads a batch's rows over the time buckets its copy spans, not all into the one it committed in", async () => {
    const store = await open('buckets');
    try {
      await store.migrate();
      const run = await store.createRun({ planName: 'b', planFingerprint: 'f', toolVersion: '0.1.0' });
      await store.addBatches(run.id, [
        { kind: 'table' as const, relation: 'public.t', seq: 0, keyLow: [0], keyHigh: [10] },
        { kind: 'table' as const, relation: 'public.t', seq: 1, keyLow: [10], keyHigh: [20] },
      ]);
      // Batch 0 copies 1,000 rows over the first second; batch 1, 100 rows within 100 ms after.
      await sql(
        'target',
        dbs.target,
        `UPDATE buckets.batches SET status = 'verified',
            claimed_at = timestamptz '2026-01-01 00:00:00' + (CASE seq WHEN 0 THEN 0 ELSE 1000 END) * interval '1 ms',
            finished_at = timestamptz '2026-01-01 00:00:00' + (CASE seq WHEN 0 THEN 1000 ELSE 1100 END) * interval '1 ms',
            rows = CASE seq WHEN 0 THEN 1000 ELSE 100 END, bytes = CASE seq WHEN 0 THEN 4000 ELSE 400 END
          WHERE run_id = $1`,
        [run.id],
      );
      expect(await throughputBuckets(store.knex, run.id, 250)).toEqual([
        { bucket: 0, batches: 0, rows: 250, bytes: 1000 },
        { bucket: 1, batches: 0, rows: 250, bytes: 1000 },
        { bucket: 2, batches: 0, rows: 250, bytes: 1000 },
        { bucket: 3, batches: 0, rows: 250, bytes: 1000 },
        { bucket: 4, batches: 2, rows: 100, bytes: 400 },
      ]);
    } finally {
      await store.close();
    }
  });

  it("marks a batch finished when it commits, not when its transaction began; status's rate counts the part of each copy in its window", async () => {
    const store = await open('finished');
    try {
      await store.migrate();
      const run = await store.createRun({ planName: 'f', planFingerprint: 'f', toolVersion: '0.1.0' });
      await store.addBatches(run.id, [
        { kind: 'table' as const, relation: 'public.t', seq: 0, keyLow: [0], keyHigh: [10] },
        { kind: 'table' as const, relation: 'public.t', seq: 1, keyLow: [10], keyHigh: [20] },
      ]);
      // As copyBatch with the store in the target: the mark in the transaction that wrote the rows.
      const [b] = await store.claimBatches(run.id, 'w', 1, 'f');
      const client = await store.pool.connect();
      let copying: string;
      try {
        await client.query('BEGIN');
        ({
          rows: [{ at: copying }],
        } = await client.query<{ at: string }>(`SELECT clock_timestamp()::text AS at FROM pg_sleep(0.01)`));
        const mark = { id: b!.id, workerId: 'w', rows: 2, bytes: 20, sourceChecksum: 'c', snapshot: null };
        expect(await markBatchCopied(client, 'finished', mark)).toBe(true);
        await client.query('COMMIT');
      } finally {
        client.release();
      }
      const [row] = await sql<{ after: boolean }>(
        'target',
        dbs.target,
        `SELECT finished_at > $1::timestamptz AS after FROM finished.batches WHERE id = $2`,
        [copying, b!.id],
      );
      expect(row!.after).toBe(true);

      // A window of 60 s: batch 0 copied 900 rows from 90 s ago to 10 s ago (50 of its 80 s in
      // the window), batch 1 copied 100 rows in the last 20 s.
      await sql(
        'target',
        dbs.target,
        `UPDATE finished.batches SET status = 'verified',
            claimed_at = now() - (CASE seq WHEN 0 THEN 90 ELSE 20 END) * interval '1 s',
            finished_at = now() - (CASE seq WHEN 0 THEN 10 ELSE 0 END) * interval '1 s',
            rows = CASE seq WHEN 0 THEN 900 ELSE 100 END, bytes = CASE seq WHEN 0 THEN 9000 ELSE 1000 END
          WHERE run_id = $1`,
        [run.id],
      );
      // (Read a moment after the update: the window has moved by that moment.)
      const [p] = await tableProgress(store.knex, run.id, 60);
      expect(p).toMatchObject({ rows: 1000, recent_batches: 2, recent_seconds: 60 });
      expect(p!.recent_rows).toBeCloseTo(900 * (50 / 80) + 100, -1);
      expect(p!.recent_bytes).toBeCloseTo(9000 * (50 / 80) + 1000, -2);
    } finally {
      await store.close();
    }
  });

  it("exempts its sessions, the replication one too, from the server's idle timeouts (the snapshot holder idles in its transaction for the whole copy)", async () => {
    const db = dbs.source;
    await sql('source', db, `ALTER DATABASE "${db}" SET idle_in_transaction_session_timeout = '200ms'`);
    await sql('source', db, `ALTER DATABASE "${db}" SET idle_session_timeout = '200ms'`);
    try {
      const sourceUrl = connectionUrl('source', db);
      for (const client of [
        await connect({ role: 'source', connectionString: sourceUrl }),
        await replicationConnection(sourceUrl, 'test'),
      ]) {
        try {
          const { rows } = await client.query<{ t: string; s: string }>(
            `SELECT current_setting('idle_in_transaction_session_timeout') AS t, current_setting('idle_session_timeout') AS s`,
          );
          expect(rows).toEqual([{ t: '0', s: '0' }]);
        } finally {
          await client.end();
        }
      }
      // What the database's setting gives any other session.
      const [other] = await sql<{ t: string }>('source', db, `SELECT current_setting('idle_in_transaction_session_timeout') AS t`);
      expect(other!.t).toBe('200ms');
    } finally {
      await sql('source', db, `ALTER DATABASE "${db}" RESET ALL`);
    }
  });

  it('asks for TCP keepalives on every session it opens (its own, its query pool, its knex pool), as every copy session does', async () => {
    const keepalive = vi.spyOn(Socket.prototype, 'setKeepAlive');
    try {
      const store = await open('keepalive');
      try {
        await store.knex.raw('SELECT 1');
        await store.pool.query('SELECT 1');
        const copySession = await connect({ role: 'target', connectionString: url });
        await copySession.end();
      } finally {
        await store.close();
      }
      // An idle session (a batch waiting on its uploads) outlives a path that drops idle flows.
      expect(keepalive.mock.calls).toEqual([
        [true, 30_000],
        [true, 30_000],
        [true, 30_000],
        [true, 30_000],
      ]);
    } finally {
      keepalive.mockRestore();
    }
  });
});
