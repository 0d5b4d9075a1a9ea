/**
 * `cloudshift report`: a self-contained HTML report of the plan's run (the active one, else the
 * latest), read from the state store in read-only sessions, for change boards and auditors.
 *
 * Only the state store's secret is resolved. The file is written atomically: to a temporary file
 * in the same folder, then renamed over the destination, so a reader never sees half a report and
 * a failure leaves any earlier report in place.
 *
 * No run yet is a PreconditionError (exit 3, "a precondition is not met"): the plan and the
 * command line are valid (so not a usage error, exit 2) and nothing failed verification (exit 1);
 * the report needs a run that does not exist yet, like `run` needs reachable servers.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ExitCode, PreconditionError, UsageError } from '../../errors.js';
import { loadPlan } from '../../plan/parse.js';
import { resolveSecrets } from '../../plan/secrets.js';
import { renderReportHtml } from '../../report/html.js';
import { StateStore } from '../../state/store.js';
import { readHistory } from '../../views/history.js';
import { readOverview } from '../../views/overview.js';
import type { CliIO } from '../io.js';

export interface ReportFlags {
  out: string;
}

export async function reportCommand(io: CliIO, file: string, flags: ReportFlags): Promise<number> {
  const loaded = await loadPlan(file);
  const secrets = resolveSecrets(loaded, io.env, ['state']);
  const store = await StateStore.open({ connectionString: secrets.state, schema: loaded.plan.state.schema, readOnly: true });
  let html: string;
  try {
    const overview = await readOverview(store, loaded);
    if (!overview.run) {
      throw new PreconditionError(`plan ${loaded.plan.name} has no run yet: there is nothing to report`, {
        hint: `check the plan with \`cloudshift dry-run ${file}\`, then start it with \`cloudshift run ${file}\``,
      });
    }
    const history = await readHistory(store, overview.run.id);
    html = renderReportHtml({ overview, history, plan: loaded, generatedAt: new Date() });
  } finally {
    await store.close();
  }
  await writeAtomically(resolve(io.cwd, flags.out), html);
  io.stdout.write(`report written to ${flags.out}\n`);
  return ExitCode.ok;
}

/** Writes to a temporary file next to `path`, flushes it to disk, then renames it over `path`. */
async function writeAtomically(path: string, content: string): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, 'wx', 0o644);
    try {
      await handle.writeFile(content, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new UsageError(`cannot write the report to ${path} (${code})`, {
      cause: err,
      hint: 'give --out a path in an existing, writable folder',
    });
  }
}
