/**
 * Awaited hook points of the engine (ghostferry's fault-injection hooks). Tests and tools use
 * them to stop or kill a run at an exact moment; the product never depends on them.
 */

export interface BatchRef {
  table: string;
  batchId: string;
  seq: number;
}

export interface EngineHooks {
  /** The batch's target transaction began; its rows are about to be written. */
  beforeBatchWrite?(batch: BatchRef): Promise<void> | void;
  /** The batch's rows are written on the target; its transaction is not yet committed. */
  beforeBatchCommit?(batch: BatchRef): Promise<void> | void;
  /** The batch's transaction committed; verification has not run yet. */
  afterBatchCommit?(batch: BatchRef): Promise<void> | void;
  /** A document's blob is committed; the document is not recorded in the state store yet. */
  afterDocumentUpload?(document: { table: string; name: string }): Promise<void> | void;
  /** A pass over the batches ended, its documents swept; the run decides whether another is due. */
  afterCopyPass?(): Promise<void> | void;
  /** All data copied; secondary indexes and constraints are about to be built. */
  beforePostData?(): Promise<void> | void;
  /** The n-th statement of the index and constraint builds is about to run. */
  postDataStatement?(n: number): Promise<void> | void;
  /** Live sync applied and committed its n-th transaction (before removing the blobs it let go of, and acknowledging it). */
  afterSyncCommit?(n: number): Promise<void> | void;
  /** Cutover reached a step (paused, fenced, drained, switched), before doing the next. */
  cutoverStep?(step: string): Promise<void> | void;
}

const HOOK_NAMES = [
  'beforeBatchWrite',
  'beforeBatchCommit',
  'afterBatchCommit',
  'afterDocumentUpload',
  'afterCopyPass',
  'beforePostData',
  'postDataStatement',
  'afterSyncCommit',
  'cutoverStep',
] as const;

/**
 * Hooks from CLOUDSHIFT_FAULT=<hook>:<n>[:<signal>], used by the crash tests: at the n-th call of
 * the hook the process sends itself the signal (default SIGKILL; SIGINT tests Ctrl-C). Instead of
 * n, the argument of the call to stop at: `cutoverStep:done`.
 */
export function faultHooksFromEnv(spec: string | undefined): EngineHooks {
  if (!spec) return {};
  const [name, at = '1', signal] = spec.split(':');
  if (!HOOK_NAMES.includes(name as (typeof HOOK_NAMES)[number])) return {};
  const count = /^\d+$/.test(at) ? Number(at) : null;
  let calls = 0;
  return {
    [name!]: (arg: unknown) => {
      calls += 1;
      if (count === null ? String(arg) === at : calls === count) process.kill(process.pid, (signal ?? 'SIGKILL') as NodeJS.Signals);
    },
  };
}
