/**
 * CPU seconds spent by each local server and by the benchmark process (with the cloudshift
 * children it waited for) while a measurement runs, read from /proc. On a 2-core machine the
 * documents' throughput is set by who gets the CPU: this says where it went.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import type { LocalServers } from '../src/embedded/servers.js';

const TICKS_PER_SECOND = 100;

interface Stat {
  ppid: number;
  /** utime + stime + cutime + cstime, in ticks: the process and the children it reaped. */
  ticks: number;
}

function stat(pid: number | 'self'): Stat | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    // f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) };
  } catch {
    return null;
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/**
 * Each party's CPU seconds, the seconds the machine's cores sat idle (all cores summed), and for
 * Azurite's main thread (where it handles every request, one at a time) the seconds it ran and the
 * seconds it was ready to run but waited for a core: what is left of the timed part it slept,
 * waiting for a request or its disk.
 */
export type CpuSeconds = Record<'azurite' | 'source' | 'target' | 'client' | 'idle' | 'azuriteRan' | 'azuriteWaited', number>;

/** A thread's seconds on a core and waiting in a run queue for one (/proc/PID/task/TID/schedstat). */
function schedstat(pid: number | undefined): { ran: number; waited: number } {
  if (pid === undefined) return { ran: 0, waited: 0 };
  try {
    const [ran, waited] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ').map(Number);
    return { ran: ran! / 1e9, waited: waited! / 1e9 };
  } catch {
    return { ran: 0, waited: 0 };
  }
}

/** Idle and I/O-wait ticks of all cores together, from the first line of /proc/stat. */
function idleTicks(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/);
  return Number(f[4]) + Number(f[5]);
}

function processes(servers: LocalServers) {
  const pids = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
  const stats = new Map(pids.map((p) => [p, stat(p)] as const));
  const roots = {
    azurite: pids.find((p) => stats.get(p)?.ppid === process.pid && cmdline(p).includes('azurite')),
    source: pids.find((p) => cmdline(p).includes(`-D ${servers.source.dataDir} `)),
    target: pids.find((p) => cmdline(p).includes(`-D ${servers.target.dataDir} `)),
  };
  return { stats, roots };
}

/**
 * Gives Azurite the machine's last core and everything else (this process, the cloudshift
 * children it starts, both PostgreSQL servers) the others, as a blob service elsewhere would
 * have its own CPU. Linux only (taskset, from util-linux).
 */
export function pinService(servers: LocalServers): void {
  const { stats, roots } = processes(servers);
  const cores = cpus().length;
  if (cores < 2) throw new Error('--service-core needs at least 2 cores');
  const rest = `0-${cores - 2}`;
  const pin = (pid: number, list: string) => execFileSync('taskset', ['-a', '-p', '-c', list, String(pid)], { stdio: 'ignore' });
  pin(roots.azurite!, String(cores - 1));
  for (const root of [roots.source!, roots.target!]) {
    pin(root, rest);
    for (const [p, s] of stats) if (s?.ppid === root) pin(p, rest);
  }
  pin(process.pid, rest);
}

function sample(servers: LocalServers): CpuSeconds {
  const { stats, roots } = processes(servers);
  const tree = (root: number | undefined): number => {
    if (root === undefined) return 0;
    let ticks = stats.get(root)?.ticks ?? 0;
    for (const [p, s] of stats) if (s?.ppid === root) ticks += tree(p);
    return ticks;
  };
  const main = schedstat(roots.azurite);
  return {
    azurite: tree(roots.azurite) / TICKS_PER_SECOND,
    azuriteRan: main.ran,
    azuriteWaited: main.waited,
    source: tree(roots.source) / TICKS_PER_SECOND,
    target: tree(roots.target) / TICKS_PER_SECOND,
    // This process, the cloudshift children it has waited for, and those still running.
    client:
      ((stat('self')?.ticks ?? 0) +
        [...stats].filter(([p, s]) => s?.ppid === process.pid && !Object.values(roots).includes(p)).reduce((n, [p]) => n + tree(p), 0)) /
      TICKS_PER_SECOND,
    idle: idleTicks() / TICKS_PER_SECOND,
  };
}

/** CPU seconds each party spends between start() and stop(): bracket the timed part only. */
export class CpuMeter {
  private before: CpuSeconds | null = null;
  constructor(private readonly servers: LocalServers) {}

  start(): void {
    this.before = sample(this.servers);
  }

  stop(): CpuSeconds {
    const before = this.before;
    if (before === null) throw new Error('CpuMeter.stop() before start()');
    const after = sample(this.servers);
    return Object.fromEntries(
      Object.entries(after).map(([k, v]) => [k, Math.round((v - before[k as keyof CpuSeconds]) * 100) / 100]),
    ) as CpuSeconds;
  }
}
