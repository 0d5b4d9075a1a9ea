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
    await createWriteFence(client, book, 'source', 'cloudshift', [table('a'), table('b')], 'the target');
    expect([await writable('a'), await writable('b')]).toEqual([false, false]);
    await liftWriteFence(client, book, 'source', 'cloudshift');
    expect([await writable('a'), await writable('b')]).toEqual([true, true]);
    const triggers = await sql('source', dbs.source, `SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = 'cloudshift_write_fence'`);
    expect(triggers).toEqual([{ n: 2 }]);
    // A later plan without b: b keeps its trigger from before, which lets writes through.
    await createWriteFence(client, book, 'source', 'cloudshift', [table('a')], 'the target');
    expect([await writable('a'), await writable('b')]).toEqual([false, true]);
    expect(recorded).toEqual([
      'write-fence creating',
      'write-fence created',
      'write-fence dropped',
      'write-fence creating',
      'write-fence created',
    ]);
  });
});
