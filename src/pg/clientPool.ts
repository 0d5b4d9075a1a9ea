/** A fixed set of open connections lent out one task at a time. */
import type pg from 'pg';

export class ClientPool {
  private readonly free: pg.Client[];
  private waiters: Array<() => void> = [];

  constructor(readonly clients: pg.Client[]) {
    this.free = [...clients];
  }

  async use<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
    while (this.free.length === 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
    const c = this.free.pop()!;
    try {
      return await fn(c);
    } finally {
      this.free.push(c);
      this.waiters.shift()?.();
    }
  }

  async end(): Promise<void> {
    await Promise.allSettled(this.clients.map((c) => c.end()));
  }
}
