/** The dry run's report in text, JSON and GitHub annotation form. */
import type { PreflightReport } from '../../preflight/types.js';
import { formatBytes, formatCount, formatSeconds } from '../../preflight/format.js';
import { githubEscape, type Format } from '../io.js';

const MARK = { pass: 'ok  ', warn: 'warn', fail: 'FAIL' } as const;

export function renderReport(report: PreflightReport, format: Format, planFile: string): string {
  if (format === 'json') {
    const { ok, checks, estimate } = report;
    return `${JSON.stringify({ ok, checks: checks.map(({ id, status, message, subject }) => ({ id, status, message, subject })), estimate }, null, 2)}\n`;
  }
  if (format === 'github') {
    const lines = report.checks
      .filter((c) => c.status !== 'pass')
      .map(
        (c) =>
          `::${c.status === 'fail' ? 'error' : 'warning'} file=${githubEscape(planFile, true)},title=${githubEscape(`${c.id} ${c.subject}`, true)}::${githubEscape(c.message)}`,
      );
    lines.push(`::notice title=cloudshift dry-run::${report.ok ? 'passed' : 'failed'}: ${summary(report)}`);
    return `${lines.join('\n')}\n`;
  }
  const width = Math.max(...report.checks.map((c) => c.id.length), 10);
  const lines = report.checks.map((c) => `${MARK[c.status]}  ${c.id.padEnd(width)}  ${c.subject.padEnd(0)}: ${c.message}`);
  const e = report.estimate;
  lines.push('');
  lines.push(`estimate: ${formatCount(e.rows)} rows, ${formatBytes(e.bytes)}, about ${formatSeconds(e.seconds)} to copy`);
  lines.push(`${report.ok ? 'dry run passed' : 'dry run FAILED'}: ${summary(report)}`);
  return `${lines.join('\n')}\n`;
}

function summary(report: PreflightReport): string {
  const count = (s: string) => report.checks.filter((c) => c.status === s).length;
  return `${count('pass')} passed, ${count('warn')} warnings, ${count('fail')} failed`;
}
