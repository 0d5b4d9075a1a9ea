/** `cloudshift cutover` and `cloudshift rollback`: switch the application, print what happened. */
import { ExitCode } from '../../errors.js';
import { faultHooksFromEnv } from '../../engine/hooks.js';
import { loadPlan } from '../../plan/parse.js';
import { cutover, rollback, type RollbackResult } from '../../cutover/commands.js';
import type { SwitchResult } from '../../cutover/switchOver.js';
import { redact, redactDeep } from '../../redact.js';
import type { CliIO } from '../io.js';

export async function cutoverCommand(io: CliIO, file: string, flags: { json: boolean }): Promise<number> {
  const loaded = await loadPlan(file);
  const result = await cutover(loaded, options(io));
  return print(io, flags.json, result, 'cut over to the target');
}

export async function rollbackCommand(io: CliIO, file: string, flags: { json: boolean; dropTarget: boolean }): Promise<number> {
  const loaded = await loadPlan(file);
  const result: RollbackResult = await rollback(loaded, { ...options(io), dropTarget: flags.dropTarget });
  if (!result.before) return print(io, flags.json, result, 'rolled back to the source');
  if (flags.json) {
    io.stdout.write(`${JSON.stringify({ switched: false, beforeCutover: true, ...result })}\n`);
    return ExitCode.ok;
  }
  const lines = [
    'rolled back before cutover: the application never left the source, which is untouched',
    ...result.cleanup.dropped.map((d) => `dropped ${d.kind} ${d.name} on the ${d.side}`),
    ...result.droppedTables.map((t) => `dropped table ${t} on the target`),
    ...(result.removedBlobs > 0 ? [`removed ${result.removedBlobs} documents from Blob Storage`] : []),
    `run ${result.runId} is ${result.cleanup.runStatus}`,
  ];
  io.stdout.write(`${lines.join('\n')}\n`);
  return ExitCode.ok;
}

function options(io: CliIO) {
  return {
    env: io.env,
    hooks: faultHooksFromEnv(io.env.CLOUDSHIFT_FAULT),
    say: (m: string) => io.stderr.write(`${m}\n`),
  };
}

function print(io: CliIO, json: boolean, r: SwitchResult, done: string): number {
  if (json) {
    io.stdout.write(`${JSON.stringify(redactDeep(r))}\n`);
    return r.switched ? ExitCode.ok : ExitCode.failed;
  }
  const lines: string[] = [];
  if (r.recovered) lines.push(`an interrupted ${r.recovered.kind} was ${r.recovered.outcome} first`);
  if (r.switched) {
    lines.push(
      `${done}: write pause ${r.pauseMs} ms (fence ${r.fenceLsn}${r.syncElsewhere ? ', applied by the syncing `cloudshift run`' : ''})`,
    );
    lines.push(`steps: ${r.steps.map((s) => `${s.step} ${s.ms} ms`).join(', ')}`);
    if (r.quickCheck.length) lines.push(`quick check: newest rows equal in ${r.quickCheck.filter((c) => c.equal).length} tables`);
  } else {
    lines.push(`not switched: ${redact(r.reason ?? 'unknown reason')}`);
  }
  io.stdout.write(`${lines.join('\n')}\n`);
  return r.switched ? ExitCode.ok : ExitCode.failed;
}
