/** The end of `cloudshift run`: per-table totals and what to do next. */
import type { RunResult } from '../../engine/run.js';
import { formatBytes, formatCount, formatSeconds } from '../../preflight/format.js';

/** `advice`: the next command to run (none for the demo, whose servers are gone when it prints). */
export function renderRunSummary(result: RunResult, planFile: string, advice = true): string {
  const lines: string[] = [];
  const next = (text: string) => (advice ? `. ${text}` : '');
  if (result.cutOver && result.alreadyFinished) {
    lines.push(
      `run ${result.runId}: the application runs on the target since its cutover; \`cloudshift rollback ${planFile}\` switches back, \`cloudshift cleanup ${planFile}\` ends the migration`,
    );
  } else if (result.alreadyFinished) lines.push(`run ${result.runId} already finished; nothing to do`);
  const width = Math.max(5, ...result.tables.map((t) => t.table.length));
  lines.push(`${'table'.padEnd(width)}  ${'batches'.padStart(9)}  ${'rows'.padStart(12)}  ${'bytes'.padStart(10)}  verification`);
  for (const t of result.tables) {
    const v =
      t.mismatched > 0 ? `${t.mismatched} MISMATCHED` : t.verified === t.batches ? 'verified' : `${t.verified}/${t.batches} verified`;
    lines.push(
      `${t.table.padEnd(width)}  ${`${t.batches}`.padStart(9)}  ${formatCount(t.rows).padStart(12)}  ${formatBytes(t.bytes).padStart(10)}  ${v}`,
    );
  }
  const sync = result.sync;
  if (sync) {
    const lag = sync.lagMs === null ? 'lag unknown' : `lag ${sync.lagMs} ms`;
    const div = sync.divergences ? `, ${sync.divergences} DIVERGENCES (run cloudshift verify ${planFile} --repair)` : '';
    const did = `${formatCount(sync.transactions)} transactions, ${formatCount(sync.changes)} row changes applied${div}`;
    if (sync.reason === 'synced')
      lines.push(`in sync: applied up to ${sync.applied}, ${lag}; ${did}${next(`Next: cloudshift cutover ${planFile}`)}`);
    else if (sync.reason === 'switched') lines.push(`sync ended at ${sync.applied}: the application was switched to the target; ${did}`);
    else lines.push(`sync stopped at ${sync.applied} (${lag}); ${did}${next(`Resume with: cloudshift run ${planFile}`)}`);
  } else if (result.interrupted) {
    lines.push(`stopped at a safe point: run ${result.runId}${next(`Resume with: cloudshift run ${planFile}`)}`);
  } else if (result.worker) {
    lines.push(
      `worked on run ${result.runId} as a worker: copied ${formatCount(result.worker.batches)} batches; the leader builds the indexes and finishes the run`,
    );
  } else if (!result.alreadyFinished && !sync) {
    lines.push(
      `run ${result.runId} ${result.mismatches ? `finished with ${result.mismatches} mismatched batches` : 'finished: every batch verified'}; ${formatCount(result.rows)} rows, ${formatBytes(result.bytes)} in ${formatSeconds(result.seconds)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
