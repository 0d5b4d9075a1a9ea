import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createDefaultHttpClient, createEmptyPipeline, createPipelineRequest, RestError } from '@azure/core-rest-pipeline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tryTimeoutPolicy } from '../../src/target/blob/tryTimeout.js';

/** A loopback server whose answer to each path a test chooses. */
let server: Server;
let base: string;
let seen: string[] = [];
const routes = new Map<string, (req: IncomingMessage, res: ServerResponse) => void>();

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push(req.url!);
    routes.get(req.url!)?.(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const LIMIT_MS = 200;

function send(path: string, options: { abortSignal?: AbortSignal; stream?: boolean; body?: Buffer } = {}) {
  const pipeline = createEmptyPipeline();
  pipeline.addPolicy(tryTimeoutPolicy(LIMIT_MS));
  const request = createPipelineRequest({
    url: `${base}${path}`,
    allowInsecureConnection: true,
    ...(options.abortSignal ? { abortSignal: options.abortSignal } : {}),
    ...(options.stream ? { streamResponseStatusCodes: new Set([200]) } : {}),
    ...(options.body ? { method: 'PUT' as const, body: options.body } : {}),
  });
  return pipeline.sendRequest(createDefaultHttpClient(), request);
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  for await (const chunk of stream) text += (chunk as Buffer).toString();
  return text;
}

describe('a Blob request try limited by the client', () => {
  it('an answer that never comes fails as a TIMEOUT RestError (which the SDK retries)', async () => {
    routes.set('/never', () => undefined);
    const err = await send('/never').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RestError);
    expect(err).toMatchObject({ code: 'TIMEOUT' });
  });

  it('a request with a body is given time to send it too (32 KiB a second) before it counts as unanswered', async () => {
    routes.set('/upload', (req) => req.resume());
    const started = process.hrtime.bigint();
    const err = await send('/upload', { body: Buffer.alloc(16 * 1024) }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'TIMEOUT' });
    // Timers never fire early: the limit was at least 200 ms + 16 KiB at 32 KiB/s.
    expect(Number(process.hrtime.bigint() - started) / 1e6).toBeGreaterThanOrEqual(LIMIT_MS + 500 - 1);
  });

  it('a streamed answer that stalls after its first bytes fails as a TIMEOUT when read', async () => {
    routes.set('/stall', (_req, res) => {
      res.writeHead(200);
      res.write('first bytes');
    });
    const response = await send('/stall', { stream: true });
    const err = await readAll(response.readableStreamBody!).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'TIMEOUT' });
  });

  it('a streamed answer slower than the limit in all, but never idle that long, is read whole', async () => {
    routes.set('/slow', (_req, res) => {
      res.writeHead(200);
      let n = 0;
      const tick = setInterval(() => {
        res.write(`${n} `);
        if (++n === 6) {
          clearInterval(tick);
          res.end();
        }
      }, LIMIT_MS / 2);
    });
    const response = await send('/slow', { stream: true });
    expect(await readAll(response.readableStreamBody!)).toBe('0 1 2 3 4 5 ');
  });

  it("the caller's abort is not lost: one aborted before the request is never sent, one while its answer streams ends the read", async () => {
    routes.set('/unsent', (_req, res) => res.end('sent'));
    seen = [];
    const err = await send('/unsent', { abortSignal: AbortSignal.abort() }).catch((e: unknown) => e);
    expect((err as Error).name).toBe('AbortError');
    expect(seen).toEqual([]);

    routes.set('/streaming', (_req, res) => {
      res.writeHead(200);
      res.write('part');
    });
    const stop = new AbortController();
    const response = await send('/streaming', { abortSignal: stop.signal, stream: true });
    const reading = readAll(response.readableStreamBody!).catch((e: unknown) => e);
    stop.abort();
    // The HTTP client ends the answer as a reset connection.
    expect(await reading).toMatchObject({ message: 'aborted', code: 'ECONNRESET' });
  });
});
