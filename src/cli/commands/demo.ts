/** `cloudshift demo`: a whole migration on local servers, with progress and the verification summary. */
import { runDemo } from '../../demo/demo.js';
import { ExitCode } from '../../errors.js';
import type { CliIO } from '../io.js';
import { renderReport } from '../render/checks.js';
import { progressRenderer } from '../render/progress.js';
import { renderRunSummary } from '../render/runSummary.js';

export async function demoCommand(io: CliIO, flags: { scale: number; jobs: number }): Promise<number> {
  const renderer = progressRenderer(io.stdout.isTTY ? 'tty' : 'plain', io.stdout, io.stderr);
  let stopped = false;
  const result = await runDemo({
    scale: flags.scale,
    jobs: flags.jobs,
    onStep: (m) => {
      if (m === 'stopping the local servers' && !stopped) {
        renderer.stop();
        stopped = true;
      }
      io.stdout.write(`» ${m}\n`);
    },
    onEvent: (e) => renderer.onEvent(e),
    // Its verdict, or every check when it failed (the demo stops there).
    onPreflight: (report, planFile) => {
      const text = renderReport(report, 'text', planFile);
      io.stdout.write(report.ok ? text.split('\n').slice(-3).join('\n') : text);
    },
    ...(io.signal ? { abortSignal: io.signal } : {}),
  }).finally(() => {
    if (!stopped) renderer.stop();
  });
  if (!result.run) return ExitCode.failed;
  io.stdout.write(renderRunSummary(result.run, result.planFile, false));
  if (result.run.interrupted) return ExitCode.interrupted;
  if (result.run.mismatches > 0) return ExitCode.failed;
  const c = result.cutover;
  if (c) {
    // The catch-up comes before the pause: it is not part of it.
    const catchUp = c.steps.find((s) => s.step === 'caught-up');
    const inPause = c.steps.filter((s) => s !== catchUp).map((s) => `${s.step} ${s.ms} ms`);
    io.stdout.write(
      c.switched
        ? `cut over to the target: write pause ${c.pauseMs} ms (${inPause.join(', ')})${catchUp ? `, after catching up in ${catchUp.ms} ms` : ''}\n`
        : `cutover aborted: ${c.reason ?? 'unknown reason'}\n`,
    );
  }
  const app = result.application;
  if (app) {
    io.stdout.write(
      `the application wrote ${app.transactions} transactions through PgBouncer during the migration: ${app.errors.length} errors, slowest ${app.slowestMs} ms\n`,
    );
    for (const e of app.errors.slice(0, 5)) io.stdout.write(`  error: ${e}\n`);
  }
  return c?.switched && (app?.errors.length ?? 0) === 0 ? ExitCode.ok : ExitCode.failed;
}
