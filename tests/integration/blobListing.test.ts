import { randomUUID } from 'node:crypto';
import {
  ContainerClient,
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
  RestError,
  StorageSharedKeyCredential,
} from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BlobPlan } from '../../src/plan/defaults.js';
import { createContainerClient } from '../../src/target/blob/client.js';
import type { ListedBlob } from '../../src/target/blob/listing.js';
import { harness } from '../harness/db.js';

const plan = (container: string, endpoint?: string): BlobPlan => ({
  connectionString: undefined,
  account: undefined,
  sas: undefined,
  endpoint,
  container,
});

/** Names a listing must give back exactly: XML-escaped characters, non-ASCII, percent signs, spaces. */
const NAMES = ['a/1 & 2.pdf', 'a/<tag> "q" \'s\'.txt', 'a/é€😀.bin', 'a/100%25 done', 'a/plain', 'a/z', 'b/outside'];

async function all(pages: AsyncIterable<ListedBlob[]>): Promise<{ blobs: ListedBlob[]; pages: number }> {
  const blobs: ListedBlob[] = [];
  let count = 0;
  for await (const page of pages) {
    blobs.push(...page);
    count += 1;
  }
  return { blobs, pages: count };
}

describe('List Blobs read by cloudshift', () => {
  const name = `listing-${randomUUID().slice(0, 8)}`;
  const { connectionString, blobEndpoint } = harness().azurite;
  const sdk = new ContainerClient(connectionString, name);
  beforeAll(async () => {
    await sdk.create();
    for (const [i, n] of NAMES.entries()) await sdk.getBlockBlobClient(n).upload(Buffer.alloc(i * 10, i), i * 10);
    // a blob committed from blocks without a Content-MD5
    const staged = sdk.getBlockBlobClient('a/staged');
    await staged.stageBlock(Buffer.from('block').toString('base64'), Buffer.from('xyz'), 3);
    await staged.commitBlockList([Buffer.from('block').toString('base64')]);
  });
  afterAll(async () => sdk.deleteIfExists());

  it('gives every name, size and MD5 the SDK gives, over several pages', async () => {
    const expected: ListedBlob[] = [];
    for await (const b of sdk.listBlobsFlat({ prefix: 'a/' })) {
      expected.push({
        name: b.name,
        size: b.properties.contentLength ?? -1,
        md5: Buffer.from(b.properties.contentMD5 ?? new Uint8Array()).toString('base64'),
      });
    }
    expect(expected).toHaveLength(NAMES.length); // six under a/, and a/staged
    expect(expected.find((b) => b.name === 'a/staged')?.md5).toBe('');

    const container = createContainerClient(plan(name), { connectionString, sas: undefined });
    const listed = await all(container.listPages('a/', 2));
    expect(listed.blobs).toEqual(expected);
    expect(listed.pages).toBe(4);
  });

  it('works through a SAS (the query already on the container URL) and reports a missing container as the service said', async () => {
    const key = /AccountKey=([^;]+)/.exec(connectionString)![1]!;
    const sas = generateBlobSASQueryParameters(
      { containerName: name, permissions: ContainerSASPermissions.parse('rl'), expiresOn: new Date(Date.now() + 3600_000) },
      new StorageSharedKeyCredential('devstoreaccount1', key),
    ).toString();
    const viaSas = createContainerClient(plan(name, blobEndpoint), { connectionString: undefined, sas });
    expect((await all(viaSas.listPages(''))).blobs.map((b) => b.name)).toEqual([...NAMES.slice(0, 6), 'a/staged', 'b/outside'].sort());

    const missing = createContainerClient(plan(`${name}-missing`), { connectionString, sas: undefined });
    const err = await all(missing.listPages('')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RestError);
    expect((err as RestError).statusCode).toBe(404);
    expect((err as RestError).code).toBe('ContainerNotFound');
  });
});
