/**
 * A decoder for the pgoutput logical replication protocol, version 1 (PostgreSQL 10+), with
 * logical messages (PostgreSQL 14+). Column values stay exactly as the walsender wrote them, as
 * text; an unchanged TOASTed value is its own kind, never confused with NULL or a value.
 * https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
 */
import { type Lsn } from './lsn.js';

/**
 * One column of a tuple: NULL, unchanged TOASTed value (not sent), or the value's text; a value
 * longer than LONG_VALUE stays as its UTF-8 bytes (a bytea document's hex can be longer than
 * the longest string JavaScript holds), made text only where it is needed as text.
 */
export type Value = { kind: 'null' } | { kind: 'unchanged' } | { kind: 'text'; text: string } | { kind: 'long'; raw: Buffer };

const LONG_VALUE = 64 * 1024 * 1024;
export type Tuple = Value[];

export interface RelationColumn {
  name: string;
  typeOid: number;
  typeMod: number;
  /** Part of the replica identity (the key the walsender sends for updates and deletes). */
  key: boolean;
}

export type PgOutputMessage =
  | { tag: 'begin'; finalLsn: Lsn; commitTime: Date; xid: number }
  | { tag: 'commit'; commitLsn: Lsn; endLsn: Lsn; commitTime: Date }
  | { tag: 'relation'; relid: number; schema: string; name: string; replicaIdentity: string; columns: RelationColumn[] }
  | { tag: 'type'; typeOid: number; schema: string; name: string }
  | { tag: 'insert'; relid: number; row: Tuple }
  | { tag: 'update'; relid: number; key: Tuple | null; old: Tuple | null; row: Tuple }
  | { tag: 'delete'; relid: number; key: Tuple | null; old: Tuple | null }
  | { tag: 'truncate'; relids: number[]; cascade: boolean; restartIdentity: boolean }
  | { tag: 'message'; lsn: Lsn; transactional: boolean; prefix: string; content: Buffer }
  | { tag: 'origin'; lsn: Lsn; name: string };

/** Microseconds since 2000-01-01, the PostgreSQL epoch. */
const PG_EPOCH_MS = Date.UTC(2000, 0, 1);

class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  u8(): number {
    return this.buf.readUInt8(this.pos++);
  }
  i16(): number {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  i32(): number {
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  time(): Date {
    return new Date(PG_EPOCH_MS + Number(this.buf.readBigInt64BE((this.pos += 8) - 8) / 1000n));
  }
  cstring(): string {
    const end = this.buf.indexOf(0, this.pos);
    if (end < 0) throw new Error('pgoutput: unterminated string');
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }
  bytes(n: number): Buffer {
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  tuple(): Tuple {
    const n = this.i16();
    const out: Tuple = new Array<Value>(n);
    for (let i = 0; i < n; i++) {
      const kind = String.fromCharCode(this.u8());
      if (kind === 'n') out[i] = { kind: 'null' };
      else if (kind === 'u') out[i] = { kind: 'unchanged' };
      else if (kind === 't') {
        const raw = this.bytes(this.i32());
        out[i] = raw.length > LONG_VALUE ? { kind: 'long', raw } : { kind: 'text', text: raw.toString('utf8') };
      } else throw new Error(`pgoutput: tuple column kind "${kind}" is not supported (binary mode is never requested)`);
    }
    return out;
  }
}

export function decodePgOutput(buf: Buffer): PgOutputMessage {
  const r = new Reader(buf);
  const tag = String.fromCharCode(r.u8());
  switch (tag) {
    case 'B': {
      const finalLsn = r.u64();
      return { tag: 'begin', finalLsn, commitTime: r.time(), xid: r.u32() };
    }
    case 'C': {
      r.u8(); // flags, unused
      const commitLsn = r.u64();
      const endLsn = r.u64();
      return { tag: 'commit', commitLsn, endLsn, commitTime: r.time() };
    }
    case 'R': {
      const relid = r.u32();
      const schema = r.cstring();
      const name = r.cstring();
      const replicaIdentity = String.fromCharCode(r.u8());
      const n = r.i16();
      const columns: RelationColumn[] = [];
      for (let i = 0; i < n; i++) {
        const flags = r.u8();
        const colName = r.cstring();
        columns.push({ name: colName, typeOid: r.u32(), typeMod: r.i32(), key: (flags & 1) === 1 });
      }
      return { tag: 'relation', relid, schema, name, replicaIdentity, columns };
    }
    case 'Y': {
      const typeOid = r.u32();
      return { tag: 'type', typeOid, schema: r.cstring(), name: r.cstring() };
    }
    case 'I': {
      const relid = r.u32();
      r.u8(); // 'N'
      return { tag: 'insert', relid, row: r.tuple() };
    }
    case 'U': {
      const relid = r.u32();
      let kind = String.fromCharCode(r.u8());
      let key: Tuple | null = null;
      let old: Tuple | null = null;
      if (kind === 'K') key = r.tuple();
      else if (kind === 'O') old = r.tuple();
      if (kind !== 'N') kind = String.fromCharCode(r.u8());
      return { tag: 'update', relid, key, old, row: r.tuple() };
    }
    case 'D': {
      const relid = r.u32();
      const kind = String.fromCharCode(r.u8());
      const t = r.tuple();
      return { tag: 'delete', relid, key: kind === 'K' ? t : null, old: kind === 'O' ? t : null };
    }
    case 'T': {
      const n = r.u32();
      const flags = r.u8();
      const relids: number[] = [];
      for (let i = 0; i < n; i++) relids.push(r.u32());
      return { tag: 'truncate', relids, cascade: (flags & 1) === 1, restartIdentity: (flags & 2) === 2 };
    }
    case 'M': {
      const transactional = r.u8() === 1;
      const lsn = r.u64();
      const prefix = r.cstring();
      const content = r.bytes(r.u32());
      return { tag: 'message', lsn, transactional, prefix, content };
    }
    case 'O': {
      const lsn = r.u64();
      return { tag: 'origin', lsn, name: r.cstring() };
    }
    default:
      throw new Error(`pgoutput: unknown message "${tag}" (protocol version 1 is requested)`);
  }
}
