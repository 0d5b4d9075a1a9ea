/**
 * How the application is pointed at one side or the other: PgBouncer (pause, repoint, reload,
 * resume) or the operator's own command. The cutover protocol (switchOver.ts) only sees this
 * interface.
 */
import { spawn } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import type { AzurePlan, SwitchPlan } from '../plan/defaults.js';
import { secretTexts, type Env, type Secrets } from '../plan/secrets.js';
import { armSwitch } from './armSwitch.js';
import { endpointOf } from '../pg/connect.js';
import { PreconditionError } from '../errors.js';
import { redactValues } from '../redact.js';
import type { Side } from '../sync/objects.js';
import { readRoute, sameRoute, writeRoute, type Route } from './databasesIni.js';
import { PgBouncerAdmin, type PauseOutcome } from './pgbouncerAdmin.js';

export interface AppSwitch {
  readonly kind: 'pgbouncer' | 'command' | 'arm';
  /** The side the application is routed to now; 'unknown' when the switch cannot tell. */
  current(): Promise<Side | 'unknown'>;
  /** Holds new transactions back; resolves once the ones in flight ended, or says who blocks. */
  pause(timeoutMs: number): Promise<PauseOutcome>;
  /** Still holding writes back (a PgBouncer restarted during the pause is not). */
  stillPaused(): Promise<boolean>;
  /**
   * Points the application at `side`. For PgBouncer this is the commit point of a switch: the
   * databases file names `side` (`named` runs then), and a RELOAD applies it.
   */
  point(side: Side, named?: () => Promise<void>): Promise<void>;
  resume(): Promise<void>;
  /** Resumes if paused (undo, recovery); true when it was paused. */
  release(): Promise<boolean>;
  close(): Promise<void>;
}

export interface Routes {
  source: Route;
  target: Route;
}

export function routesOf(urls: { source: string; target: string }): Routes {
  const route = (url: string): Route => {
    const e = endpointOf(url);
    return { host: e.host, port: e.port, dbname: e.database };
  };
  return { source: route(urls.source), target: route(urls.target) };
}

export interface SwitchInputs {
  routes: Routes;
  /** The plan's resolved secrets: the switch's own, and every one a command's output must not show. */
  secrets: Secrets;
  azure: AzurePlan | undefined;
  env: Env;
  /** Each line a switch command prints (redacted), for the operator. Default: stderr. */
  echo?: (line: string) => void;
}

export async function openSwitch(sw: SwitchPlan, o: SwitchInputs): Promise<AppSwitch> {
  switch (sw.kind) {
    case 'pgbouncer':
      if (!o.secrets.pgbouncerAdmin) throw new PreconditionError('cutover.switch.pgbouncer.admin is not set');
      return pgbouncerSwitch(await PgBouncerAdmin.open(o.secrets.pgbouncerAdmin), sw.database, sw.config, o.routes);
    case 'command':
      return commandSwitch(sw.run, o.routes, o.env, secretTexts(o.secrets), o.echo ?? ((line) => process.stderr.write(`${line}\n`)));
    case 'arm':
      return armSwitch(sw, o.azure, { target: o.secrets.armTarget, source: o.secrets.armSource }, o.env);
  }
}

function pgbouncerSwitch(admin: PgBouncerAdmin, database: string, file: string, routes: Routes): AppSwitch {
  return {
    kind: 'pgbouncer',
    async current() {
      const r = await readRoute(file, database);
      if (sameRoute(r, routes.target)) return 'target';
      if (sameRoute(r, routes.source)) return 'source';
      return 'unknown';
    },
    pause: (timeoutMs) => admin.pause(database, timeoutMs),
    stillPaused: () => admin.isPaused(database),
    async point(side, named) {
      await writeRoute(file, database, routes[side]);
      await named?.();
      await admin.reload();
    },
    resume: () => admin.resume(database),
    release: () => admin.ensureResumed(database),
    close: () => admin.close(),
  };
}

/**
 * The operator's command, run with the side to switch to in its environment:
 * CLOUDSHIFT_SIDE (source|target), CLOUDSHIFT_HOST, CLOUDSHIFT_PORT, CLOUDSHIFT_DATABASE. It cannot
 * hold writes back: the side left is fenced (read-only) from the moment the switch starts, so
 * writes that reach it in between fail instead of being lost.
 */
function commandSwitch(command: string, routes: Routes, env: Env, secrets: string[], echo: (line: string) => void): AppSwitch {
  return {
    kind: 'command',
    current: () => Promise.resolve('unknown'),
    pause: () => Promise.resolve({ paused: true, ms: 0 }),
    stillPaused: () => Promise.resolve(true),
    async point(side) {
      const r = routes[side];
      await runCommand(
        command,
        {
          ...env,
          CLOUDSHIFT_SIDE: side,
          CLOUDSHIFT_HOST: r.host,
          CLOUDSHIFT_PORT: String(r.port),
          CLOUDSHIFT_DATABASE: r.dbname,
        },
        secrets,
        echo,
      );
    },
    resume: () => Promise.resolve(),
    release: () => Promise.resolve(false),
    close: () => Promise.resolve(),
  };
}

/** `env`: the command's whole environment (cloudshift's own, with the side's). */
async function runCommand(command: string, env: Env, secrets: string[], echo: (line: string) => void): Promise<void> {
  // Its output goes to the operator (on stderr: stdout stays cloudshift's own, --json), a line at
  // a time and redacted: a deployment tool may echo the settings it changed, connection strings included.
  const child = spawn(command, { shell: true, env: env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = redactedLines(secrets, echo);
  // Its last line on stderr says why, if it fails.
  let lastError = '';
  const err = redactedLines(secrets, (line) => {
    if (line.trim()) lastError = line.trim();
    echo(line);
  });
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => err.push(c));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c) => resolve(c));
  });
  out.end();
  err.end();
  if (code !== 0) {
    throw new PreconditionError(`the switch command exited with status ${code ?? 'unknown'}${lastError ? `: ${lastError}` : ''}`, {
      hint: 'cutover.switch.command.run must exit 0 once the application points at CLOUDSHIFT_SIDE',
    });
  }
}

/**
 * Text in pieces of any size, given whole lines at a time (without their newline), every secret
 * masked: by pattern, and each of the plan's secrets wherever it appears (the command inherits
 * them all, and may print one bare).
 */
function redactedLines(secrets: string[], write: (line: string) => void): { push(piece: Buffer): void; end(): void } {
  const decoder = new StringDecoder('utf8');
  let rest = '';
  return {
    push(piece) {
      const lines = (rest + decoder.write(piece)).split('\n');
      rest = lines.pop()!;
      for (const line of lines) write(redactValues(line, secrets));
    },
    end() {
      const last = rest + decoder.end();
      rest = '';
      if (last) write(redactValues(last, secrets));
    },
  };
}
