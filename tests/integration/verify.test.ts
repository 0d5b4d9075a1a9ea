import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { VerifyResult } from '../../src/verify/verifyTables.js';
import { cli } from '../harness/cli.js';
import { expectSameRows, expectTablesMatch } from '../harness/compare.js';
import { sql } from '../harness/db.js';
import { hospitalScenario, type Scenario } from '../harness/scenario.js';

const ALLTYPES_SQL = readFileSync(new URL('../fixtures/alltypes.sql', import.meta.url), 'utf8');

const PLAN = `version: 1
name: verifytest
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.patients
  - name: public.observations
    batch: { rows: 1000 }
  - name: public.medications
  - name: public.wards
  - name: public.alltypes
  - name: public.audit_log
copy: { jobs: 2 }
`;

let s: Scenario;
let file: string;
beforeAll(async () => {
  s = await hospitalScenario('verify');
  await sql('source', s.dbs.source, ALLTYPES_SQL);
  file = s.plan(PLAN.replace('public.observations', 'public.encounters\n  - name: public.observations'));
  const r = await cli(['run', file], s.env);
  expect(r.code).toBe(0);
});
afterAll(async () => s.drop());

async function verify(...args: string[]): Promise<{ code: number; result: VerifyResult }> {
  const r = await cli(['verify', file, '--json', ...args], s.env);
  return { code: r.code, result: JSON.parse(r.stdout) as VerifyResult };
}

const [CHANGED, DELETED] = ['1234', '2222'];

