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
  /** The batch's rows are written on the target; its transaction is not yet committed. */
  beforeBatchCommit?(batch: BatchRef): Promise<void> | void;
  /** The batch's transaction committed; verification has not run yet. */
  afterBatchCommit?(batch: BatchRef): Promise<void> | void;
  /** All data copied; secondary indexes and constraints are about to be built. */
  beforePostData?(): Promise<void> | void;
}

/** Hooks from CLOUDSHIFT_FAULT=<hook>:<n>, used by the crash tests: SIGKILL at the n-th call. */
export function faultHooksFromEnv(spec: string | undefined): EngineHooks {
  if (!spec) return {};
  const [name, countText] = spec.split(':');
  const count = Number(countText ?? '1');
  let calls = 0;
  const kill = () => {
    calls += 1;
    if (calls >= count) process.kill(process.pid, 'SIGKILL');
  };
  if (name !== 'beforeBatchCommit' && name !== 'afterBatchCommit' && name !== 'beforePostData') return {};
  return { [name]: kill };
}
