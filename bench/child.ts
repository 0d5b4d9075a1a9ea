/** Runs the built cloudshift CLI as a child process, timing it and sampling its peak RSS. */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface ChildRun {
  code: number | null;
  seconds: number;
  stdout: string;
  peakRssMb: number;
}

function rssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmHWM:\s+(\d+) kB/.exec(status) ?? /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

/** Set by `npm run bench -- --profile DIR`: each cloudshift child writes a V8 CPU profile there. */
let profileDir: string | null = null;
export function profileChildrenInto(dir: string): void {
  profileDir = dir;
}

/** `onLine` sees each line of the child's stdout as it comes (a `--json` run's events). */
export function runCloudshift(args: string[], env: Record<string, string>, onLine?: (line: string) => void): Promise<ChildRun> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    let stdout = '';
    let peak = 0;
    const node = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
    const child = spawn(process.execPath, [...node, 'bin/cloudshift.js', ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let partial = '';
    child.stdout.on('data', (c: Buffer) => {
      const text = c.toString();
      stdout += text;
      if (!onLine) return;
      const lines = (partial + text).split('\n');
      partial = lines.pop()!;
      lines.forEach(onLine);
    });
    const timer = setInterval(() => (peak = Math.max(peak, rssMb(child.pid!))), 50);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearInterval(timer);
      resolve({ code, seconds: Number(process.hrtime.bigint() - started) / 1e9, stdout, peakRssMb: peak });
    });
  });
}

/** Seconds between the `copy` and `indexes` phases of a `run --json` event stream. */
export function copyPhaseSeconds(stdout: string): number {
  const phases = new Map<string, number>();
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    const e = JSON.parse(line) as { type: string; phase?: string; at?: string };
    if (e.type === 'run:phase' && e.phase && e.at) phases.set(e.phase, Date.parse(e.at));
  }
  const ms = (phases.get('indexes') ?? 0) - (phases.get('copy') ?? 0);
  if (!(ms > 0)) throw new Error('cloudshift did not report its copy phase');
  return ms / 1000;
}
