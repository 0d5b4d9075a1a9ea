import { describe, expect, it } from 'vitest';
import { ListingReader } from '../../src/target/blob/listing.js';

/** A List Blobs response as the service writes it, with the parts a reader must step over. */
const RESPONSE = `<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="https://acct.blob.core.windows.net/" ContainerName="docs">
  <Prefix>patients/</Prefix><MaxResults>3</MaxResults>
  <Blobs>
    <Blob><Name>patients/1/a&amp;b &lt;c&gt; &quot;d&quot; &apos;e&apos; &#233;&#x20AC;.pdf</Name>
      <Properties><Creation-Time>Tue, 24 Nov 2026 03:00:00 GMT</Creation-Time><Content-Length>1234</Content-Length>
      <Content-Type>application/pdf</Content-Type><Content-MD5>1B2M2Y8AsgTpgAmY7PhCfg==</Content-MD5><BlobType>BlockBlob</BlobType></Properties>
      <OrMetadata /></Blob>
    <Blob><Name Encoded="true">patients%2F2%2F%01control.bin</Name>
      <Properties><Content-Length>0</Content-Length><Content-MD5 /></Properties></Blob>
    <Blob><Name>patients/3/é.txt</Name><Properties><Content-Length>5</Content-Length></Properties></Blob>
  </Blobs>
  <NextMarker>2!72!MDAwMDE&amp;xIQ--</NextMarker>
</EnumerationResults>`;

const EXPECTED = [
  { name: `patients/1/a&b <c> "d" 'e' é€.pdf`, size: 1234, md5: '1B2M2Y8AsgTpgAmY7PhCfg==' },
  { name: 'patients/2/\u0001control.bin', size: 0, md5: '' },
  { name: 'patients/3/é.txt', size: 5, md5: '' },
];

describe('ListingReader', () => {
  it.each([1, 2, 7, 64, 100_000])('takes name, size and MD5 of every blob whatever the pieces (%i characters)', (size) => {
    const reader = new ListingReader();
    const got = [];
    for (let at = 0; at < RESPONSE.length; at += size) got.push(...reader.push(RESPONSE.slice(at, at + size)));
    expect(got).toEqual(EXPECTED);
    expect(reader.nextMarker()).toBe('2!72!MDAwMDE&xIQ--');
  });

  it('reads an empty last page', () => {
    const reader = new ListingReader();
    expect(reader.push('<?xml version="1.0"?><EnumerationResults><Blobs /><NextMarker /></EnumerationResults>')).toEqual([]);
    expect(reader.nextMarker()).toBe('');
  });

  it('refuses a response cut short, and an entry without a size', () => {
    const cut = new ListingReader();
    expect(cut.push(RESPONSE.slice(0, RESPONSE.indexOf('<NextMarker>')))).toHaveLength(3);
    expect(() => cut.nextMarker()).toThrow(/ended early/);
    expect(() => new ListingReader().push('<Blob><Name>x</Name><Properties /></Blob>')).toThrow(/without Content-Length/);
  });
});
