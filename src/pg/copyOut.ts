/**
 * `COPY … TO STDOUT` with its row count. pg-copy-streams ends the stream at CopyDone, but the row
 * count comes in the CommandComplete message after it, which can arrive in a later read: reading
 * `rowCount` when the stream ends races with it (and reads 0 under load). `rowCount` here settles
 * at ReadyForQuery, once the command is complete.
 */
import type pg from 'pg';
import pgCopyStreams, { type CopyToStreamQuery } from 'pg-copy-streams';

export function copyOut(client: pg.Client, text: string): { stream: CopyToStreamQuery; rowCount: Promise<number> } {
  // handleReadyForQuery is pg's call to the active query (not in the package's types).
  const stream = pgCopyStreams.to(text) as CopyToStreamQuery & { handleReadyForQuery(): void };
  const rowCount = new Promise<number>((resolve, reject) => {
    const ready = stream.handleReadyForQuery.bind(stream);
    stream.handleReadyForQuery = () => {
      ready();
      resolve(stream.rowCount);
    };
    stream.once('error', reject);
  });
  // A failure surfaces through the stream (and the pipeline reading it), not here.
  rowCount.catch(() => undefined);
  return { stream: client.query(stream), rowCount };
}
