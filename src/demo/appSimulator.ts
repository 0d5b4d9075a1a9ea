/**
 * An application that keeps writing through PgBouncer at a steady rate, the way the EHR would:
 * each transaction moves an amount between two accounts (the accounts always sum to TOTAL),
 * records the move in a ledger under a unique key, inserts two events (a bigserial key: the
 * sequence must follow the application to the target), and now and then updates or deletes an
 * earlier event. A transaction counts as acknowledged once its COMMIT returned; every error a
 * client sees is kept. Used by the cutover tests (the proof that nobody notices the switch) and
 * by the benchmark (the write pause under a steady load).
 */
import pg from 'pg';

export const APP_SQL = `
CREATE TABLE public.accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO public.accounts SELECT g, 1000 FROM generate_series(1, 20) g;
CREATE TABLE public.ledger (key text PRIMARY KEY, account_from int NOT NULL, account_to int NOT NULL, amount bigint NOT NULL,
                            at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE public.events (id bigserial PRIMARY KEY, kind text NOT NULL, payload text NOT NULL, version int NOT NULL DEFAULT 0);
INSERT INTO public.events (kind, payload) SELECT 'seed', md5(g::text) FROM generate_series(1, 500) g;
`;

export const ACCOUNTS = 20;
export const TOTAL = ACCOUNTS * 1000;

export class AppSimulator {
  readonly acknowledged: string[] = [];
  readonly errors: Array<{ at: number; message: string }> = [];
  private readonly pool: pg.Pool;
  private timer: NodeJS.Timeout | undefined;
  private inFlight = new Set<Promise<void>>();
  private seq = 0;
  private stopped = false;
  private readonly recentEvents: string[] = [];
  /** Longest time a transaction took (a pause shows up here), ms. */
  slowestMs = 0;

  constructor(
    url: string,
    private readonly ratePerSecond: number,
    private readonly tag: string,
  ) {
    this.pool = new pg.Pool({ connectionString: url, max: 6 });
    this.pool.on('error', (err) => this.errors.push({ at: Date.now(), message: `pool: ${err.message}` }));
  }

  start(): void {
    const interval = 1000 / this.ratePerSecond;
    let next = performance.now();
    const tick = () => {
      const now = performance.now();
      // Steady rate: catch up on ticks missed, but never more than 6 transactions at once.
      while (next <= now && this.inFlight.size < 6) {
        next += interval;
        const p = this.transaction().finally(() => this.inFlight.delete(p));
        this.inFlight.add(p);
      }
      if (next < now - 1000) next = now;
      this.timer = setTimeout(tick, Math.max(1, next - performance.now()));
    };
    tick();
  }

  get count(): number {
    return this.acknowledged.length;
  }

  /** Resolves once `n` more transactions were acknowledged. */
  async waitFor(n: number, timeoutMs = 60_000): Promise<void> {
    const target = this.count + n;
    const end = Date.now() + timeoutMs;
    while (this.count < target) {
      if (Date.now() > end) throw new Error(`the simulator acknowledged ${this.count}, not ${target}, in ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await Promise.allSettled([...this.inFlight]);
    await this.pool.end();
  }

  private async transaction(): Promise<void> {
    const n = ++this.seq;
    const key = `${this.tag}-${n}`;
    const a = 1 + (n % ACCOUNTS);
    const b = 1 + ((a + (n % (ACCOUNTS - 1))) % ACCOUNTS); // never a
    const [lo, hi] = a < b ? [a, b] : [b, a];
    const amount = 1 + (n % 17);
    const started = performance.now();
    let client: pg.PoolClient | undefined;
    try {
      client = await this.pool.connect();
      await client.query('BEGIN');
      // Lower id first: concurrent transfers never deadlock.
      await client.query('UPDATE public.accounts SET balance = balance - $2 WHERE id = $1', [lo, amount]);
      await client.query('UPDATE public.accounts SET balance = balance + $2 WHERE id = $1', [hi, amount]);
      await client.query('INSERT INTO public.ledger (key, account_from, account_to, amount) VALUES ($1, $2, $3, $4)', [
        key,
        lo,
        hi,
        amount,
      ]);
      const { rows } = await client.query<{ id: string }>(
        `INSERT INTO public.events (kind, payload) VALUES ('write', $1), ('write', $1 || '/2') RETURNING id::text AS id`,
        [key],
      );
      if (n % 3 === 0 && this.recentEvents.length > 0) {
        const id = this.recentEvents[n % this.recentEvents.length]!;
        await client.query(`UPDATE public.events SET version = version + 1, payload = payload || '+' WHERE id = $1`, [id]);
      }
      if (n % 5 === 0 && this.recentEvents.length > 10) {
        await client.query('DELETE FROM public.events WHERE id = $1', [this.recentEvents.shift()!]);
      }
      await client.query('COMMIT');
      this.acknowledged.push(key);
      this.recentEvents.push(...rows.map((r) => r.id));
      if (this.recentEvents.length > 200) this.recentEvents.splice(0, this.recentEvents.length - 200);
      this.slowestMs = Math.max(this.slowestMs, performance.now() - started);
    } catch (err) {
      this.errors.push({ at: Date.now(), message: (err as Error).message });
      await client?.query('ROLLBACK').catch(() => undefined);
    } finally {
      client?.release();
    }
  }
}
