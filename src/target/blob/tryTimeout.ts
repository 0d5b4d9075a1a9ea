/**
 * A client-side limit on each try of a Blob request. The SDK's retry policy only passes its
 * `tryTimeoutInMs` to the service (the `timeout` query parameter), and no layer below it limits
 * a request: a service or proxy that accepts a request and never answers would hold the copy
 * forever. Placed after the retry policy, this one aborts a try that has no answer in time and
 * fails it as a RestError with code TIMEOUT, which the retry policy retries with its backoff;
 * past its budget the copy stops resumably like for any other Blob failure.
 *
 * The limit is a base plus time for the bytes sent (a slow link still gets a 4 MiB block up),
 * and, for an answer read as a stream after the headers (a listing, a download), the same base
 * for each wait on its next bytes. The caller's own abort (Ctrl-C, a lost lock) reaches the
 * request until its answer is read to the end.
 */
import { Transform, type Readable } from 'node:stream';
import { RestError, type PipelinePolicy, type PipelineRequest } from '@azure/core-rest-pipeline';

export const TRY_TIMEOUT_POLICY = 'cloudshiftTryTimeout';
/** How long a request may wait for an answer, or a streamed answer for its next bytes. */
export const DEFAULT_TRY_TIMEOUT_MS = 60_000;
/** The slowest upload taken for alive: a 4 MiB block gets 128 s more. */
const SLOWEST_BYTES_PER_SECOND = 32 * 1024;

function bodyBytes(request: PipelineRequest): number {
  const body = request.body;
  return Buffer.isBuffer(body) ? body.length : typeof body === 'string' ? Buffer.byteLength(body) : 0;
}

export function tryTimeoutPolicy(ms: number): PipelinePolicy {
  return {
    name: TRY_TIMEOUT_POLICY,
    async sendRequest(request, next) {
      const outer = request.abortSignal;
      // Aborted already: the HTTP client refuses it at once.
      if (outer?.aborted) return next(request);
      const tries = new AbortController();
      let timedOut = false;
      let timer: NodeJS.Timeout | undefined;
      const arm = (limit: number) => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          timedOut = true;
          tries.abort();
        }, limit);
      };
      const abort = () => tries.abort();
      outer?.addEventListener('abort', abort);
      const release = () => {
        clearTimeout(timer);
        outer?.removeEventListener('abort', abort);
      };
      const timeout = () => new RestError(`no answer from the Blob service within ${ms / 1000} s (TIMEOUT)`, { code: 'TIMEOUT', request });
      arm(ms + (bodyBytes(request) / SLOWEST_BYTES_PER_SECOND) * 1000);
      request.abortSignal = tries.signal;
      let response;
      try {
        response = await next(request);
      } catch (err) {
        release();
        throw timedOut && !outer?.aborted ? timeout() : err;
      } finally {
        request.abortSignal = outer;
      }
      const body = response.readableStreamBody as Readable | undefined;
      if (!body) {
        release();
        return response;
      }
      arm(ms);
      const relay = new Transform({
        transform(chunk, _encoding, done) {
          arm(ms);
          done(null, chunk);
        },
      });
      body.on('error', (err) => {
        release();
        relay.destroy(timedOut && !outer?.aborted ? timeout() : err);
      });
      body.on('end', release);
      // A reader that stops early (an error of its own) lets go of the answer too.
      relay.on('close', () => {
        release();
        if (!body.readableEnded) body.destroy();
      });
      body.pipe(relay);
      response.readableStreamBody = relay;
      return response;
    },
  };
}
