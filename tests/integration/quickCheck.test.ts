import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUICK_ROWS, quickCheck } from '../../src/cutover/quickCheck.js';
import { tableTasks } from '../../src/engine/planBatches.js';
import type { TableTask } from '../../src/engine/tableTask.js';
import { connect } from '../../src/pg/connect.js';
import { applyDefaults } from '../../src/plan/defaults.js';
import { validatePlanText } from '../../src/plan/parse.js';
import { connectionUrl, freshDatabases, sql, type FreshDatabases } from '../harness/db.js';

/** Tables of several key shapes, the same rows on both sides (`c` filtered by the plan's where). */
const TABLES = `
CREATE TABLE public.a (id bigint PRIMARY KEY, v text, f float8, at timestamptz);
INSERT INTO public.a SELECT g, 'row ' || g, g / 3.0, '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 3000) g;
CREATE TABLE public.b (region text COLLATE "und-x-icu", n int, note text, PRIMARY KEY (region, n));
INSERT INTO public.b SELECT r, g, 'ward ' || g FROM unnest(ARRAY['Ärzte', 'north', 'North', 'z']) r, generate_series(1, 400) g;
CREATE TABLE public.c (id int PRIMARY KEY, v text);
CREATE TABLE public.empty (id int PRIMARY KEY);
CREATE TABLE public.small (id int PRIMARY KEY, v text);
INSERT INTO public.small SELECT g, 's' || g FROM generate_series(10, 20) g;
CREATE TABLE public.odd (r int, k1 int, note text, PRIMARY KEY (k1, r));
INSERT INTO public.odd SELECT g, 7, 'odd' FROM generate_series(1, 1500) g;
CREATE TABLE public.keyless (x int);
INSERT INTO public.keyless VALUES (1);
`;

const PLAN = `version: 1
name: quick
source: { postgres: "\${env:SOURCE_DATABASE_URL}" }
target: { postgres: "\${env:TARGET_DATABASE_URL}" }
tables:
  - name: public.a
  - name: public.b
  - name: public.c
    where: "id % 2 = 0"
  - name: public.empty
  - name: public.small
  - name: public.odd
  - name: public.keyless
`;

describe('the quick check inside the cutover pause', () => {
  let dbs: FreshDatabases;
  let source: pg.Client;
  let target: pg.Client;
  let tasks: TableTask[];
  /** Statements each side was sent by the last quickCheck. */
  const sent = { source: 0, target: 0 };

  const counted = (client: pg.Client, side: keyof typeof sent) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      sent[side] += 1;
      return query(...args);
    };
    return client;
  };

  const check = async () => {
    sent.source = 0;
    sent.target = 0;
    const results = await quickCheck(source, target, tasks, 30_000);
    return Object.fromEntries(results.map((r) => [r.table, `${r.rows} ${r.equal ? 'equal' : 'DIFFERENT'}`]));
  };

  beforeAll(async () => {
    dbs = await freshDatabases('quick');
    await sql('source', dbs.source, `${TABLES} INSERT INTO public.c SELECT g, 'c' || g FROM generate_series(1, 4000) g;`);
    await sql('target', dbs.target, `${TABLES} INSERT INTO public.c SELECT g, 'c' || g FROM generate_series(2, 4000, 2) g;`);
    source = counted(await connect({ role: 'source', connectionString: connectionUrl('source', dbs.source) }), 'source');
    target = counted(await connect({ role: 'target', connectionString: connectionUrl('target', dbs.target) }), 'target');
    const parsed = validatePlanText(PLAN);
    if (!parsed.valid) throw new Error('test plan invalid');
    tasks = await tableTasks(source, applyDefaults(parsed.input));
  });
  afterAll(async () => {
    await source?.end();
    await target?.end();
    await dbs?.drop();
  });

  it('hashes the newest rows of every keyed table in one statement per side, whatever the number of tables', async () => {
    expect(await check()).toEqual({
      'public.a': `${QUICK_ROWS} equal`,
      'public.b': `${QUICK_ROWS} equal`,
      'public.c': `${QUICK_ROWS} equal`,
      'public.empty': '0 equal',
      'public.small': '11 equal',
      'public.odd': `${QUICK_ROWS} equal`,
    });
    expect(sent).toEqual({ source: 1, target: 1 });
  });

  it('finds a changed row among the newest, and a row the target has beyond the source', async () => {
    await sql('target', dbs.target, `UPDATE public.a SET f = f + 1e-12 WHERE id = 2990`);
    await sql('target', dbs.target, `INSERT INTO public.b VALUES ('zz', 1, 'only here')`);
    await sql('target', dbs.target, `INSERT INTO public.empty VALUES (1)`);
    // A table smaller than the tail is compared whole: a row below the source's first counts too.
    await sql('target', dbs.target, `INSERT INTO public.small VALUES (1, 'stale')`);
    try {
      expect(await check()).toEqual({
        'public.a': `${QUICK_ROWS} DIFFERENT`,
        'public.b': `${QUICK_ROWS} DIFFERENT`,
        'public.c': `${QUICK_ROWS} equal`,
        'public.empty': '0 DIFFERENT',
        'public.small': '11 DIFFERENT',
        'public.odd': `${QUICK_ROWS} equal`,
      });
    } finally {
      await sql(
        'target',
        dbs.target,
        `UPDATE public.a SET f = 2990 / 3.0 WHERE id = 2990; DELETE FROM public.b WHERE region = 'zz'; DELETE FROM public.empty; DELETE FROM public.small WHERE id = 1`,
      );
    }
    expect(Object.values(await check()).every((r) => r.endsWith(' equal'))).toBe(true);
  });

  it('is bounded by the time it is given: a side that takes longer is cancelled', async () => {
    const blocker = await connect({ role: 'source', connectionString: connectionUrl('source', dbs.source) });
    try {
      // A writer holding a table locked keeps the source's statement waiting past its bound.
      await blocker.query('BEGIN; LOCK public.a IN ACCESS EXCLUSIVE MODE');
      sent.source = 0;
      await expect(quickCheck(source, target, tasks, 300)).rejects.toMatchObject({ code: '57014' });
      expect(sent.source).toBe(1);
    } finally {
      await blocker.end();
    }
    // The bound is gone with the statement: the next check runs as long as it needs.
    expect(await source.query('SHOW statement_timeout')).toMatchObject({ rows: [{ statement_timeout: '0' }] });
  });

  it('finds a row the target lacks, and leaves alone what is older than the newest rows (that is verify)', async () => {
    await sql('target', dbs.target, `DELETE FROM public.c WHERE id = 3998; UPDATE public.a SET v = 'old and changed' WHERE id = 5`);
    try {
      expect(await check()).toMatchObject({ 'public.a': `${QUICK_ROWS} equal`, 'public.c': `${QUICK_ROWS} DIFFERENT` });
    } finally {
      await sql('target', dbs.target, `INSERT INTO public.c VALUES (3998, 'c3998'); UPDATE public.a SET v = 'row 5' WHERE id = 5`);
    }
  });
});
