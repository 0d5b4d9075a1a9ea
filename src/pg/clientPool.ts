/**
 * A fixed number of open connections lent out one task at a time. A connection a task left
 * unusable (dropped, or its transaction aborted by an error) is replaced by a fresh one from
 * `open`, so the next task does not inherit the failure.
 */
import type pg from 'pg';

export class ClientPool {
  private readonly free: pg.Client[];
  private readonly open: Set<pg.Client>;
  private waiters: Array<() => void> = [];

  constructor(
    clients: pg.Client[],
    private readonly fresh?: () => Promise<pg.Client>,
  ) {
    this.free = [...clients];
    this.open = new Set(clients);
  }

  async use<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    while (this.free.length === 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
    let c = this.free.pop()!;
    try {
      return await fn(c);
    } catch (err) {
      c = await this.checked(c);
      throw err;
    } finally {
      this.free.push(c);
      this.waiters.shift()?.();
    }
  }

  async end(): Promise<void> {
    await Promise.allSettled([...this.open].map((c) => c.end()));
  }

  /** `c` if it still answers, else a fresh connection in its place (or `c` if none can be had: the next task fails as it would). */
  private async checked(c: pg.Client): Promise<pg.Client> {
    if (!this.fresh) return c;
    try {
      await c.query('SELECT 1');
      return c;
    } catch {
      try {
        const replacement = await this.fresh();
        this.open.delete(c);
        this.open.add(replacement);
        void c.end().catch(() => undefined);
        return replacement;
      } catch {
        return c;
      }
    }
  }
}
