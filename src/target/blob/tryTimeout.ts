/**
 * A client-side limit on each try of a Blob request. The SDK's retry policy only passes its
 * `tryTimeoutInMs` to the service (the `timeout` query parameter), and no layer below it limits
 * a request: a service or proxy that accepts a request and never answers would hold the copy
 * forever. Placed after the retry policy, this one aborts a try that has no answer in time and
 * fails it as a RestError with code TIMEOUT, which the retry policy retries with its backoff;
 * past its budget the copy stops resumably like for any other Blob failure.
 */
import { RestError, type PipelinePolicy } from '@azure/core-rest-pipeline';

export const TRY_TIMEOUT_POLICY = 'cloudshiftTryTimeout';
/** Long enough for a 4 MiB block over a slow link; a request with no answer by then is taken as lost. */
export const DEFAULT_TRY_TIMEOUT_MS = 60_000;

export function tryTimeoutPolicy(ms: number): PipelinePolicy {
  return {
    name: TRY_TIMEOUT_POLICY,
    async sendRequest(request, next) {
      const outer = request.abortSignal;
      const tries = new AbortController();
      const abort = () => tries.abort();
      outer?.addEventListener('abort', abort);
      const timer = setTimeout(abort, ms);
      request.abortSignal = tries.signal;
      try {
        return await next(request);
      } catch (err) {
        if (!tries.signal.aborted || outer?.aborted) throw err;
        throw new RestError(`no answer from the Blob service within ${ms / 1000} s (TIMEOUT)`, { code: 'TIMEOUT', request });
      } finally {
        clearTimeout(timer);
        outer?.removeEventListener('abort', abort);
        request.abortSignal = outer;
      }
    },
  };
}
