/**
 * What a thrown error is, as cloudshift reports it: the CLI prints it with its exit code, and
 * `run` records it in the run's events. null: none of ours, nor a server's (a bug).
 */
import type { RestError } from '@azure/storage-blob';
import { CloudshiftError, ConnectError, ExitCode, messageOf } from './errors.js';
import { isConnectionLost } from './pg/transient.js';
import { blobError } from './target/blob/errors.js';

/** Class 42 SQLSTATEs that are the servers' state, not our SQL: insufficient privilege, a table gone. */
const OPERATOR_42 = new Set(['42501', '42P01']);

export function classifyError(err: unknown): CloudshiftError | null {
  if (err instanceof CloudshiftError) return err;
  // A server or the network failing mid-command is no bug: said plainly, without a stack. So is a
  // statement PostgreSQL refused for a reason of its own (a lock, a permission, a missing table);
  // an error in our SQL (the rest of class 42) or PostgreSQL's own (XX) keeps its stack: a bug.
  // The Blob service failing past the SDK's retries wherever it was asked (the copy's sweep, live
  // sync's uploads, the cutover's large objects): resumable, as in the batches. Its requests carry x-ms-version.
  // (By name: several copies of the class may be loaded.)
  if (err instanceof Error && err.name === 'RestError' && (err as RestError).request?.headers.has('x-ms-version'))
    return blobError(err as RestError);
  if (isConnectionLost(err)) {
    const hint = 'check that the servers answer, then run the same command again';
    return new ConnectError(`a database connection failed: ${messageOf(err)}`, { hint, cause: err });
  }
  const sqlState = (err as { severity?: unknown; code?: unknown } | null)?.severity ? (err as { code?: unknown }).code : undefined;
  if (typeof sqlState === 'string' && (!/^(42|XX)/.test(sqlState) || OPERATOR_42.has(sqlState))) {
    const hint = 'fix what PostgreSQL names, then run the same command again';
    const refused = `PostgreSQL refused a statement: ${messageOf(err)} (SQLSTATE ${sqlState})`;
    // A permission missing or a table gone is a precondition not met; the rest, a statement that failed.
    const exit = OPERATOR_42.has(sqlState) ? ExitCode.precondition : ExitCode.failed;
    return new CloudshiftError('CS_POSTGRES', exit, refused, { hint, cause: err });
  }
  return null;
}
