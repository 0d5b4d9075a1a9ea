/**
 * Clean-up of the local servers: the normal path (stop(), async) and the emergency path (the
 * process is ending: synchronous).
 *
 * Invariants:
 * - every resource (server, temporary directory) is registered right after it comes into
 *   existence, in a LIFO stack per server, so a half-started server is cleaned up too;
 * - an action is removed from its stack before it runs, and remembered while it runs, so the
 *   emergency path also covers a server that stop() is in the middle of stopping;
 * - the emergency path is synchronous (no event loop in an 'exit' listener, and a signal handler
 *   must finish before the process goes): it kills and removes, it never waits for long;
 * - nothing here prints, and nothing here exits the process except by re-raising a signal that
 *   nobody else handles (see {@link watchSignal}).
 */
import { errorText } from './util.js';

export interface CleanupAction {
  label: string;
  /** Normal clean-up, run by stop() (or when start-up fails). */
  run: () => Promise<void>;
  /** Last-resort synchronous variant, run when the process ends without stop(). */
  onExit: () => void;
}

/** LIFO stack of the clean-up actions of one resource; errors are collected, not thrown. */
export class CleanupStack {
  private readonly actions: CleanupAction[] = [];
  private running: CleanupAction | undefined;

  push(action: CleanupAction): void {
    this.actions.push(action);
  }

  async runAll(): Promise<Error[]> {
    const errors: Error[] = [];
    for (let a = this.actions.pop(); a !== undefined; a = this.actions.pop()) {
      this.running = a;
      try {
        await a.run();
      } catch (err) {
        errors.push(new Error(`${a.label} failed: ${errorText(err)}`, { cause: err }));
      } finally {
        this.running = undefined;
      }
    }
    return errors;
  }

  runAllSync(): void {
    const inFlight = this.running;
    this.running = undefined;
    for (const a of [...(inFlight === undefined ? [] : [inFlight]), ...this.actions.splice(0).reverse()]) {
      try {
        a.onExit();
      } catch {
        // best effort: the process is ending
      }
    }
  }
}

export type CleanupSignal = 'SIGINT' | 'SIGTERM' | 'SIGHUP';

/**
 * One {@link CleanupStack} per resource; the stacks are unwound in parallel by {@link runAll}.
 *
 * Until {@link runAll} has finished, a process 'exit' listener unwinds them synchronously. It is
 * *prepended*: vitest's own 'exit'/signal handling calls `process.exit()` again, which inside an
 * 'exit' listener ends the process at once, so listeners registered after vitest's would never
 * run. The 'exit' listener changes nothing about how or when the process ends, so it is always
 * installed. Signal handlers are opt-in per signal (see `installSignalCleanup` in servers.ts).
 */
export class CleanupRegistry {
  private readonly stacks: CleanupStack[] = [];
  private detached = false;
  private readonly exitListener = (): void => this.runAllSync();

  constructor(private readonly signals: readonly CleanupSignal[]) {
    process.prependListener('exit', this.exitListener);
    for (const signal of signals) watchSignal(signal, this);
  }

  scope(): CleanupStack {
    const stack = new CleanupStack();
    this.stacks.push(stack);
    return stack;
  }

  /** Emergency clean-up; idempotent. */
  runAllSync(): void {
    for (const stack of this.stacks) stack.runAllSync();
    this.detach();
  }

  /** Normal clean-up; returns the errors of the actions that failed. */
  async runAll(): Promise<Error[]> {
    try {
      const results = await Promise.all(this.stacks.map((s) => s.runAll()));
      return results.flat();
    } finally {
      this.detach();
    }
  }

  private detach(): void {
    if (this.detached) return;
    this.detached = true;
    process.removeListener('exit', this.exitListener);
    for (const signal of this.signals) unwatchSignal(signal, this);
  }
}

/*
 * One process listener per signal, shared by every registry that asked for that signal. On the
 * signal it cleans up all of them, removes itself, and then:
 * - if another listener handles the signal (vitest, a CLI), that listener decides whether and how
 *   the process ends;
 * - otherwise it re-raises the signal, so the process ends exactly as it would have without us
 *   (status 128 + signal number), instead of a listener silently swallowing Ctrl-C.
 * A listener per registry could not decide this: each would see the others and none would
 * re-raise.
 */
const watchers = new Map<CleanupSignal, { registries: Set<CleanupRegistry>; listener: () => void }>();

const ALL_SIGNALS: readonly CleanupSignal[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** The ending signals nothing else handles: a registry cleans up on them (and re-raises). */
export function unhandledSignals(): CleanupSignal[] {
  return ALL_SIGNALS.filter((signal) => !othersListen(signal));
}

/** Whether something other than our own clean-up listens to `signal`. */
export function othersListen(signal: CleanupSignal): boolean {
  const ours = watchers.get(signal)?.listener;
  return process.listeners(signal).some((listener) => listener !== ours);
}

function watchSignal(signal: CleanupSignal, registry: CleanupRegistry): void {
  let watcher = watchers.get(signal);
  if (watcher === undefined) {
    const registries = new Set<CleanupRegistry>();
    const listener = (): void => {
      for (const r of [...registries]) r.runAllSync();
      stopWatching(signal);
      if (!othersListen(signal)) process.kill(process.pid, signal);
    };
    watcher = { registries, listener };
    watchers.set(signal, watcher);
    process.on(signal, listener);
  }
  watcher.registries.add(registry);
}

function unwatchSignal(signal: CleanupSignal, registry: CleanupRegistry): void {
  const watcher = watchers.get(signal);
  if (watcher === undefined) return;
  watcher.registries.delete(registry);
  if (watcher.registries.size === 0) stopWatching(signal);
}

function stopWatching(signal: CleanupSignal): void {
  const watcher = watchers.get(signal);
  if (watcher === undefined) return;
  watchers.delete(signal);
  process.removeListener(signal, watcher.listener);
}
