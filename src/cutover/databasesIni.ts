/**
 * The `[databases]` entry PgBouncer routes the application's database with, in the ini file a
 * plan's `cutover.switch.pgbouncer.config` names (included by pgbouncer.ini). Only that one line
 * is rewritten: its host, port and dbname; every other key on it (pool_size, user, ...) and every
 * other line of the file stay as they are. The file is replaced atomically (a temporary file in
 * the same folder, renamed over it), so a PgBouncer restart at any moment reads either the old
 * entry or the new one.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, stat, writeFile, chown, unlink } from 'node:fs/promises';
import path from 'node:path';
import { PreconditionError } from '../errors.js';

export interface Route {
  host: string;
  port: number;
  dbname: string;
}

interface Located {
  lines: string[];
  index: number;
  /** The entry's key=value pairs, in order, values as written (quotes kept). */
  pairs: Array<[string, string]>;
}

export async function readRoute(file: string, database: string): Promise<Route> {
  const { pairs } = await locate(file, database);
  const get = (k: string) => unquote(pairs.find(([key]) => key === k)?.[1] ?? '');
  return { host: get('host'), port: Number(get('port') || 5432), dbname: get('dbname') || database };
}

/** Points the entry at `route`; returns the entry as it was. */
export async function writeRoute(file: string, database: string, route: Route): Promise<Route> {
  const before = await readRoute(file, database);
  const { lines, index, pairs } = await locate(file, database);
  const set = new Map<string, string>([
    ['host', route.host],
    ['port', String(route.port)],
    ['dbname', quoteValue(route.dbname)],
  ]);
  const next: Array<[string, string]> = pairs.map(([k, v]) => [k, set.has(k) ? set.get(k)! : v]);
  for (const [k, v] of set) if (!pairs.some(([key]) => key === k)) next.push([k, v]);
  const name = lines[index]!.slice(0, lines[index]!.indexOf('=')).trim();
  lines[index] = `${name} = ${next.map(([k, v]) => `${k}=${v}`).join(' ')}`;
  await replaceFile(file, lines.join('\n'));
  return before;
}

export function sameRoute(a: Route, b: Route): boolean {
  return a.host === b.host && a.port === b.port && a.dbname === b.dbname;
}

async function locate(file: string, database: string): Promise<Located> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new PreconditionError(`cannot read the PgBouncer databases file ${file}: ${(err as Error).message}`, {
      hint: 'cutover.switch.pgbouncer.config must name the ini file, included by pgbouncer.ini, that holds the [databases] entry',
    });
  }
  const lines = text.split('\n');
  let section = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = header[1]!.trim().toLowerCase();
      continue;
    }
    if (section !== 'databases' || line.startsWith(';') || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = unquote(line.slice(0, eq).trim());
    if (key !== database) continue;
    return { lines, index: i, pairs: parsePairs(line.slice(eq + 1)) };
  }
  throw new PreconditionError(`${file} has no [databases] entry for "${database}"`, {
    hint: `add a line such as \`${database} = host=... port=... dbname=...\` under [databases], or fix cutover.switch.pgbouncer.database`,
  });
}

function parsePairs(text: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const re = /\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^']|'')*'|\S*)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    if (m[0].trim() === '') break;
    out.push([m[1]!, m[2]!]);
  }
  return out;
}

function unquote(v: string): string {
  return v.startsWith("'") && v.endsWith("'") && v.length >= 2 ? v.slice(1, -1).replace(/''/g, "'") : v;
}

function quoteValue(v: string): string {
  return /^[A-Za-z0-9_.-]+$/.test(v) ? v : `'${v.replace(/'/g, "''")}'`;
}

async function replaceFile(file: string, text: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(4).toString('hex')}.tmp`);
  const st = await stat(file);
  try {
    await writeFile(tmp, text, { mode: st.mode & 0o777 });
    // Keep the owner (PgBouncer's user must still read it); only root can give files away.
    if (process.getuid?.() === 0) await chown(tmp, st.uid, st.gid);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new PreconditionError(`cannot rewrite the PgBouncer databases file ${file}: ${(err as Error).message}`, {
      hint: 'cloudshift needs write access to that file and its folder',
    });
  }
}
