/**
 * The logical replication connection: creating a slot with an exported snapshot, and streaming
 * a slot's changes. Invariants:
 * - the slot is created on a replication connection with SNAPSHOT 'export', so its snapshot is
 *   the slot's consistent point; nothing else is sent on that connection while copy workers
 *   import the snapshot (the caller holds it, then releases it);
 * - the stream acknowledges only what the caller says is committed (acknowledge()), never on
 *   receipt; keepalives that ask for a reply get the last acknowledged position, and so does the
 *   server every quarter of its wal_sender_timeout, from a timer: a step that takes longer (a big
 *   document's upload, a lock wait on the target) must not make the server drop the stream.
 */
import type pg from 'pg';
import pgCopyStreams from 'pg-copy-streams';
import type { Duplex } from 'node:stream';
import { quoteIdent, quoteLiteral } from '../plan/names.js';
import { connect } from '../pg/connect.js';
import { decodePgOutput, type PgOutputMessage } from './pgoutput.js';
import { formatLsn, parseLsn, type Lsn } from './lsn.js';

const { both: copyBoth } = pgCopyStreams as unknown as { both: (text: string, options?: { alignOnCopyDataFrame?: boolean }) => Duplex };

export async function replicationConnection(connectionString: string, applicationName: string): Promise<pg.Client> {
  return connect({ role: 'source', connectionString, applicationName, replication: true });
}

export interface CreatedSlot {
  consistentPoint: Lsn;
  /** The exported snapshot; valid while `holder` stays open and idle. */
  snapshotName: string | null;
}

/**
 * CREATE_REPLICATION_SLOT waits for transactions older than it to finish; lock_timeout does not
 * bound that wait, so the caller's preflight names long transactions, and `timeoutMs` bounds it
 * here (the connection is closed and the slot, if half-made, is not recorded as created).
 */
export async function createSlot(
  holder: pg.Client,
  slot: string,
  exportSnapshot: boolean,
  timeoutMs: number,
  /** Dropped by the server when `holder` ends. */
  temporary = false,
): Promise<CreatedSlot> {
  const sql = `CREATE_REPLICATION_SLOT ${quoteIdent(slot)}${temporary ? ' TEMPORARY' : ''} LOGICAL pgoutput${exportSnapshot ? " (SNAPSHOT 'export')" : " (SNAPSHOT 'nothing')"}`;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`creating replication slot "${slot}" waited more than ${timeoutMs} ms for older transactions to finish`));
      void holder.end().catch(() => undefined);
    }, timeoutMs);
  });
  try {
    const { rows } = await Promise.race([holder.query<{ consistent_point: string; snapshot_name: string | null }>(sql), timeout]);
    return { consistentPoint: parseLsn(rows[0]!.consistent_point), snapshotName: rows[0]!.snapshot_name };
  } finally {
    clearTimeout(timer);
  }
}

/** What arrives on the stream: a decoded change (with the WAL position it starts at) or a keepalive. */
export type StreamItem =
  { kind: 'change'; walStart: Lsn; walEnd: Lsn; message: PgOutputMessage } | { kind: 'keepalive'; walEnd: Lsn; replyRequested: boolean };

export interface ChangeStream {
  items(): AsyncGenerator<StreamItem>;
  /** Reports `lsn` as written, flushed and applied: only after the target committed it. */
  acknowledge(lsn: Lsn): void;
  readonly acknowledged: Lsn;
  close(): Promise<void>;
}

const PG_EPOCH_US = BigInt(Date.UTC(2000, 0, 1)) * 1000n;

/**
 * CopyData frames one by one. Reading the stream with read() (as `for await` does) would join
 * the frames, and pgoutput messages carry no length of their own; in flowing mode each 'data'
 * event is one frame. Flow control: the stream pauses while frames wait to be applied, by count
 * and by bytes (a row of a 50 MB document is one frame: 256 of them would not fit in memory).
 */
export async function* frames(stream: Duplex, highWater = 256, highBytes = 64 * 1024 * 1024): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let queued = 0;
  let done = false;
  let failure: unknown = null;
  let wake: (() => void) | null = null;
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  stream.on('data', (chunk: Buffer) => {
    queue.push(chunk);
    queued += chunk.length;
    if (queue.length >= highWater || queued >= highBytes) stream.pause();
    notify();
  });
  stream.on('end', () => {
    done = true;
    notify();
  });
  stream.on('close', () => {
    done = true;
    notify();
  });
  stream.on('error', (err) => {
    failure ??= err;
    notify();
  });
  for (;;) {
    if (queue.length > 0) {
      const next = queue.shift()!;
      queued -= next.length;
      if (queue.length < highWater / 2 && queued < highBytes / 2 && stream.isPaused()) stream.resume();
      yield next;
      continue;
    }
    if (failure !== null) throw failure;
    if (done) return;
    await new Promise<void>((r) => (wake = r));
  }
}

/** The server's wal_sender_timeout in ms (0: none), read on the replication connection before streaming. */
export async function senderTimeoutMs(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ ms: string }>(`SELECT setting AS ms FROM pg_settings WHERE name = 'wal_sender_timeout'`);
  return Number(rows[0]?.ms ?? 0);
}

export function startStream(client: pg.Client, slot: string, publication: string, from: Lsn, senderTimeout: number): ChangeStream {
  const options = [`proto_version '1'`, `publication_names ${quoteLiteral(quoteIdent(publication))}`, `messages 'true'`];
  const duplex = client.query(
    copyBoth(`START_REPLICATION SLOT ${quoteIdent(slot)} LOGICAL ${formatLsn(from)} (${options.join(', ')})`, {
      alignOnCopyDataFrame: true,
    }) as unknown as pg.Submittable,
  ) as unknown as Duplex;
  let acknowledged = from;
  const status = (lsn: Lsn) => {
    const b = Buffer.alloc(34);
    b.write('r', 0);
    b.writeBigUInt64BE(lsn, 1);
    b.writeBigUInt64BE(lsn, 9);
    b.writeBigUInt64BE(lsn, 17);
    b.writeBigInt64BE(BigInt(Date.now()) * 1000n - PG_EPOCH_US, 25);
    b.writeUInt8(0, 33);
    if (!duplex.destroyed && duplex.writable) duplex.write(b);
  };
  const alive = senderTimeout > 0 ? setInterval(() => status(acknowledged), Math.max(100, senderTimeout / 4)) : null;
  alive?.unref();
  duplex.once('close', () => alive && clearInterval(alive));
  return {
    async *items() {
      for await (const chunk of frames(duplex)) {
        const type = String.fromCharCode(chunk[0]!);
        if (type === 'w') {
          yield {
            kind: 'change',
            walStart: chunk.readBigUInt64BE(1),
            walEnd: chunk.readBigUInt64BE(9),
            message: decodePgOutput(chunk.subarray(25)),
          };
        } else if (type === 'k') {
          const replyRequested = chunk.readUInt8(17) === 1;
          if (replyRequested) status(acknowledged);
          yield { kind: 'keepalive', walEnd: chunk.readBigUInt64BE(1), replyRequested };
        }
      }
    },
    acknowledge(lsn: Lsn) {
      if (lsn > acknowledged) acknowledged = lsn;
      status(acknowledged);
    },
    get acknowledged() {
      return acknowledged;
    },
    async close() {
      if (alive) clearInterval(alive);
      duplex.destroy();
      await client.end().catch(() => undefined);
    },
  };
}
