/**
 * The Blob container cloudshift writes documents to: the SDK's ContainerClient, plus the four
 * requests of the documents' hot path (Put Blob, Put Block, Put Block List, List Blobs) sent as
 * plain REST requests through the client's own pipeline, so with its credential (key, SAS or
 * Entra ID), retries, timeouts and API version.
 *
 * Why not the SDK's operations: for each request they build a client, map the arguments onto
 * headers by an operation spec and map the response back onto a model; for 2,000 documents that
 * cost more client CPU than the HTTP itself (0.8-1.6 s against 0.5 s in an A/B on Azurite), and
 * a List Blobs page of 5,000 blobs is turned into 5,000 models where the sweep needs name, size
 * and MD5. Everything else (properties, downloads, deletes) goes through the SDK.
 */
import { StringDecoder } from 'node:string_decoder';
import { createHttpHeaders, createPipelineRequest, type PipelineResponse, type RawHttpHeadersInput } from '@azure/core-rest-pipeline';
import { ContainerClient, RestError } from '@azure/storage-blob';
import { PreconditionError } from '../../errors.js';
import { ListingReader, type ListedBlob } from './listing.js';
import { tryTimeoutPolicy } from './tryTimeout.js';

/** What to do about a container the credential may not create. */
export const UNCREATABLE_HINT =
  'create the container, or give a credential that may (an account SAS, or the Storage Blob Data Contributor role)';

/** The most List Blobs returns in one page. */
const LIST_PAGE = 5000;

interface ListPage {
  blobs: ListedBlob[];
  /** Where the next page starts; empty on the last. */
  nextMarker: string;
}

/** How a committed blob is described: what Put Blob and Put Block List set. */
export interface BlobProperties {
  contentType: string;
  /** The whole blob's MD5, stored as its Content-MD5 (the service does not check it). */
  md5: Buffer;
  metadata: Record<string, string>;
  tags: Record<string, string>;
  tier: string | undefined;
}

interface Call {
  method: 'GET' | 'PUT';
  /** A blob's name, or null for the container itself. */
  blob: string | null;
  query: string[];
  headers: RawHttpHeadersInput;
  body?: Buffer | string;
  /** The status that means success. */
  expect: number;
  /** Read a successful answer's body as a stream (List Blobs). */
  stream?: boolean;
  abortSignal?: AbortSignal | undefined;
}

export class DocumentContainer extends ContainerClient {
  /** Each try of every request through this client's pipeline is given up after `ms` without an answer, and retried. */
  limitTries(ms: number): void {
    this.storageClientContext.pipeline.addPolicy(tryTimeoutPolicy(ms), { afterPhase: 'Retry' });
  }

  /**
   * Creates the container if it is absent. A credential that may use the container but not make
   * one (a SAS for the container alone) is refused the create (403): the container must be there
   * already, which listing it shows.
   */
  async ensureExists(): Promise<void> {
    try {
      await this.createIfNotExists();
    } catch (err) {
      if (!(err instanceof RestError) || err.statusCode !== 403) throw err;
      if (await this.existsByListing()) return;
      throw new PreconditionError(this.uncreatable(err), { hint: UNCREATABLE_HINT });
    }
  }

  /** Why the container cannot be used: it is absent, and the credential was refused (`refusal`, a 403) what would make it. */
  uncreatable(refusal: RestError): string {
    return `container ${this.containerName} does not exist, and the credential may not create it (HTTP 403 ${refusal.code ?? ''})`.trimEnd();
  }

  /** Whether the container exists, asked as a SAS for the container alone may ask (List Blobs). */
  async existsByListing(abortSignal?: AbortSignal): Promise<boolean> {
    try {
      await this.listPage('', '', 1, abortSignal);
      return true;
    } catch (err) {
      if (err instanceof RestError && err.statusCode === 404) return false;
      throw err;
    }
  }

  /** Put Blob: the whole document in one request, its MD5 checked by the service. */
  async putBlob(name: string, body: Buffer, p: BlobProperties, abortSignal?: AbortSignal): Promise<void> {
    await this.call({
      method: 'PUT',
      blob: name,
      query: [],
      headers: { 'x-ms-blob-type': 'BlockBlob', 'content-md5': p.md5.toString('base64'), ...propertyHeaders(p) },
      body,
      expect: 201,
      abortSignal,
    });
  }

  /** Put Block: one staged block, invisible until a block list commits it. */
  async putBlock(name: string, blockId: string, body: Buffer, md5: Buffer, abortSignal?: AbortSignal): Promise<void> {
    await this.call({
      method: 'PUT',
      blob: name,
      query: ['comp=block', `blockid=${encodeURIComponent(blockId)}`],
      headers: { 'content-md5': md5.toString('base64') },
      body,
      expect: 201,
      abortSignal,
    });
  }

