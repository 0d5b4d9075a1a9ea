/**
 * Progress as typed, namespaced events (graphile-worker's WorkerEventMap). The engine emits;
 * renderers in src/cli decide how to show them (spinners, plain lines, JSON lines).
 */

export interface EngineEventMap {
  'run:start': { runId: string; resumed: boolean; planName: string };
  'run:phase': { runId: string; phase: string };
  /** Emitted when the copy starts or resumes: totals, and what earlier attempts already did. */
  'table:planned': {
    table: string;
    batches: number;
    done: number;
    estimatedRows: number;
    bytes: number;
    key: string;
    /** Rows and bytes of the batches done before (by earlier attempts and processes). */
    copiedRows: number;
    copiedBytes: number;
  };
  'batch:copied': { table: string; batchId: string; seq: number; rows: number; bytes: number; ms: number };
  'batch:verified': { table: string; batchId: string; seq: number };
  'batch:retry': { table: string; batchId: string; seq: number; attempt: number; reason: string };
  'batch:mismatch': { table: string; batchId: string; seq: number; source: string; target: string };
  'table:done': { table: string; rows: number; bytes: number; mismatches: number };
  'schema:step': { step: string; detail: string };
  'sequences:set': { count: number };
  'run:stopping': { runId: string; reason: string };
  'run:done': { runId: string; tables: number; rows: number; bytes: number; mismatches: number; seconds: number };
  'sync:start': { runId: string; slot: string };
  'sync:stats': { applied: string; lagMs: number | null; lagBytes: number | null; changes: number };
  'sync:stop': {
    runId: string;
    reason: string;
    applied: string;
    lagMs: number | null;
    transactions: number;
    changes: number;
    divergences: number;
  };
  'cutover:step': { kind: string; step: string; ms: number };
  warning: { message: string };
}

export type EngineEventName = keyof EngineEventMap;
export type EngineEvent = { [K in EngineEventName]: { type: K; at: string } & EngineEventMap[K] }[EngineEventName];

export type EventSink = (event: EngineEvent) => void;

export function emitter(sink: EventSink | undefined) {
  return <K extends EngineEventName>(type: K, payload: EngineEventMap[K]): void => {
    sink?.({ type, at: new Date().toISOString(), ...payload } as EngineEvent);
  };
}
export type Emit = ReturnType<typeof emitter>;
