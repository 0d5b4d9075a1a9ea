/**
 * Small process and timing helpers of the local server launcher (`src/embedded/`).
 * Invariants: nothing here prints, exits or keeps a timer alive after it settles; every wait is
 * bounded.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Every server listens on loopback only. */
export const HOST = '127.0.0.1';

export const DEV_DEPENDENCIES_MESSAGE = 'the demo needs the development dependencies: run `npm install` in the cloudshift folder';

export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves to `true` if `promise` settles first (rethrowing its error), `false` on timeout. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Polls `condition` every `intervalMs` until it returns true; throws `onTimeout()` once
 * `timeoutMs` has elapsed.
 */
export async function pollUntil(
  condition: () => Promise<boolean>,
  { timeoutMs, intervalMs = 100, onTimeout }: { timeoutMs: number; intervalMs?: number; onTimeout: () => Error },
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() >= deadline) throw onTimeout();
    await delay(intervalMs);
  }
}

/** Synchronous polling, for 'exit' listeners and signal handlers (no event loop there). */
export function waitSync(condition: () => boolean, timeoutMs: number): boolean {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) return false;
    Atomics.wait(cell, 0, 0, 20);
  }
  return true;
}

export function removeDirSync(dir: string): void {
  rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
}

const scratchDirs = new Set<string>();

/**
 * A fresh folder under the system's temporary folder (`<prefix>-XXXXXX`) for plans, scripts and
 * certificates of tests and benchmarks, removed by {@link removeScratchDirs} or when the process
 * exits.
 */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  if (scratchDirs.size === 0) process.once('exit', removeScratchDirs);
  scratchDirs.add(dir);
  return dir;
}

/** Removes every folder {@link scratchDir} made (a test file's, after its last test). */
export function removeScratchDirs(): void {
  scratchDirs.forEach(removeDirSync);
  scratchDirs.clear();
}

/** Reserves `count` distinct free TCP ports on {@link HOST} (listen on port 0, read it, close). */
export async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: HOST, port: 0, exclusive: true }, () => resolve());
      });
      const address = server.address();
      if (address === null || typeof address === 'string') throw new Error('could not reserve a free TCP port on 127.0.0.1');
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: HOST, port });
    const done = (ok: boolean): void => {
      socket.removeAllListeners();
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** True while a process with this id exists (EPERM: it exists but belongs to someone else). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Resolves when the child has exited (or could not be spawned). Never rejects. */
export function exitOf(child: ChildProcess): Promise<void> {
  return new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    child.once('exit', () => resolve());
    child.once('error', () => {
      if (child.pid === undefined) resolve();
    });
  });
}

export function hasExited(child: ChildProcess): boolean {
  return child.pid === undefined || child.exitCode !== null || child.signalCode !== null;
}

/**
 * Sends `signal` to the process group led by `pid` (our servers are spawned detached, so they
 * lead their own group and this reaches their children too), falling back to the process alone.
 * Never throws: the process may have gone already.
 */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(process.platform === 'win32' ? pid : -pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // gone
    }
  }
}

/**
 * Keeps the last `max` lines of a server's output, for error messages, and forwards every line to
 * the caller's log callback.
 */
export class OutputTail {
  private readonly lines: string[] = [];
  private partial = '';
  constructor(
    private readonly label: string,
    private readonly onLog: ((line: string) => void) | undefined,
    private readonly max = 40,
  ) {}

  /** Adds a chunk of output (several lines, maybe a partial last one); returns the complete lines. */
  write(chunk: string): string[] {
    const parts = (this.partial + chunk).split(/\r?\n/);
    this.partial = parts.pop() ?? '';
    for (const line of parts) this.line(line);
    return parts;
  }

  /** Adds one complete message (e.g. a log line from a library). */
  line(line: string): void {
    if (line.trim() === '') return;
    this.lines.push(line);
    if (this.lines.length > this.max) this.lines.shift();
    this.onLog?.(`[${this.label}] ${line}`);
  }

  /** Ends a partial last line. */
  flush(): void {
    if (this.partial.trim() !== '') this.line(this.partial);
    this.partial = '';
  }

  /** The last lines, for an error message; empty when nothing was written. */
  tail(count = 15): string {
    this.flush();
    const last = this.lines.slice(-count);
    return last.length === 0 ? '' : `; last output:\n  ${last.join('\n  ')}`;
  }
}
