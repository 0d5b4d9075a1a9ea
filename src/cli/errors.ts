/** The one place a thrown error becomes output and an exit code. */
import { classifyError } from '../classifyError.js';
import { CloudshiftError, ExitCode } from '../errors.js';
import { PlanInvalidError } from '../plan/parse.js';
import { redact } from '../redact.js';
import { githubEscape, type CliIO, type Format } from './io.js';
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
      const text = `${redact(err.message)}${err.hint ? `\nhint: ${err.hint}` : ''}`;
      io.stdout.write(`::error title=${githubEscape(`cloudshift ${err.code}`, true)}::${githubEscape(text)}\n`);
    } else {
      io.stderr.write(`error: ${redact(err.message)}\n${err.hint ? `hint: ${err.hint}\n` : ''}`);
    }
    return err.exitCode;
  }
  const known = classifyError(err);
  if (known) return reportError(io, known, format);
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
  io.stderr.write(`internal error: ${redact(message)}\n`);
  return ExitCode.failed;
}
