/**
 * Buffers of one block's size, used again once their upload is over. A document read whole goes
 * into one, so a copy of 300 MB allocates tens of megabytes, not 300: each fresh allocation is
 * pages the kernel must zero and garbage the collector must find.
 */
export class BlockBuffers {
  private readonly free: Buffer[] = [];

  constructor(
    readonly size: number,
    /** How many idle buffers are kept (the most that are in use at once, at most). */
    private readonly keep: number,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafe(this.size);
  }

  /** Only once nothing reads the buffer any more (its upload has settled). */
  give(buffer: Buffer): void {
    if (this.free.length < this.keep && buffer.length === this.size) this.free.push(buffer);
  }
}
