import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWriteFence, liftWriteFence } from '../../src/cutover/writeFence.js';
import type { ObjectLedger, ReplicationObject } from '../../src/sync/objects.js';
import { connectionUrl, freshDatabases, sql, type FreshDatabases } from '../harness/db.js';

let dbs: FreshDatabases;
let client: pg.Client;
beforeAll(async () => {
  dbs = await freshDatabases('fence');
  await sql('source', dbs.source, 'CREATE TABLE public.a (i int); CREATE TABLE public.b (i int)');
  client = new pg.Client({ connectionString: connectionUrl('source', dbs.source) });
  await client.connect();
});
afterAll(async () => {
  await client?.end();
  await dbs.drop();
});

/** What the fence recorded, in order. */
const recorded: string[] = [];
const book: ObjectLedger = {
  record: (obj: ReplicationObject, status) => Promise.resolve(void recorded.push(`${obj.kind} ${status}`)),
};
const table = (name: string) => ({ schema: 'public', name });
/** Whether a write to the table goes through. */
const writable = async (name: string) =>
  sql('source', dbs.source, `INSERT INTO public.${name} VALUES (1)`).then(
    () => true,
    (err: { code?: string }) => (err.code === '25006' ? false : Promise.reject(err)),
  );

describe('write fences', () => {
  it("refuse writes to the plan's tables only, are lifted without dropping a trigger, and fence again", async () => {
    await createWriteFence(client, book, 'source', 'cloudshift', 'ehr', [table('a'), table('b')], 'the target');
    expect([await writable('a'), await writable('b')]).toEqual([false, false]);
    await liftWriteFence(client, book, 'source', 'cloudshift', 'ehr');
    expect([await writable('a'), await writable('b')]).toEqual([true, true]);
    const triggers = await sql(
      'source',
      dbs.source,
      `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'cloudshift_write_fence_ehr'`,
    );
    expect(triggers).toEqual([{ n: 2 }]);
    // A later plan without b: b keeps its trigger from before, which lets writes through.
    await createWriteFence(client, book, 'source', 'cloudshift', 'ehr', [table('a')], 'the target');
    expect([await writable('a'), await writable('b')]).toEqual([false, true]);
    expect(recorded).toEqual([
      'write-fence creating',
      'write-fence created',
      'write-fence dropped',
      'write-fence creating',
      'write-fence created',
    ]);
    await liftWriteFence(client, book, 'source', 'cloudshift', 'ehr');
  });

  it('lifted, also lift the one function an earlier cloudshift fenced every plan with', async () => {
    await sql(
      'source',
      dbs.source,
      `CREATE FUNCTION cloudshift.cloudshift_write_fence() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'fenced' USING ERRCODE = 'read_only_sql_transaction'; END $$;
       CREATE TRIGGER cloudshift_write_fence BEFORE INSERT ON public.b FOR EACH STATEMENT EXECUTE FUNCTION cloudshift.cloudshift_write_fence();`,
    );
    expect(await writable('b')).toBe(false);
    await liftWriteFence(client, book, 'source', 'cloudshift', 'ehr');
    expect(await writable('b')).toBe(true);
  });

  it("of one plan leave another plan's fence as it is", async () => {
    await createWriteFence(client, book, 'source', 'cloudshift', 'ehr', [table('a')], 'the target');
    await createWriteFence(client, book, 'source', 'cloudshift', 'pharmacy', [table('b')], 'the target');
    expect([await writable('a'), await writable('b')]).toEqual([false, false]);
    await liftWriteFence(client, book, 'source', 'cloudshift', 'pharmacy');
    expect([await writable('a'), await writable('b')]).toEqual([false, true]);
    await liftWriteFence(client, book, 'source', 'cloudshift', 'ehr');
  });

  it('fencing again waits for a transaction that wrote while the fence was lifted, so none commits after it', async () => {
    // Table a kept its trigger from the first test: only its function changes, which takes no lock.
    const writer = new pg.Client({ connectionString: connectionUrl('source', dbs.source) });
    await writer.connect();
    try {
      const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await writer.query('BEGIN');
      await writer.query('INSERT INTO public.a VALUES (42)');
      let fenced = false;
      const fence = createWriteFence(client, book, 'source', 'cloudshift', 'ehr', [table('a')], 'the target').then(() => {
        fenced = true;
      });
      // The fence waits on the writer's lock (polled: the wait is the server's to report).
      for (;;) {
        const [w] = await sql<{ n: number }>(
          'source',
          dbs.source,
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`,
          [rows[0]!.pid],
        );
        if (w!.n === 1) break;
        expect(fenced).toBe(false);
      }
      expect(fenced).toBe(false);
      await writer.query('COMMIT');
      await fence;
      expect(await writable('a')).toBe(false);
      expect(await sql('source', dbs.source, 'SELECT i FROM public.a WHERE i = 42')).toEqual([{ i: 42 }]);
    } finally {
      await writer.end();
    }
  });
});
