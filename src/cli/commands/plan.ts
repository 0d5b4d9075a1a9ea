/** `cloudshift plan validate` (offline) and `cloudshift plan schema`. */
import { readFile } from 'node:fs/promises';
import { ExitCode, UsageError } from '../../errors.js';
import { planJsonSchemaText } from '../../plan/jsonSchema.js';
import { planReferenceMarkdown } from '../../plan/reference.js';
import { validatePlanText } from '../../plan/parse.js';
import type { CliIO, Format } from '../io.js';
import { renderProblems } from '../render/problems.js';

export async function validateCommand(io: CliIO, file: string, format: Format): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read plan ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { cause: err });
  }
  const result = validatePlanText(text);
  io.stdout.write(renderProblems(file, result.problems, format));
  return result.valid ? ExitCode.ok : ExitCode.invalid;
}

export function schemaCommand(io: CliIO): number {
  io.stdout.write(planJsonSchemaText());
  return ExitCode.ok;
}

export function referenceCommand(io: CliIO): number {
  io.stdout.write(planReferenceMarkdown());
  return ExitCode.ok;
}
