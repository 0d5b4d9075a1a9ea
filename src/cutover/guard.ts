/**
 * The pause guard: PgBouncer must never stay paused because cloudshift died inside the pause
 * (kill -9, the machine's OOM killer, a lost SSH session). PgBouncer keeps a database paused after
 * the connection that paused it is gone, so before PAUSE the switch starts a small detached
 * process (`cloudshift switch-guard <plan>`, hidden) holding a pipe from its parent. When the
 * switch ends the parent says "done". If the pipe closes without it, the parent is gone: the
 * guard waits for the parent's switch lock to be released (its database session ends with it)
 * and finishes or undoes the switch exactly as the next command would (recover.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Env } from '../plan/secrets.js';
import { loadPlan } from '../plan/parse.js';
import { classifyError } from '../classifyError.js';
import { delay } from '../embedded/util.js';
import { recoverPendingSwitch } from './commands.js';

export interface Guard {
  /** The switch ended (done or aborted): the guard exits without doing anything. */
  release(): void;
  /**
   * The switch failed and is not settled (an error after PAUSE, an undo that did not finish): the
   * guard finishes or undoes it once this process's switch lock is gone, as after a crash.
   */
  leave(): void;
}

const DONE = 'done\n';

/** The cloudshift executable, found from this module (src/ under tests, dist/src/ when built). */
function executable(): string | null {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'cloudshift') {
      const bin = path.join(dir, 'bin', 'cloudshift.js');
      return existsSync(bin) ? bin : null;
    }
    dir = path.dirname(dir);
  }
  return null;
}

export function startGuard(planFile: string, env: Env): Guard {
  const bin = executable();
  // CLOUDSHIFT_NO_GUARD: the crash tests' way to lose the guard with its parent.
  if (!bin || env.CLOUDSHIFT_NO_GUARD) return { release: () => undefined, leave: () => undefined };
  let child: ChildProcess | null = spawn(process.execPath, [bin, 'switch-guard', planFile], {
    env: env as NodeJS.ProcessEnv,
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  });
  child.on('error', () => undefined);
  child.stdin?.on('error', () => undefined);
  child.unref();
  return {
    release() {
      child?.stdin?.end(DONE);
      child = null;
    },
    leave() {
      child?.stdin?.end();
      child = null;
    },
  };
}

/** The guard's side: wait for the parent's word or its death. */
export async function runGuard(planFile: string, env: Env, input: NodeJS.ReadableStream): Promise<'released' | 'recovered' | 'nothing'> {
  let said = '';
  input.on('data', (c: Buffer) => (said += c.toString('utf8')));
  await new Promise<void>((resolve) => {
    input.once('end', resolve);
    input.once('close', resolve);
    input.once('error', () => resolve());
  });
  if (said === DONE) return 'released';
  const loaded = await loadPlan(planFile);
  // The parent's switch lock goes with its database session, a moment after the process.
  // Up to five minutes: a state store failing over (Azure's high availability) takes one or two.
  for (let attempt = 0; attempt < 600; attempt++) {
    try {
      return (await recoverPendingSwitch(loaded, { env })) ? 'recovered' : 'nothing';
    } catch (err) {
      // The lock still held (4), or a server out of reach for a moment (3, a connection dropped
      // mid-query in a failover too, as the CLI would report it): again.
      const known = classifyError(err);
      if (!known || (known.exitCode !== 4 && known.exitCode !== 3)) throw err;
      await delay(500);
    }
  }
  return 'nothing';
}
