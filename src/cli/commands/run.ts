/** `cloudshift run`: copy the plan's tables in verified batches; resumable. */
import { ExitCode } from '../../errors.js';
import { faultHooksFromEnv } from '../../engine/hooks.js';
import { runMigration } from '../../engine/run.js';
import { loadPlan } from '../../plan/parse.js';
import type { CliIO } from '../io.js';
import { progressRenderer } from '../render/progress.js';
import { renderRunSummary } from '../render/runSummary.js';

export interface RunFlags {
  jobs?: number;
  blobConcurrency?: number;
  force: boolean;
  json: boolean;
  until?: 'synced';
  workerOnly?: boolean;
  maxWorkers?: number;
}

export async function runCommand(io: CliIO, file: string, flags: RunFlags): Promise<number> {
  const loaded = await loadPlan(file);
  const renderer = progressRenderer(flags.json ? 'json' : io.stdout.isTTY ? 'tty' : 'plain', io.stdout, io.stderr);
  let result;
  try {
    result = await runMigration(loaded, {
      env: io.env,
      force: flags.force,
      ...(flags.jobs === undefined ? {} : { jobs: flags.jobs }),
      ...(flags.blobConcurrency === undefined ? {} : { blobConcurrency: flags.blobConcurrency }),
      ...(flags.until ? { until: flags.until } : {}),
      ...(flags.workerOnly ? { workerOnly: true } : {}),
      ...(flags.maxWorkers === undefined ? {} : { maxWorkers: flags.maxWorkers }),
      hooks: faultHooksFromEnv(io.env.CLOUDSHIFT_FAULT),
      onEvent: (e) => renderer.onEvent(e),
      ...(io.signal ? { abortSignal: io.signal } : {}),
    });
  } finally {
    renderer.stop();
  }
  if (flags.json) io.stdout.write(`${JSON.stringify({ type: 'run:result', ...result })}\n`);
  else io.stdout.write(renderRunSummary(result, file));
  if (result.interrupted) return ExitCode.interrupted;
  return result.mismatches > 0 || (result.sync?.divergences ?? 0) > 0 ? ExitCode.failed : ExitCode.ok;
}
