import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { frames } from '../../src/sync/replication.js';

describe('replication frames read-ahead', () => {
  it('pauses the stream by bytes waiting as well as by frames, and resumes below half', async () => {
    const stream = new PassThrough();
    const read = frames(stream, 256, 100);
    const first = read.next(); // starts listening
    stream.write(Buffer.alloc(60, 1));
    stream.write(Buffer.alloc(60, 2));
    expect((await first).value).toEqual(Buffer.alloc(60, 1));
    // Two frames are far below 256, but 120 bytes waited: paused; 60 still wait, above half of 100.
    expect(stream.isPaused()).toBe(true);
    expect((await read.next()).value).toEqual(Buffer.alloc(60, 2));
    expect(stream.isPaused()).toBe(false);
    stream.end();
    expect((await read.next()).done).toBe(true);
  });

  it('pauses by frames when they are small', async () => {
    const stream = new PassThrough();
    const read = frames(stream, 4, 1 << 20);
    const first = read.next();
    for (let i = 0; i < 5; i++) stream.write(Buffer.from([i]));
    expect((await first).value).toEqual(Buffer.from([0]));
    expect(stream.isPaused()).toBe(true);
    for (let i = 1; i < 5; i++) expect((await read.next()).value).toEqual(Buffer.from([i]));
    expect(stream.isPaused()).toBe(false);
    stream.end();
  });
});
