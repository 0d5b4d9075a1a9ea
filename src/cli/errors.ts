/** The one place a thrown error becomes output and an exit code. */
import { CloudshiftError, ConnectError, ExitCode, messageOf } from '../errors.js';
import { isConnectionLost } from '../pg/transient.js';
import { PlanInvalidError } from '../plan/parse.js';
import { redact } from '../redact.js';
import { blobError } from '../target/blob/errors.js';
import type { RestError } from '@azure/storage-blob';
import { githubEscape, type CliIO, type Format } from './io.js';
import { renderProblems } from './render/problems.js';

/** Class 42 SQLSTATEs that are the servers' state, not our SQL: insufficient privilege, a table gone. */
const OPERATOR_42 = new Set(['42501', '42P01']);

export function reportError(io: CliIO, err: unknown, format: Format = 'text'): number {
  if (err instanceof PlanInvalidError) {
    io.stdout.write(renderProblems(err.file, err.problems, format));
    if (format === 'text') io.stderr.write(`error: ${err.message}\n`);
    return err.exitCode;
  }
  if (err instanceof CloudshiftError) {
    if (format === 'json') {
      io.stdout.write(`${JSON.stringify({ error: { code: err.code, message: redact(err.message), hint: err.hint ?? null } })}\n`);
    } else if (format === 'github') {
      const text = `${redact(err.message)}${err.hint ? `\nhint: ${err.hint}` : ''}`;
      io.stdout.write(`::error title=${githubEscape(`cloudshift ${err.code}`, true)}::${githubEscape(text)}\n`);
    } else {
      io.stderr.write(`error: ${redact(err.message)}\n${err.hint ? `hint: ${err.hint}\n` : ''}`);
    }
    return err.exitCode;
  }
  // A server or the network failing mid-command is no bug: said plainly, without a stack. So is a
  // statement PostgreSQL refused for a reason of its own (a lock, a permission, a missing table);
  // an error in our SQL (the rest of class 42) or PostgreSQL's own (XX) keeps its stack: a bug.
  // The Blob service failing past the SDK's retries wherever it was asked (the copy's sweep, live
  // sync's uploads, the cutover's large objects): resumable, as in the batches. Its requests carry x-ms-version.
  // (By name: several copies of the class may be loaded.)
  if (err instanceof Error && err.name === 'RestError' && (err as RestError).request?.headers.has('x-ms-version'))
    return reportError(io, blobError(err as RestError), format);
  if (isConnectionLost(err)) {
    const hint = 'check that the servers answer, then run the same command again';
    return reportError(io, new ConnectError(`a database connection failed: ${messageOf(err)}`, { hint, cause: err }), format);
  }
  const sqlState = (err as { severity?: unknown; code?: unknown } | null)?.severity ? (err as { code?: unknown }).code : undefined;
  if (typeof sqlState === 'string' && (!/^(42|XX)/.test(sqlState) || OPERATOR_42.has(sqlState))) {
    const hint = 'fix what PostgreSQL names, then run the same command again';
    const refused = `PostgreSQL refused a statement: ${messageOf(err)} (SQLSTATE ${sqlState})`;
    // A permission missing or a table gone is a precondition not met; the rest, a statement that failed.
    const exit = OPERATOR_42.has(sqlState) ? ExitCode.precondition : ExitCode.failed;
    return reportError(io, new CloudshiftError('CS_POSTGRES', exit, refused, { hint, cause: err }), format);
  }
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  io.stderr.write(`internal error: ${redact(message)}\n`);
  return ExitCode.failed;
}
