import { describe, expect, it } from 'vitest';
import { blobName, headerValue, nameMatcher } from '../../src/target/blob/naming.js';

const row = (values: Record<string, string | null>) => ({ get: (c: string) => values[c] ?? null, describe: 'public.documents id=1' });

describe('blob names and header values from a row', () => {
  it('a value never adds or removes a path segment, dots included', () => {
    expect(blobName('p/{a}/{b}', row({ a: 'x/y', b: 'é?.pdf' }))).toBe('p/x%2Fy/%C3%A9%3F.pdf');
    // "." and ".." kept as they are would be folded away by the URL: two rows, one blob
    expect(blobName('p/{a}/{b}', row({ a: '..', b: '.' }))).toBe('p/%2E%2E/%2E');
    expect(blobName('p/{a}/{b}', row({ a: '...x', b: 'v1.2' }))).toBe('p/...x/v1.2');
    // Azure drops the dots a segment ends with: "scan." would be stored as "scan", and the
    // rows "A." and "A" would share one blob
    expect(blobName('p/{a}/{b}', row({ a: 'Radiology Dept.', b: 'scan..' }))).toBe('p/Radiology%20Dept%2E/scan%2E%2E');
    expect(blobName('{a}-x', row({ a: 'A.' }))).not.toBe(blobName('{a}-x', row({ a: 'A' })));
    // as the container sends it: each segment encoded again, so nothing is folded
    const url = new URL('http://h/c');
    url.pathname = `/c/${blobName('p/{a}/{b}', row({ a: '..', b: '1' }))
      .split('/')
      .map(encodeURIComponent)
      .join('/')}`;
    expect(url.pathname).toBe('/c/p/%252E%252E/1');
  });

  it('two rows never run together into one name: a value holds no character the template puts after it', () => {
    const name = (code: string, file: string) => blobName('docs/{code}-{file}', row({ code, file }));
    expect(name('a-b', 'c.pdf')).toBe('docs/a%2Db-c.pdf');
    expect(name('a', 'b-c.pdf')).toBe('docs/a-b-c.pdf');
    // only that character: the last value keeps its own dashes, a dot after a value is encoded in it
    expect(blobName('{id}.{ext}', row({ id: 'v1.2', ext: 'tar.gz' }))).toBe('v1%2E2.tar.gz');
  });

  it('tells the names a template could give from other blobs', () => {
    const ours = nameMatcher('patients/{patient_id}/{id}-{file}');
    const name = blobName('patients/{patient_id}/{id}-{file}', row({ patient_id: '7', id: 'a-b', file: 'x y.pdf' }));
    expect(ours(name)).toBe(true);
    expect(ours('patients/7/12-letter-12.pdf')).toBe(true);
    for (const other of ['patients/readme.txt', 'patients/7/letter.pdf', 'patients/7/8/9-x.pdf', 'scans/7/1-x.pdf', 'patients/7/1-x y.pdf'])
      expect(ours(other), other).toBe(false);
    expect(nameMatcher('{id}.pdf')('..pdf')).toBe(false);
    expect(nameMatcher('{id}.pdf')('%2E.pdf')).toBe(true);
    // A stop character that is a hex digit: escapes in the value are still whole units.
    const hex = '{code}A{n}';
    expect(nameMatcher(hex)(blobName(hex, row({ code: 'x:y', n: '1' })))).toBe(true);
    expect(blobName(hex, row({ code: 'xAy', n: '1' }))).toBe('x%41yA1');
  });

  it('header values are ASCII, characters beyond U+FFFF included', () => {
    expect(headerValue('report 😀 né.pdf')).toBe('report %F0%9F%98%80 n%C3%A9.pdf');
    expect(decodeURIComponent(headerValue('𠀋 scan'))).toBe('𠀋 scan');
  });

  it('a NULL placeholder names the row, the column and the template', () => {
    expect(() => blobName('p/{a}', row({ a: null }))).toThrow(
      'public.documents id=1: column "a" is NULL, but the blob name template needs it',
    );
  });
});
