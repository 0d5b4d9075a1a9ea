/** The one place a thrown error becomes output and an exit code. */
import { CloudshiftError, ExitCode, messageOf } from '../errors.js';
import { isTransient } from '../pg/transient.js';
import { PlanInvalidError } from '../plan/parse.js';
import { redact } from '../redact.js';
import type { CliIO, Format } from './io.js';
import { renderProblems } from './render/problems.js';

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
      io.stdout.write(`::error title=cloudshift ${err.code}::${redact(err.message).replace(/\n/g, '%0A')}\n`);
    } else {
      io.stderr.write(`error: ${redact(err.message)}\n${err.hint ? `hint: ${err.hint}\n` : ''}`);
    }
    return err.exitCode;
  }
  // A server or the network failing mid-command is no bug: said plainly, without a stack.
  const sqlState = (err as { code?: unknown; severity?: unknown } | null)?.severity ? (err as { code?: string }).code : undefined;
  if (isTransient(err) || sqlState !== undefined) {
    const lost = isTransient(err);
    return reportError(
      io,
      new CloudshiftError(
        lost ? 'CS_CONNECTION' : 'CS_POSTGRES',
        lost ? ExitCode.precondition : ExitCode.failed,
        `${lost ? 'a database connection failed' : 'PostgreSQL refused a statement'}: ${messageOf(err)}${sqlState ? ` (SQLSTATE ${sqlState})` : ''}`,
        {
          hint: lost
            ? 'check that the servers answer, then run the same command again'
            : 'fix what PostgreSQL names, then run the same command again',
        },
      ),
      format,
    );
  }
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  io.stderr.write(`internal error: ${redact(message)}\n`);
  return ExitCode.failed;
}
