import { execFile, type ChildProcess } from 'node:child_process';
import { runCli } from '../../src/cli/main.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in-process with its own environment (process.env is not used). */
export async function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env,
    cwd: process.cwd(),
  });
  return { code, stdout, stderr };
}

export interface ProcessResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
}

/** Runs the real executable in a child process (for kill -9 and signal tests), handing the process to `started`. */
export function spawnCli(
  args: string[],
  env: Record<string, string | undefined>,
  started?: (child: ChildProcess) => void,
): Promise<ProcessResult> {
  return new Promise((resolve) => {
    const child = execFile('node', ['bin/cloudshift.js', ...args], { env: { ...process.env, ...env } }, (_e, stdout, stderr) =>
      resolve({ code: child.exitCode, signal: child.signalCode, out: stdout + stderr }),
    );
    started?.(child);
  });
}
