/** The one place a thrown error becomes output and an exit code. */
import { CloudshiftError, ExitCode } from '../errors.js';
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
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  io.stderr.write(`internal error: ${redact(message)}\n`);
  return ExitCode.failed;
}
