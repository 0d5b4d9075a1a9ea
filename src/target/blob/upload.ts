/**
 * Uploads one document to a block blob without holding it whole in memory. A document smaller
 * than one block goes up in one Put Blob; a larger one as staged blocks of `blockSize` bytes with
 * deterministic, equal-length block ids (a retried upload rewrites the same blocks), up to
 * `blockConcurrency` in flight, then one commit. Every request carries the MD5 of its bytes,
 * which the service checks; the whole document's MD5 is set as the blob's Content-MD5 at commit
 * (the service stores but never checks it) and returned with its SHA-256 for the state store.
 * Until the commit, staged blocks are invisible: no half-written blob can be seen.
 */
import { createHash } from 'node:crypto';
import PQueue from 'p-queue';
import type { BlobGetPropertiesResponse, BlockBlobTier, ContainerClient } from '@azure/storage-blob';
import type { BlobProperties, DocumentContainer } from './container.js';

export interface DocumentContent {
  /** Bytes [offset, offset + length); fewer at the end of the document. */
  read(offset: number, length: number): Promise<Buffer>;
}

export interface UploadSettings {
  blockSize: number;
  blockConcurrency: number;
  contentType: string;
  metadata: Record<string, string>;
  tags: Record<string, string>;
  tier: BlockBlobTier | undefined;
  abortSignal?: AbortSignal;
}

export interface Uploaded {
  size: number;
  /** Base64, as Azure reports Content-MD5. */
  md5: string;
  /** Hex. */
  sha256: string;
}

export const DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024;
/** Blocks of 4 MiB, two of a document staged at once: what every upload uses. */
export const DEFAULT_BLOCKS: Pick<UploadSettings, 'blockSize' | 'blockConcurrency'> = {
  blockSize: DEFAULT_BLOCK_SIZE,
  blockConcurrency: 2,
};

export function blockId(index: number): string {
  return Buffer.from(`cloudshift-block-${index.toString().padStart(8, '0')}`).toString('base64');
}

const md5Of = (b: Buffer) => createHash('md5').update(b).digest();

export async function uploadDocument(
  container: DocumentContainer,
  name: string,
  content: DocumentContent,
  s: UploadSettings,
): Promise<Uploaded> {
  const properties = (md5: Buffer): BlobProperties => ({
    contentType: s.contentType,
    md5,
    metadata: s.metadata,
    tags: s.tags,
    tier: s.tier,
  });
  const first = await content.read(0, s.blockSize);
  if (first.length < s.blockSize) {
    const digest = md5Of(first);
    await container.putBlob(name, first, properties(digest), s.abortSignal);
    return { size: first.length, md5: digest.toString('base64'), sha256: createHash('sha256').update(first).digest('hex') };
  }
  const md5 = createHash('md5');
  const sha = createHash('sha256');
  const queue = new PQueue({ concurrency: s.blockConcurrency });
  const ids: string[] = [];
  let failure: unknown = null;
  let size = 0;
  const stage = (chunk: Buffer, index: number) => {
    ids.push(blockId(index));
    void queue
      .add(() => container.putBlock(name, blockId(index), chunk, md5Of(chunk), s.abortSignal))
      .catch((err: unknown) => {
        failure ??= err;
      });
  };
  let chunk = first;
  for (let index = 0; chunk.length > 0; index += 1) {
    md5.update(chunk);
    sha.update(chunk);
    size += chunk.length;
    stage(chunk, index);
    if (chunk.length < s.blockSize || failure !== null) break;
    // Bounded memory: read the next block only when a staging slot is free.
    await queue.onSizeLessThan(1);
    chunk = await content.read(size, s.blockSize);
  }
  await queue.onIdle();
  if (failure !== null) throw failure;
  const digest = md5.digest();
  await container.putBlockList(name, ids, properties(digest), s.abortSignal);
  return { size, md5: digest.toString('base64'), sha256: sha.digest('hex') };
}

/** What `request` answers, or null when the blob is not there (404). */
async function unless404<T>(request: Promise<T>): Promise<T | null> {
  try {
    return await request;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return null;
    throw err;
  }
}

const md5Text = (p: BlobGetPropertiesResponse) => Buffer.from(p.contentMD5 ?? new Uint8Array()).toString('base64');

/** A blob as its properties state it: its size and MD5 (base64), and the rest for blobMatches. */
export interface StatedBlob {
  size: number;
  md5: string;
  properties: BlobGetPropertiesResponse;
}

/** The blob named `name` as it states itself, or null when there is none. */
export async function blobDigest(container: ContainerClient, name: string, abortSignal?: AbortSignal): Promise<StatedBlob | null> {
  const p = await unless404(container.getBlockBlobClient(name).getProperties(abortSignal ? { abortSignal } : {}));
  return p && { size: p.contentLength ?? 0, md5: md5Text(p), properties: p };
}

/**
 * The blob exists with the size and MD5 recorded when it was uploaded and, when `settings` are
 * given, the content type, metadata, tags and tier they set (a row's columns, or the plan's tier,
 * may have changed since; the tags cost a request of their own, made only when the plan sets any).
 * Its `properties`, when they were just read, are not asked for again.
 */
export async function blobMatches(
  container: ContainerClient,
  doc: { name: string; size: number; md5: string; properties?: BlobGetPropertiesResponse },
  settings?: Pick<UploadSettings, 'contentType' | 'metadata' | 'tags' | 'tier'>,
): Promise<boolean> {
  const blob = container.getBlockBlobClient(doc.name);
  // Asked for just before (a blob found by name): not asked again.
  const p = doc.properties ?? (await unless404(blob.getProperties()));
  const same = p !== null && p.contentLength === doc.size && md5Text(p) === doc.md5;
  if (!same || !settings) return same;
  // Metadata names are case-insensitive: compared lower-cased; tag names are not.
  const entries = (m: Record<string, string>, fold: boolean) =>
    JSON.stringify(
      Object.entries(m)
        .map(([k, v]) => [fold ? k.toLowerCase() : k, v])
        .sort(([a], [b]) => (a! < b! ? -1 : a! > b! ? 1 : 0)),
    );
  if (p.contentType !== settings.contentType || entries(p.metadata ?? {}, true) !== entries(settings.metadata, true)) return false;
  // No tier in the plan: whatever the account's default is.
  if (settings.tier !== undefined && p.accessTier !== settings.tier) return false;
  if (Object.keys(settings.tags).length === 0) return true;
  const tags = await unless404(blob.getTags());
  return tags !== null && entries(tags.tags, false) === entries(settings.tags, false);
}
