/**
 * The command line: parses arguments, calls the library, prints, returns the exit code. Nothing
 * here decides anything about a migration.
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { ExitCode, UsageError } from '../errors.js';
import { isDuration, parseDurationMs } from '../plan/units.js';
import { isQualifiedName } from '../plan/names.js';
import { MAX_SCALE } from '../demo/dataset.js';
import { toolVersion } from '../version.js';
import { demoCommand } from './commands/demo.js';
import { dryRunCommand } from './commands/dryRun.js';
import { runCommand } from './commands/run.js';
import { statusCommand } from './commands/status.js';
import { cleanupCommand } from './commands/cleanup.js';
import { cutoverCommand, rollbackCommand } from './commands/switch.js';
import { runGuard } from '../cutover/guard.js';
import { verifyCommand } from './commands/verify.js';
import { reportCommand } from './commands/report.js';
import { provisionCommand } from './commands/provision.js';
import { referenceCommand, schemaCommand, validateCommand } from './commands/plan.js';
import { reportError } from './errors.js';
import { FORMATS, type CliIO, type Format } from './io.js';

const formatOption = () => new Option('--format <format>', 'output format').choices(FORMATS).default('text');

function durationArg(value: string): string {
  // Above zero: a connect timeout of 0 would wait for ever (node-postgres), an interval of 0 spin.
  if (!isDuration(value) || parseDurationMs(value) <= 0)
    throw new InvalidArgumentError('expected a duration above zero such as 500ms, 10s or 2m');
  return value;
}

export function buildProgram(io: CliIO, setExit: (code: number) => void): Command {
  const program = new Command('cloudshift')
    .description('Move a live PostgreSQL database to Azure (Database for PostgreSQL + Blob Storage) with no downtime.')
    .version(toolVersion, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    // A fixed help width keeps the README's generated command reference stable.
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      getOutHelpWidth: () => 100,
      getErrHelpWidth: () => 100,
    })
    .exitOverride();

  const plan = program.command('plan').description('work with plan files').exitOverride();
  plan
    .command('validate')
    .description('check a plan offline (no connections): every problem with file, line, column and path')
    .argument('<plan>', 'plan file (YAML)')
    .addOption(formatOption())
    .exitOverride()
    .action(async (file: string, opts: { format: Format }) => {
      try {
        setExit(await validateCommand(io, file, opts.format));
      } catch (err) {
        setExit(reportError(io, err, opts.format));
      }
    });
  plan
    .command('schema')
    .description('print the plan JSON Schema (for editors: # yaml-language-server: $schema=...)')
    .exitOverride()
    .action(() => setExit(schemaCommand(io)));
  plan
    .command('reference')
    .description('print the plan reference (every field, its type and meaning) as Markdown')
    .exitOverride()
    .action(() => setExit(referenceCommand(io)));

  program
    .command('dry-run')
    .description('read-only preflight: connect to everything the plan names and report every check')
    .argument('<plan>', 'plan file (YAML)')
    .addOption(formatOption())
    .option('--connect-timeout <duration>', 'give up connecting to a server after this long', durationArg, '10s')
    .option('--long-transactions <duration>', 'name source transactions open longer than this', durationArg, '60s')
    .exitOverride()
    .action(async (file: string, opts: { format: Format; connectTimeout: string; longTransactions: string }) => {
      try {
        setExit(await dryRunCommand(io, file, opts));
      } catch (err) {
        setExit(reportError(io, err, opts.format));
      }
    });

  program
    .command('run')
    .description("copy the plan's tables to the target in verified batches; resumes where a previous run stopped")
    .argument('<plan>', 'plan file (YAML)')
    .option('--jobs <n>', "batches copied at once (default: the plan's copy.jobs)", positiveInt)
    .option('--blob-concurrency <n>', 'documents uploaded at once, across all batches of this process (default 8)', positiveInt)
    .option('--force', 'resume even though the plan changed since the run began, or reaches other databases', false)
    .option('--json', 'write one JSON event per line instead of progress', false)
    .option('--until <state>', 'with live sync: return once in sync (lag under cutover.maxLag) instead of syncing until Ctrl-C', untilArg)
    .option('--worker-only', 'join the run another process leads as a worker, and never lead it (autoscaled pools)', false)
    .option('--max-workers <n>', "refuse to join when this many workers share the run (default: the plan's copy.maxWorkers)", positiveInt)
    .exitOverride()
    .action(
      async (
        file: string,
        opts: {
          jobs?: number;
          blobConcurrency?: number;
          force: boolean;
          json: boolean;
          until?: 'synced';
          workerOnly: boolean;
          maxWorkers?: number;
        },
      ) => {
        try {
          setExit(await runCommand(io, file, opts));
        } catch (err) {
          setExit(reportError(io, err, opts.json ? 'json' : 'text'));
        }
      },
    );

  program
    .command('cleanup')
    .description('drop every replication slot and publication the run created, on either side, and end the run')
    .argument('<plan>', 'plan file (YAML)')
    .option('--json', 'print the result as JSON', false)
    .exitOverride()
    .action(async (file: string, opts: { json: boolean }) => {
      try {
        setExit(await cleanupCommand(io, file, opts));
      } catch (err) {
        setExit(reportError(io, err, opts.json ? 'json' : 'text'));
      }
    });

  program
    .command('cutover')
    .description('switch the application to the target: pause, drain, sequences, check, repoint, resume (aborts back to the source)')
    .argument('<plan>', 'plan file (YAML)')
    .option('--json', 'print the result as JSON ({"switched": bool, "pauseMs": n, ...})', false)
    .exitOverride()
    .action(async (file: string, opts: { json: boolean }) => {
      try {
        setExit(await cutoverCommand(io, file, opts));
      } catch (err) {
        setExit(reportError(io, err, opts.json ? 'json' : 'text'));
      }
    });

  program
    .command('rollback')
    .description('switch back to the source (after cutover: replays every write made on the target); before cutover: stop and clean up')
    .argument('<plan>', 'plan file (YAML)')
    .option('--drop-target', 'before cutover only: also drop the migrated tables and documents on the target', false)
    .option('--json', 'print the result as JSON', false)
    .exitOverride()
    .action(async (file: string, opts: { json: boolean; dropTarget: boolean }) => {
      try {
        setExit(await rollbackCommand(io, file, opts));
      } catch (err) {
        setExit(reportError(io, err, opts.json ? 'json' : 'text'));
      }
    });

  // Started by cutover and rollback before they pause (src/cutover/guard.ts); not for operators.
  program
    .command('switch-guard', { hidden: true })
    .argument('<plan>', 'plan file (YAML)')
    .exitOverride()
    .action(async (file: string) => {
      try {
        await runGuard(file, io.env, process.stdin);
        setExit(ExitCode.ok);
      } catch (err) {
        setExit(reportError(io, err, 'text'));
      }
    });

  program
    .command('status')
    .description('show a migration: phase, per-table progress, throughput, ETA, verification, events, next step (read-only)')
    .argument('<plan>', 'plan file (YAML)')
    .option('--json', 'print one JSON document (field names are stable, see the README)', false)
    .option('--watch', 'keep redrawing until Ctrl-C', false)
    .option('--interval <duration>', 'refresh interval for --watch', durationArg, '2s')
    .exitOverride()
    .action(async (file: string, opts: { json: boolean; watch: boolean; interval: string }) => {
      try {
        setExit(await statusCommand(io, file, { json: opts.json, watch: opts.watch, intervalMs: parseDurationMs(opts.interval) }));
      } catch (err) {
        setExit(reportError(io, err, opts.json ? 'json' : 'text'));
      }
    });

  program
    .command('verify')
    .description('compare source and target by checksums over key ranges; name differing rows by primary key; --repair re-copies them')
    .argument('<plan>', 'plan file (YAML)')
    .option('--table <name>', 'only this table (repeatable)', (v: string, all: string[]) => [...all, tableArg(v)], [] as string[])
    .option('--sample <percent>', "check this percentage of each table's key ranges, chosen at random", percentArg)
    .option('--repair', 're-copy exactly the differing rows, then check again (writes to the target)', false)
    .option('--jobs <n>', "ranges checked at once (default: the plan's copy.jobs)", positiveInt)
    .option('--json', 'print every finding as JSON', false)
    .exitOverride()
    .action(async (file: string, opts: { table: string[]; sample?: number; repair: boolean; json: boolean; jobs?: number }) => {
      try {
        setExit(await verifyCommand(io, file, opts));
      } catch (err) {
        setExit(reportError(io, err, opts.json ? 'json' : 'text'));
      }
    });

  program
    .command('report')
    .description('write a self-contained HTML report of the migration (charts, verification, event log) for change boards')
    .argument('<plan>', 'plan file (YAML)')
    .requiredOption('--out <file>', 'where to write the HTML file')
    .exitOverride()
    .action(async (file: string, opts: { out: string }) => {
      try {
        setExit(await reportCommand(io, file, { out: opts.out }));
      } catch (err) {
        setExit(reportError(io, err));
      }
    });

  program
    .command('provision')
    .description("deploy the plan's ARM template (azure.template) and wait for it; --what-if shows the changes without making them")
    .argument('<plan>', 'plan file (YAML)')
    .option('--what-if', 'only show what the deployment would change (ARM what-if); nothing is changed', false)
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'json']).default('text'))
    .option('--deployment <name>', 'ARM deployment name (default: cloudshift-<plan name>)')
    .exitOverride()
    .action(async (file: string, opts: { whatIf: boolean; format: 'text' | 'json'; deployment?: string }) => {
      try {
        setExit(await provisionCommand(io, file, opts));
      } catch (err) {
        setExit(reportError(io, err, opts.format));
      }
    });

  program
    .command('demo')
    .description('run a whole migration on local PostgreSQL 15 and 17 servers with a generated hospital record')
    .option('--scale <n>', `dataset scale (1 = about 1,000,000 observations, 300 MB; at most ${MAX_SCALE})`, scaleArg, 0.02)
    .option('--jobs <n>', 'batches copied at once', positiveInt, 4)
    .exitOverride()
    .action(async (opts: { scale: number; jobs: number }) => {
      try {
        setExit(await demoCommand(io, opts));
      } catch (err) {
        setExit(reportError(io, err));
      }
    });

  return program;
}

function percentArg(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 100) throw new InvalidArgumentError('expected a percentage greater than 0 and at most 100');
  return n;
}

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a number greater than 0');
  return n;
}

function scaleArg(value: string): number {
  const n = positiveNumber(value);
  if (n > MAX_SCALE) throw new InvalidArgumentError(`expected at most ${MAX_SCALE}`);
  return n;
}

function tableArg(value: string): string {
  if (!isQualifiedName(value)) throw new InvalidArgumentError('expected a table name, schema.table or table');
  return value;
}

function untilArg(value: string): 'synced' {
  if (value !== 'synced') throw new InvalidArgumentError('the only state to wait for is "synced"');
  return value;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of at least 1');
  return n;
}

/** Runs the CLI with `argv` (without node and script) and returns the exit code. */
export async function runCli(argv: string[], io: CliIO): Promise<number> {
  let exitCode: number = ExitCode.ok;
  const program = buildProgram(io, (code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help asked for is a success; help shown because no command was given is a usage error.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return ExitCode.ok;
      if (err.code === 'commander.help') return err.exitCode === 0 ? ExitCode.ok : ExitCode.invalid;
      if (err.code === 'commander.executeSubCommandAsync') return ExitCode.failed;
      return ExitCode.invalid;
    }
    return reportError(io, err instanceof UsageError ? err : err);
  }
  return exitCode;
}
