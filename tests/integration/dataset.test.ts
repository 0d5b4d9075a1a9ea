import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_ROWS, createHospitalDataset, datasetRowCounts, documentSizes } from '../../src/demo/dataset.js';
import type { DatasetOptions, DatasetResult } from '../../src/demo/dataset.js';
import { freshDatabases, withClient } from '../harness/db.js';
import type { FreshDatabases } from '../harness/db.js';

const SCALE = 0.002;
const DOCUMENTS = { count: 20, totalBytes: 20 * 4096, maxBytes: 64 * 1024 };
const OPTIONS: DatasetOptions = { scale: SCALE, documents: DOCUMENTS, largeObjects: true };

/** Primary key order of each table, for digests. */
const ORDER_BY: Record<string, string> = {
  patients: 'id',
  encounters: 'id',
  observations: 'id',
  medications: 'patient_id, prescribed_at, drug',
  documents: 'id',
  scans: 'id',
};

/**
 * SHA-256 of every row's text, in key order. Large object OIDs are assigned by the server, so
 * scans are digested with the large object's content in place of its OID.
 */
async function digests(c: pg.Client): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [table, order] of Object.entries(ORDER_BY)) {
    const row =
      table === 'scans'
        ? `(t.id, t.patient_id, t.taken_at, t.modality, t.filename, t.mime_type, sha256(lo_get(t.image)))::text`
        : 't::text';
    const { rows } = await c.query<{ digest: string }>(
      `SELECT encode(sha256(convert_to(string_agg(${row}, E'\\n' ORDER BY ${order}), 'UTF8')), 'hex') AS digest FROM public.${table} t`,
    );
    out[table] = rows[0]?.digest ?? '';
  }
  return out;
}

async function count(c: pg.Client, sql: string): Promise<number> {
  const { rows } = await c.query<{ n: string }>(sql);
  return Number(rows[0]?.n);
}

