/** `cloudshift dry-run`: read-only preflight for CI and for humans. */
import { ExitCode } from '../../errors.js';
import { loadPlan } from '../../plan/parse.js';
import { parseDurationMs } from '../../plan/units.js';
import { runPreflight } from '../../preflight/run.js';
import type { CliIO, Format } from '../io.js';
import { renderReport } from '../render/checks.js';

export interface DryRunFlags {
  format: Format;
  connectTimeout: string;
  longTransactions: string;
}

export async function dryRunCommand(io: CliIO, file: string, flags: DryRunFlags): Promise<number> {
  const loaded = await loadPlan(file);
  const report = await runPreflight(loaded, {
    env: io.env,
    connectTimeoutMs: parseDurationMs(flags.connectTimeout),
    longTransactionMs: parseDurationMs(flags.longTransactions),
  });
  io.stdout.write(renderReport(report, flags.format, file));
  if (report.unreachable) return ExitCode.precondition;
  return report.ok ? ExitCode.ok : ExitCode.failed;
}
