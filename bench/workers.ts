/**
 * Several workers on one run, on this machine: the same plan run by 1, 2 and 4 `cloudshift run`
 * processes started together (each with its own --jobs, as each would be on its own machine).
 * The copy phase is the leader's: from its `copy` phase to its `indexes` phase, which includes
 * waiting for the other workers' batches.
 */
import { copyPhaseSeconds, runCloudshift } from './child.js';

export interface WorkersMeasure {
  workers: number;
  seconds: number;
  mbPerSecond: number;
}

export async function measureWorkers(
  plan: string,
  env: Record<string, string>,
  workers: number,
  bytes: number,
  extraArgs: string[] = [],
): Promise<WorkersMeasure> {
  const runs = await Promise.all(Array.from({ length: workers }, () => runCloudshift(['run', plan, '--json', ...extraArgs], env)));
  const failed = runs.find((r) => r.code !== 0);
  if (failed) throw new Error(`a worker exited with ${failed.code}`);
  const leader = runs.find((r) => r.stdout.includes('"phase":"indexes"'));
  if (!leader) throw new Error('no worker led the run');
  const seconds = copyPhaseSeconds(leader.stdout);
  return { workers, seconds, mbPerSecond: bytes / 1024 / 1024 / seconds };
}