describe('hospital dataset', () => {
  let a: FreshDatabases;
  let b: FreshDatabases;
  let made: DatasetResult;
  const progress: string[] = [];

  beforeAll(async () => {
    [a, b] = await Promise.all([freshDatabases('dataset_a'), freshDatabases('dataset_b')]);
    made = await withClient('source', a.source, (c) => createHospitalDataset(c, OPTIONS, (m) => progress.push(m)));
    await withClient('source', b.source, (c) => createHospitalDataset(c, OPTIONS));
  });
  afterAll(async () => {
    await Promise.all([a?.drop(), b?.drop()]);
  });

  it('creates row counts in proportion to the scale', async () => {
    const expected = datasetRowCounts(SCALE);
    expect(expected).toEqual({ patients: 100, encounters: 400, observations: 2000, medications: 500 });
    for (const [table, base] of Object.entries(BASE_ROWS)) expect(expected[table as keyof typeof BASE_ROWS]).toBe(base * SCALE);
    expect(made.rows).toEqual({ ...expected, documents: 20, scans: 5 });

    await withClient('source', a.source, async (c) => {
      for (const [table, n] of Object.entries(made.rows)) {
        expect(await count(c, `SELECT count(*) AS n FROM public.${table}`), table).toBe(n);
      }
      // Reported bytes: the tables' total relation size plus the large objects.
      const onDisk = await count(
        c,
        `SELECT sum(pg_total_relation_size(('public.' || t)::regclass)) AS n
           FROM unnest(ARRAY['patients', 'encounters', 'observations', 'medications', 'documents', 'scans']) t`,
      );
      const loBytes = await count(c, 'SELECT sum(octet_length(lo_get(image))) AS n FROM public.scans');
      expect(made.bytes).toBe(onDisk + loBytes);
    });
    expect(progress.some((m) => m.startsWith('observations: 2,000 rows'))).toBe(true);
  });

  it('has the schema of the hospital fixture, with intact foreign keys and sequences past the keys', async () => {
    await withClient('source', a.source, async (c) => {
      const fks = await c.query<{ name: string }>(
        `SELECT conname AS name FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY 1`,
      );
      expect(fks.rows.map((r) => r.name)).toEqual([
        'documents_patient_id_fkey',
        'encounters_patient_id_fkey',
        'medications_patient_id_fkey',
        'observations_encounter_id_fkey',
        'scans_patient_id_fkey',
      ]);
      expect(await count(c, `SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'encounters_patient'`)).toBe(1);
      // Orphans (the constraints are validated, but check the data itself too).
      for (const [child, column, parent] of [
        ['encounters', 'patient_id', 'patients'],
        ['observations', 'encounter_id', 'encounters'],
        ['medications', 'patient_id', 'patients'],
        ['documents', 'patient_id', 'patients'],
        ['scans', 'patient_id', 'patients'],
      ] as const) {
        const orphans = await count(
          c,
          `SELECT count(*) AS n FROM public.${child} x WHERE NOT EXISTS (SELECT 1 FROM public.${parent} p WHERE p.id = x.${column})`,
        );
        expect(orphans, `${child}.${column}`).toBe(0);
      }
      // Values are spread over the parents, not piled on one.
      expect(await count(c, 'SELECT count(DISTINCT patient_id) AS n FROM public.encounters')).toBeGreaterThan(90);
      // Encounters end after they start; observations fall inside their encounter.
      expect(await count(c, 'SELECT count(*) AS n FROM public.encounters WHERE ended_at < started_at')).toBe(0);
      expect(
        await count(
          c,
          `SELECT count(*) AS n FROM public.observations o JOIN public.encounters e ON e.id = o.encounter_id
            WHERE o.observed_at < e.started_at OR o.observed_at > coalesce(e.ended_at, e.started_at + interval '12 hours')`,
        ),
      ).toBe(0);
      // The generated column: BMI only where the code is bmi.
      expect(await count(c, `SELECT count(*) AS n FROM public.observations WHERE (bmi IS NOT NULL) <> (code = 'bmi')`)).toBe(0);
      expect(await count(c, `SELECT count(*) AS n FROM public.observations WHERE code = 'bmi'`)).toBeGreaterThan(0);
      // The enum, the domain and the test range of NHS numbers.
      expect(await count(c, `SELECT count(DISTINCT sex) AS n FROM public.patients`)).toBeGreaterThanOrEqual(2);
      expect(await count(c, `SELECT count(*) AS n FROM public.patients WHERE nhs_number !~ '^999[0-9]{7}$'`)).toBe(0);
      // Sequences continue after the explicit keys.
      for (const table of ['patients', 'encounters', 'observations', 'documents', 'scans']) {
        const next = await count(c, `SELECT nextval(pg_get_serial_sequence('public.${table}', 'id')) AS n`);
        expect(next, table).toBe(made.rows[table]! + 1);
      }
    });
  });

  it('is deterministic: the same options give the same rows', async () => {
    const [da, db] = await Promise.all([withClient('source', a.source, digests), withClient('source', b.source, digests)]);
    expect(Object.keys(da)).toEqual(Object.keys(ORDER_BY));
    for (const digest of Object.values(da)) expect(digest).toMatch(/^[0-9a-f]{64}$/);
    expect(db).toEqual(da);
    // ...and the documents differ from one another.
    await withClient('source', a.source, async (c) => {
      expect(await count(c, 'SELECT count(DISTINCT md5(content)) AS n FROM public.documents')).toBe(20);
    });
  });

  it('skews document sizes: most small, a few large, summing to the total', async () => {
    const sizes = await withClient('source', a.source, async (c) => {
      const { rows } = await c.query<{ size: number }>('SELECT octet_length(content) AS size FROM public.documents ORDER BY id');
      return rows.map((r) => r.size);
    });
    expect(sizes).toEqual(documentSizes(DOCUMENTS.count, DOCUMENTS.totalBytes, DOCUMENTS.maxBytes));
    const sorted = [...sizes].sort((x, y) => x - y);
    const mean = DOCUMENTS.totalBytes / DOCUMENTS.count;
    const median = sorted[sorted.length / 2]!;
    expect(sizes.reduce((x, y) => x + y, 0)).toBe(DOCUMENTS.totalBytes);
    expect(sorted[0]).toBeGreaterThanOrEqual(1024);
    expect(sorted.at(-1)).toBeLessThanOrEqual(DOCUMENTS.maxBytes);
    expect(median).toBeLessThan(mean);
    expect(sorted.filter((s) => s < mean).length).toBeGreaterThanOrEqual(14);
    expect(sorted.at(-1)!).toBeGreaterThan(5 * median);
    // Large documents are not all at the end.
    const largest = sizes.indexOf(sorted.at(-1)!);
    expect(largest).toBeLessThan(DOCUMENTS.count - 1);
  });

  it('refuses a database that already has the tables', async () => {
    await withClient('source', a.source, async (c) => {
      await expect(createHospitalDataset(c, { scale: SCALE })).rejects.toThrow(
        /already has public\.patients.*needs a database without them/,
      );
    });
  });

  it('rejects scales out of range', () => {
    expect(() => datasetRowCounts(0)).toThrow(/scale must be a number above 0/);
    expect(() => datasetRowCounts(Number.NaN)).toThrow(/scale must be a number above 0/);
    expect(() => documentSizes(3, 100, 4096)).toThrow(/totalBytes must be from/);
  });
});
