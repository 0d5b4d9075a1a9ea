/**
 * List Blobs, read as it streams in. The sweep needs three things of each blob (name, size,
 * Content-MD5), where the SDK turns every entry of the XML into a typed model first: for a page of
 * 5,000 blobs that costs several times what the service spends answering. This reads the same
 * response through the container client's own pipeline (its credential, retries and API version)
 * and takes the three fields from each `<Blob>` element as it arrives; memory holds one entry.
 */
import { StringDecoder } from 'node:string_decoder';
import { createHttpHeaders, createPipelineRequest } from '@azure/core-rest-pipeline';
import { ContainerClient, RestError } from '@azure/storage-blob';

/** The most List Blobs returns in one page. */
export const LIST_PAGE = 5000;

export interface ListedBlob {
  name: string;
  size: number;
  /** Base64, as recorded at upload; empty when the blob has no Content-MD5. */
  md5: string;
}

export interface ListPage {
  blobs: ListedBlob[];
  /** Where the next page starts; empty on the last. */
  nextMarker: string;
}

/** The Blob container cloudshift works with: the SDK's client, plus a lean listing. */
export class DocumentContainer extends ContainerClient {
  /** One page of List Blobs: up to `maxResults` blobs under `prefix`, in name order, from `marker`. */
  async listPage(prefix: string, marker: string, maxResults: number, abortSignal?: AbortSignal): Promise<ListPage> {
    const query = [
      'restype=container',
      'comp=list',
      `maxresults=${maxResults}`,
      ...(prefix ? [`prefix=${encodeURIComponent(prefix)}`] : []),
      ...(marker ? [`marker=${encodeURIComponent(marker)}`] : []),
    ].join('&');
    const request = createPipelineRequest({
      url: `${this.url}${this.url.includes('?') ? '&' : '?'}${query}`,
      method: 'GET',
      headers: createHttpHeaders({ 'x-ms-version': this.storageClientContext.version }),
      // The body of a 200 is ours to read as a stream; any other answer is read whole.
      streamResponseStatusCodes: new Set([200]),
      // As the SDK's own operations: an http:// endpoint (Azurite) is the plan's to choose.
      allowInsecureConnection: true,
      ...(abortSignal ? { abortSignal } : {}),
    });
    const response = await this.storageClientContext.sendRequest(request);
    if (response.status !== 200) {
      const code = response.headers.get('x-ms-error-code');
      throw new RestError(`List Blobs answered HTTP ${response.status}${code ? ` ${code}` : ''}`, {
        statusCode: response.status,
        ...(code ? { code } : {}),
        request,
        response,
      });
    }
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
}

/**
 * Takes the blobs out of a List Blobs response given in pieces of any size. Values are XML text
 * (entities decoded); a name the service had to percent-encode (`Encoded="true"`) is decoded.
 */
export class ListingReader {
  private text = '';

  /** The blobs whose element ended in this piece. */
  push(piece: string): ListedBlob[] {
    this.text += piece;
    const blobs: ListedBlob[] = [];
    let done = 0;
    for (;;) {
      const start = this.text.indexOf('<Blob>', done);
      const end = start < 0 ? -1 : this.text.indexOf('</Blob>', start);
      if (end < 0) break;
      blobs.push(blobEntry(this.text.slice(start + '<Blob>'.length, end)));
      done = end + '</Blob>'.length;
    }
    this.text = this.text.slice(done);
    return blobs;
  }

  /** After the last piece: the response's NextMarker (empty when it was the last page). */
  nextMarker(): string {
    if (!this.text.includes('</EnumerationResults>')) throw new Error('List Blobs response ended early');
    const m = /<NextMarker>([^<]*)<\/NextMarker>/.exec(this.text);
    return m ? xmlText(m[1]!) : '';
  }
}

function blobEntry(xml: string): ListedBlob {
  const name = /<Name(\s+Encoded="(true|false)")?\s*>([^<]*)<\/Name>/.exec(xml);
  const size = /<Content-Length>(\d+)<\/Content-Length>/.exec(xml);
  if (!name || !size) throw new Error(`List Blobs returned a blob without ${name ? 'Content-Length' : 'Name'}`);
  const text = xmlText(name[3]!);
  const md5 = /<Content-MD5>([^<]*)<\/Content-MD5>/.exec(xml)?.[1] ?? '';
  return {
    name: name[2] === 'true' ? decodeURIComponent(text) : text,
    size: Number(size[1]),
    md5: md5 ? Buffer.from(xmlText(md5), 'base64').toString('base64') : '',
  };
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function xmlText(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (whole, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(Number(e.slice(1)));
    return ENTITIES[e] ?? whole;
  });
}
