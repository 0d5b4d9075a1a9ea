/** Plan problems in text, JSON and GitHub annotation form. */
import type { PlanProblem } from '../../plan/parse.js';
import { githubEscape, type Format } from '../io.js';

export function renderProblems(file: string, problems: PlanProblem[], format: Format): string {
  if (format === 'json') {
    return `${JSON.stringify({ valid: problems.length === 0, errors: problems.map(({ path, line, column, message }) => ({ path, line, column, message })) }, null, 2)}\n`;
  }
  if (format === 'github') {
    return problems
      .map(
        (p) =>
          `::error file=${githubEscape(file, true)},line=${p.line},col=${p.column},title=${githubEscape(`plan ${p.path || 'file'}`, true)}::${githubEscape(`${p.path ? `${p.path}: ` : ''}${p.message}`)}\n`,
      )
      .join('');
  }
  if (problems.length === 0) return `${file}: valid\n`;
  return problems.map((p) => `${file}:${p.line}:${p.column}: ${p.path ? `${p.path}: ` : ''}${p.message}\n`).join('');
}
