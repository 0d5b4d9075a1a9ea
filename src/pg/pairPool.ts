/**
 * Source/target connection pairs for work that runs `size` at a time: each task borrows a pair,
 * and a pair whose connection failed is closed and reopened on the next borrow.
 */
import type pg from 'pg';
import { connect } from './connect.js';

export interface Pair {
  source: pg.Client;
  target: pg.Client;
}

export class PairPool {
  private readonly free: Array<Partial<Pair>> = [];
  private readonly all: Array<Partial<Pair>> = [];
  private waiters: Array<() => void> = [];

  constructor(
    /** Pairs of sessions: as many uses run at once. */
    readonly size: number,
    private readonly urls: { source: string; target: string },
    private readonly applicationName: string,
    private readonly settings: ReadonlyArray<readonly [string, string]> = [],
  ) {
    for (let i = 0; i < size; i += 1) {
      const slot: Partial<Pair> = {};
      this.free.push(slot);
      this.all.push(slot);
    }
  }

  async use<T>(fn: (pair: Pair) => Promise<T>): Promise<T> {
    while (this.free.length === 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
    const slot = this.free.pop()!;
    try {
      slot.source ??= await connect({
        role: 'source',
        connectionString: this.urls.source,
        applicationName: this.applicationName,
        settings: this.settings,
      });
      slot.target ??= await connect({
        role: 'target',
        connectionString: this.urls.target,
        applicationName: this.applicationName,
        settings: this.settings,
      });
      return await fn(slot as Pair);
    } catch (err) {
      await close(slot);
      throw err;
    } finally {
      this.free.push(slot);
      this.waiters.shift()?.();
    }
  }

  async close(): Promise<void> {
    await Promise.all(this.all.map(close));
  }
}

async function close(slot: Partial<Pair>): Promise<void> {
  await Promise.allSettled([slot.source?.end(), slot.target?.end()]);
  delete slot.source;
  delete slot.target;
}
