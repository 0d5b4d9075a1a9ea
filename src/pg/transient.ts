/**
 * Transient or permanent? One table, keyed by SQLSTATE class or code and by errno, decides
 * whether an operation is retried (graphile-worker's RETRYABLE_ERROR_CODES).
 */

const TRANSIENT_SQLSTATE_CLASSES = ['08']; // connection exceptions
const TRANSIENT_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '53300', // too_many_connections
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '55P03', // lock_not_available
]);
const TRANSIENT_ERRNOS = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);

/** SQLSTATEs of a server that went away or would not take the session. */
const CONNECTION_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const CONNECTION_MESSAGE = /Connection terminated|connection is closed|Client has encountered a connection error|terminating connection/i;

/** The error, or one it was caused by, satisfying `test`. */
function anyCause(err: unknown, test: (code: string | undefined, message: string | undefined) => boolean): boolean {
  const seen = new Set<unknown>();
  let e: unknown = err;
  while (e && typeof e === 'object' && !seen.has(e)) {
    seen.add(e);
    const code = (e as { code?: unknown }).code;
    const message = (e as { message?: unknown }).message;
    if (test(typeof code === 'string' ? code : undefined, typeof message === 'string' ? message : undefined)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** The connection was lost or refused (the server or the network), not a statement failing. */
export function isConnectionLost(err: unknown): boolean {
  return anyCause(
    err,
    (code, message) =>
      (code !== undefined &&
        (CONNECTION_SQLSTATES.has(code) ||
          TRANSIENT_ERRNOS.has(code) ||
          (code.length === 5 && TRANSIENT_SQLSTATE_CLASSES.includes(code.slice(0, 2))))) ||
      (message !== undefined && CONNECTION_MESSAGE.test(message)),
  );
}

export function isTransient(err: unknown): boolean {
  return isConnectionLost(err) || anyCause(err, (code) => code !== undefined && TRANSIENT_SQLSTATES.has(code));
}

export interface RetryOptions {
  attempts: number;
  baseDelayMs: number;
  abortSignal?: AbortSignal;
  onRetry?(attempt: number, err: unknown, delayMs: number): void;
}

/** Runs `fn`, retrying transient failures with exponential backoff; permanent ones throw at once. */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= options.attempts || !isTransient(err) || options.abortSignal?.aborted) throw err;
      const delay = options.baseDelayMs * 2 ** (attempt - 1);
      options.onRetry?.(attempt, err, delay);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}