  /** Put Block List: commits the staged blocks, in this order, as the blob. */
  async putBlockList(name: string, blockIds: string[], p: BlobProperties, abortSignal?: AbortSignal): Promise<void> {
    const body = `<?xml version="1.0" encoding="utf-8"?><BlockList>${blockIds.map((id) => `<Latest>${id}</Latest>`).join('')}</BlockList>`;
    await this.call({
      method: 'PUT',
      blob: name,
      query: ['comp=blocklist'],
      headers: { 'content-type': 'application/xml; charset=utf-8', ...propertyHeaders(p) },
      body,
      expect: 201,
      abortSignal,
    });
  }

  /** One page of List Blobs: up to `maxResults` blobs under `prefix`, in name order, from `marker`. */
  private async listPage(prefix: string, marker: string, maxResults: number, abortSignal?: AbortSignal): Promise<ListPage> {
    const response = await this.call({
      method: 'GET',
      blob: null,
      query: [
        'restype=container',
        'comp=list',
        `maxresults=${maxResults}`,
        ...(prefix ? [`prefix=${encodeURIComponent(prefix)}`] : []),
        ...(marker ? [`marker=${encodeURIComponent(marker)}`] : []),
      ],
      headers: {},
      expect: 200,
      stream: true,
      abortSignal,
    });
    const reader = new ListingReader();
    const decoder = new StringDecoder('utf8');
    const blobs: ListedBlob[] = [];
    for await (const chunk of response.readableStreamBody!) blobs.push(...reader.push(decoder.write(chunk as Buffer)));
    blobs.push(...reader.push(decoder.end()));
    return { blobs, nextMarker: reader.nextMarker() };
  }

  /** Every blob under `prefix`, a page at a time. */
  async *listPages(prefix: string, maxResults = LIST_PAGE, abortSignal?: AbortSignal): AsyncGenerator<ListedBlob[]> {
    let marker = '';
    do {
      const page = await this.listPage(prefix, marker, maxResults, abortSignal);
      yield page.blobs;
      marker = page.nextMarker;
    } while (marker);
  }

  private async call(c: Call): Promise<PipelineResponse> {
    const url = new URL(this.url);
    // As the SDK's getBlobClient: each segment of the name encoded, the slashes kept.
    if (c.blob !== null) {
      const container = url.pathname;
      url.pathname = `${container}/${c.blob.split('/').map(encodeURIComponent).join('/')}`;
      // "." and ".." segments would be resolved away, into another container.
      if (!url.pathname.startsWith(`${container}/`)) throw new Error(`blob name "${c.blob}" leaves its container`);
    }
    const query = c.query.join('&');
    const request = createPipelineRequest({
      // The SAS, if any, is already on the container's URL.
      url: query ? `${url.toString()}${url.search ? '&' : '?'}${query}` : url.toString(),
      method: c.method,
      headers: createHttpHeaders({ 'x-ms-version': this.storageClientContext.version, ...c.headers }),
      ...(c.body === undefined ? {} : { body: c.body }),
      // The body of a success is ours to read as a stream; any other answer is read whole.
      ...(c.stream ? { streamResponseStatusCodes: new Set([c.expect]) } : {}),
      // As the SDK's own operations: an http:// endpoint (Azurite) is the plan's to choose.
      allowInsecureConnection: true,
      ...(c.abortSignal ? { abortSignal: c.abortSignal } : {}),
    });
    const response = await this.storageClientContext.sendRequest(request);
    if (response.status === c.expect) return response;
    const code = response.headers.get('x-ms-error-code') ?? undefined;
    const message = /<Message>([^<]*)/.exec(response.bodyAsText ?? '')?.[1]?.split('\n')[0];
    throw new RestError(message ?? `HTTP ${response.status}${code ? ` ${code}` : ''}`, {
      statusCode: response.status,
      ...(code ? { code } : {}),
      request,
      response,
    });
  }
}

/** Content type, Content-MD5, metadata, tags and tier, as the service's headers. */
function propertyHeaders(p: BlobProperties): RawHttpHeadersInput {
  const tags = Object.entries(p.tags);
  return {
    'x-ms-blob-content-type': p.contentType,
    'x-ms-blob-content-md5': p.md5.toString('base64'),
    ...Object.fromEntries(Object.entries(p.metadata).map(([k, v]) => [`x-ms-meta-${k}`, v])),
    ...(tags.length ? { 'x-ms-tags': tags.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&') } : {}),
    ...(p.tier ? { 'x-ms-access-tier': p.tier } : {}),
  };
}
