/** `cloudshift cleanup`: drop every slot and publication the run created; end the run. */
import { ExitCode } from '../../errors.js';
import { loadPlan } from '../../plan/parse.js';
import { cleanupRun } from '../../sync/cleanup.js';
import type { CliIO } from '../io.js';

export async function cleanupCommand(io: CliIO, file: string, flags: { json: boolean }): Promise<number> {
  const loaded = await loadPlan(file);
  const result = await cleanupRun(loaded, io.env);
  if (flags.json) {
    io.stdout.write(`${JSON.stringify(result)}\n`);
    return ExitCode.ok;
  }
  const lines = result.dropped.length
    ? result.dropped.map((d) => `dropped ${d.kind} ${d.name} on the ${d.side}`)
    : ['no slot or publication of this run is left on either side'];
  lines.push(`run ${result.runId} is ${result.runStatus}`);
  io.stdout.write(`${lines.join('\n')}\n`);
  return ExitCode.ok;
}
