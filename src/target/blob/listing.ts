/**
 * A List Blobs response, read as it streams in: the name, size and Content-MD5 of each `<Blob>`
 * element as it arrives (memory holds one entry), and the marker of the next page.
 */
export interface ListedBlob {
  name: string;
  size: number;
  /** Base64, as recorded at upload; empty when the blob has no Content-MD5. */
  md5: string;
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