describe('cloudshift verify', () => {
  it('finds nothing on an exact copy (exit 0)', async () => {
    const { code, result } = await verify();
    expect(code).toBe(0);
    expect(result.ok).toBe(true);
    expect(result.findings).toEqual([]);
    expect(result.tables.find((t) => t.table === 'public.observations')).toMatchObject({
      ranges: 3,
      rangesChecked: 3,
      rows: 3000,
      matched: true,
    });
  });

  it('names every corrupted row by primary key, and writes nothing without --repair (exit 1)', async () => {
    await sql(
      'target',
      s.dbs.target,
      `UPDATE public.observations SET value = value + 1 WHERE id = ${CHANGED};
       DELETE FROM public.observations WHERE id = ${DELETED};
       INSERT INTO public.patients (id, nhs_number, family_name, given_name, born) VALUES (9999, '9999999999', 'Extra', 'Row', '2000-01-01');
       UPDATE public.medications SET dose = '999 mg' WHERE patient_id = 7 AND drug = 'drug-6' AND prescribed_at = (SELECT min(prescribed_at) FROM public.medications WHERE patient_id = 7 AND drug = 'drug-6');
       UPDATE public.wards SET name = 'Renamed' WHERE code = (SELECT min(code) FROM public.wards);
       DELETE FROM public.audit_log WHERE ctid = (SELECT min(ctid) FROM public.audit_log);`,
    );
    const [med] = await sql<{ p: string }>(
      'target',
      s.dbs.target,
      `SELECT prescribed_at::text AS p FROM public.medications WHERE dose = '999 mg'`,
    );
    const [ward] = await sql<{ code: string }>('target', s.dbs.target, `SELECT code FROM public.wards WHERE name = 'Renamed'`);
    const { code, result } = await verify();
    expect(code).toBe(1);
    expect(result.ok).toBe(false);
    const found = result.findings.map((f) => [f.table, f.kind, f.key, f.repaired]);
    expect(found).toEqual(
      expect.arrayContaining([
        ['public.observations', 'different', { id: CHANGED }, false],
        ['public.observations', 'missing', { id: DELETED }, false],
        ['public.patients', 'extra', { id: '9999' }, false],
        ['public.medications', 'different', { patient_id: '7', prescribed_at: med!.p, drug: 'drug-6' }, false],
        ['public.wards', 'different', { code: ward!.code }, false],
        ['public.audit_log', 'table', {}, false],
      ]),
    );
    expect(found).toHaveLength(6);
    const [still] = await sql<{ n: string }>('target', s.dbs.target, `SELECT count(*) AS n FROM public.patients WHERE id = 9999`);
    expect(still!.n).toBe('1');
    const text = await cli(['verify', file], s.env);
    expect(text.stdout).toContain(
      `public.observations: 3 ranges, 3,000 rows: 2 rows differ\n  different: id=${CHANGED}\n  missing on target: id=${DELETED}\n`,
    );
    expect(text.stdout).toContain('verify: DIFFERENCES FOUND (run with --repair to re-copy exactly those rows)');
  });

  it('--repair re-copies exactly the differing rows, then checks again', async () => {
    const { code, result } = await verify(
      '--repair',
      '--table',
      'public.observations',
      '--table',
      'patients',
      '--table',
      'public.medications',
      '--table',
      'public.wards',
    );
    expect(code).toBe(0);
    expect(result.findings.every((f) => f.repaired)).toBe(true);
    expect(result.findings).toHaveLength(5);
    await expectTablesMatch(s, {
      'public.observations': 'id',
      'public.patients': 'id',
      'public.medications': 'patient_id, prescribed_at, drug',
      'public.wards': 'code',
    });
    const after = await verify('--table', 'public.observations');
    expect(after.code).toBe(0);
    const events = await sql<{ message: string }>(
      'target',
      s.dbs.target,
      `SELECT message FROM cloudshift.events WHERE kind = 'verify:result' ORDER BY id`,
    );
    expect(events.map((e) => e.message)).toEqual([
      'verify: all tables match; 0 rows repaired',
      'verify: 6 differences remain; 0 rows repaired',
      'verify: 6 differences remain; 0 rows repaired',
      'verify: all tables match; 5 rows repaired',
      'verify: all tables match; 0 rows repaired',
    ]);
  });

  it('--repair copies a table without a key again whole (its rows cannot be told apart), then checks again', async () => {
    await sql('target', s.dbs.target, `DELETE FROM public.audit_log WHERE ctid = (SELECT max(ctid) FROM public.audit_log)`);
    const { code, result } = await verify('--repair', '--table', 'public.audit_log');
    expect(code).toBe(0);
    expect(result.findings.map((f) => [f.table, f.kind, f.repaired])).toEqual([['public.audit_log', 'table', true]]);
    expect(result.tables[0]).toMatchObject({ matched: true, differences: 1, repaired: 1 });
    await expectTablesMatch(s, { 'public.audit_log': 'at, what' });
  });

  it('--sample checks a share of the ranges; an unknown --table is refused', async () => {
    const { result } = await verify('--sample', '34', '--table', 'public.observations');
    expect(result.tables[0]).toMatchObject({ ranges: 3, rangesChecked: 2 });
    expect(result.sampled).toBe(true);
    const bad = await cli(['verify', file, '--table', 'public.nope'], s.env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--table public.nope: not a table of the plan');
    const malformed = await cli(['verify', file, '--table', 'a.b.c'], s.env);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toContain("option '--table <name>' argument 'a.b.c' is invalid. expected a table name, schema.table or table");
  });

  it('--repair of a row other tables reference: its children are kept, no foreign key or trigger fires', async () => {
    const children = `SELECT (SELECT count(*) FROM public.encounters WHERE patient_id = 3) + (SELECT count(*) FROM public.medications WHERE patient_id = 3) AS n`;
    const [before] = await sql<{ n: string }>('target', s.dbs.target, children);
    expect(Number(before!.n)).toBeGreaterThan(0);
    await sql('target', s.dbs.target, `UPDATE public.patients SET family_name = 'Changed' WHERE id = 3`);
    const { code, result } = await verify('--repair', '--table', 'public.patients');
    expect(code).toBe(0);
    expect(result.findings.map((f) => [f.kind, f.key, f.repaired])).toEqual([['different', { id: '3' }, true]]);
    const [after] = await sql<{ n: string }>('target', s.dbs.target, children);
    expect(after!.n).toBe(before!.n);
    const { source, target } = await expectSameRows(s, 'public.patients', 'id');
    expect(target).toBe(source);
  });

  it('names at most 1,000 differing rows per table, however many ranges differ (last: empties a target table)', async () => {
    await sql('target', s.dbs.target, `DELETE FROM public.observations`);
    const { code, result } = await verify('--table', 'public.observations');
    expect(code).toBe(1);
    expect(result.tables[0]).toMatchObject({ ranges: 3, matched: false, differences: 1000 });
    expect(result.findings).toHaveLength(1000);
  });
});
