import { createHash } from 'node:crypto';
import { BlobServiceClient, RestError } from '@azure/storage-blob';
import type { BlockBlobUploadOptions } from '@azure/storage-blob';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { connectionUrl, freshContainer, freshDatabases, harness, sql, withClient } from '../harness/db.js';
import type { FreshDatabases } from '../harness/db.js';

type UploadWithMd5 = BlockBlobUploadOptions & { transactionalContentMD5: Uint8Array };

describe('integration harness', () => {
  const created: FreshDatabases[] = [];
  afterAll(async () => {
    await Promise.all(created.map((d) => d.drop()));
  });

  it('runs a PostgreSQL 15 source with logical decoding enabled', async () => {
    const [version] = await sql<{ server_version_num: string }>('source', 'postgres', 'SHOW server_version_num');
    expect(version?.server_version_num).toMatch(/^15/);
    const [wal] = await sql<{ wal_level: string }>('source', 'postgres', 'SHOW wal_level');
    expect(wal?.wal_level).toBe('logical');
    expect(harness().source.version).toBe(15);
  });

  it('runs a PostgreSQL 17 target', async () => {
    const [version] = await sql<{ server_version_num: string }>('target', 'postgres', 'SHOW server_version_num');
    expect(version?.server_version_num).toMatch(/^17/);
    expect(harness().target.version).toBe(17);
  });

  it('initialises both clusters with UTF8 / C', async () => {
    for (const side of ['source', 'target'] as const) {
      const rows = await sql<{ encoding: string; datcollate: string; datctype: string }>(
        side,
        'postgres',
        `SELECT pg_encoding_to_char(encoding) AS encoding, datcollate, datctype
           FROM pg_database WHERE datname = current_database()`,
      );
      expect(rows).toEqual([{ encoding: 'UTF8', datcollate: 'C', datctype: 'C' }]);
    }
  });

  it('creates isolated, writable databases from the templates', async () => {
    const [a, b] = await Promise.all([freshDatabases('harness_a'), freshDatabases('Harness-B!')]);
    if (a === undefined || b === undefined) throw new Error('unreachable');
    created.push(a, b);

    for (const name of [a.source, a.target, b.source, b.target]) {
      expect(name).toMatch(/^[a-z_][a-z0-9_]{0,62}$/);
    }
    expect(new Set([a.source, a.target, b.source, b.target]).size).toBe(4);

    await sql('source', a.source, 'CREATE TABLE t (id int PRIMARY KEY, v text)');
    await sql('source', a.source, 'INSERT INTO t VALUES ($1, $2)', [1, 'from a']);
    await sql('target', a.target, 'CREATE TABLE t (id int PRIMARY KEY, v text)');

    expect(await sql('source', a.source, 'SELECT id, v FROM t')).toEqual([{ id: 1, v: 'from a' }]);
    expect(await sql('target', a.target, 'SELECT count(*)::int AS n FROM t')).toEqual([{ n: 0 }]);
    // Neither b's databases nor the templates see a's table.
    for (const [side, db] of [
      ['source', b.source],
      ['target', b.target],
      ['source', 'cs_template_source'],
      ['target', 'cs_template_target'],
    ] as const) {
      expect(await sql(side, db, `SELECT to_regclass('public.t') AS t`)).toEqual([{ t: null }]);
    }

    // connectionUrl() is usable as-is (the password is URL-encoded).
    const url = connectionUrl('target', b.target);
    expect(url).toMatch(new RegExp(`^postgres://postgres:[^@]+@127\\.0\\.0\\.1:\\d+/${b.target}$`));
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const r = await client.query<{ db: string }>('SELECT current_database() AS db');
      expect(r.rows[0]?.db).toBe(b.target);
    } finally {
      await client.end();
    }

    // drop() works while a session is still connected, and is idempotent.
    await withClient('source', b.source, async (c) => {
      await c.query('SELECT 1');
      await b.drop();
    });
    await b.drop();
    const left = await sql('source', 'postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [b.source]);
    expect(left).toEqual([]);
  });

  it('runs Azurite blob storage in strict mode', async () => {
    const service = BlobServiceClient.fromConnectionString(harness().azurite.connectionString);
    expect(service.url).toContain(harness().azurite.blobEndpoint);
    const container = service.getContainerClient(await freshContainer('Harness Test'));
    await container.create();
    try {
      const data = Buffer.from('hello cloudshift\n');
      const md5 = createHash('md5').update(data).digest();
      // @azure/storage-blob 12.32 honours `transactionalContentMD5` in upload()
      // (sent as Content-MD5 unless contentChecksumAlgorithm says otherwise) but
      // no longer declares it in BlockBlobUploadOptions, hence the widened type.
      const withMd5 = (transactionalContentMD5: Uint8Array): UploadWithMd5 => ({ transactionalContentMD5 });
      const blob = container.getBlockBlobClient('ok.txt');
      const uploaded = await blob.upload(data, data.length, withMd5(md5));
      expect(Buffer.from(uploaded.contentMD5 ?? []).equals(md5)).toBe(true);
      expect((await blob.downloadToBuffer()).toString()).toBe('hello cloudshift\n');

      const wrong = createHash('md5').update('something else').digest();
      const rejected = container.getBlockBlobClient('bad.txt').upload(data, data.length, withMd5(wrong));
      await expect(rejected).rejects.toBeInstanceOf(RestError);
      await expect(rejected).rejects.toMatchObject({ statusCode: 400 });
      expect(await container.getBlockBlobClient('bad.txt').exists()).toBe(false);
    } finally {
      await container.delete();
    }
  });
});
