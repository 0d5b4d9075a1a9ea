/**
 * A throw-away Azurite (the Azure Storage emulator, devDependency `azurite`): blob service only.
 *
 * Invariants:
 * - loopback only, strict mode (no `--loose`), no telemetry, any API version accepted;
 * - the published development account (devstoreaccount1), whatever AZURITE_ACCOUNTS says;
 * - spawned detached (its own process group), like the PostgreSQL servers, so the caller decides
 *   when it stops; data lives in a fresh temporary directory, removed on stop;
 * - start-up and shutdown are bounded in time.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type { CleanupRegistry } from './cleanup.js';
import {
  DEV_DEPENDENCIES_MESSAGE,
  HOST,
  OutputTail,
  canConnect,
  exitOf,
  hasExited,
  pollUntil,
  removeDirSync,
  settlesWithin,
  signalGroup,
} from './util.js';

const AZURITE_START_TIMEOUT_MS = 30_000;
const AZURITE_STOP_TIMEOUT_MS = 10_000;

/** Published Azurite development account (documented by Microsoft; not a secret). */
const AZURITE_ACCOUNT = 'devstoreaccount1';
const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface StartedAzurite {
  blobEndpoint: string;
  connectionString: string;
}

/** Path of Azurite's blob service entry point; throws if the package is not installed. */
export function azuriteBlobMain(): string {
  try {
    const pkg = createRequire(import.meta.url).resolve('azurite/package.json');
    return path.join(path.dirname(pkg), 'dist', 'src', 'blob', 'main.js');
  } catch (err) {
    throw new Error(`cannot find azurite: ${DEV_DEPENDENCIES_MESSAGE}`, { cause: err });
  }
}

export async function startAzurite(
  main: string,
  port: number,
  registry: CleanupRegistry,
  onLog: ((line: string) => void) | undefined,
): Promise<StartedAzurite> {
  const cleanup = registry.scope();
  const output = new OutputTail('azurite', onLog);
  const location = await mkdtemp(path.join(os.tmpdir(), 'cloudshift-azurite-'));
  cleanup.push({
    label: `azurite: removing ${location}`,
    run: () => rm(location, { recursive: true, force: true, maxRetries: 3 }),
    onExit: () => removeDirSync(location),
  });

  const env = { ...process.env };
  delete env.AZURITE_ACCOUNTS; // keep the well-known devstoreaccount1 credentials

  const args = [main, '--blobHost', HOST, '--blobPort', String(port), '--location', location];
  args.push('--disableTelemetry', '--skipApiVersionCheck', '--silent');
  const child = spawn(process.execPath, args, {
    cwd: location,
    env,
    detached: process.platform !== 'win32',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = exitOf(child);
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });
  child.stdout?.on('data', (chunk: Buffer) => void output.write(chunk.toString('utf8')));
  child.stderr?.on('data', (chunk: Buffer) => void output.write(chunk.toString('utf8')));
  cleanup.push({
    label: 'azurite: stopping',
    run: () => stopAzurite(child, exited),
    onExit: () => {
      if (child.pid !== undefined && !hasExited(child)) signalGroup(child.pid, 'SIGKILL');
    },
  });

  await pollUntil(
    async () => {
      if (spawnError !== undefined) throw new Error(`azurite: cannot run ${process.execPath}: ${spawnError.message}`);
      if (hasExited(child)) {
        const status = child.signalCode ?? `exit code ${child.exitCode ?? 'unknown'}`;
        throw new Error(`azurite: exited during start-up (${status})${output.tail()}`);
      }
      return canConnect(port);
    },
    {
      timeoutMs: AZURITE_START_TIMEOUT_MS,
      onTimeout: () => new Error(`azurite: not accepting connections on ${HOST}:${port} after ${AZURITE_START_TIMEOUT_MS / 1000} s`),
    },
  );

  const blobEndpoint = `http://${HOST}:${port}/${AZURITE_ACCOUNT}`;
  const connectionString = [
    'DefaultEndpointsProtocol=http',
    `AccountName=${AZURITE_ACCOUNT}`,
    `AccountKey=${AZURITE_KEY}`,
    `BlobEndpoint=${blobEndpoint}`,
    '',
  ].join(';');
  return { blobEndpoint, connectionString };
}

async function stopAzurite(child: ChildProcess, exited: Promise<void>): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || hasExited(child)) return;
  child.kill('SIGTERM');
  if (await settlesWithin(exited, AZURITE_STOP_TIMEOUT_MS)) return;
  signalGroup(pid, 'SIGKILL');
  if (!(await settlesWithin(exited, AZURITE_STOP_TIMEOUT_MS))) throw new Error(`azurite: process ${pid} survived SIGKILL`);
}
