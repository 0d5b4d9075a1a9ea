/**
 * A plan's PostgreSQL connection value, resolved, as the URL node-postgres reads. The plan may
 * give a URL (`postgres://user:password@host:5432/db?sslmode=require`) or libpq's key=value
 * form (`host=db port=5432 dbname=ehr user=app password=... sslmode=require`, as Azure's portal
 * shows it); node-postgres reads only URLs, so the second is turned into one here. A reference
 * inside a URL's user name or password (`postgres://app:${env:PGPASSWORD}@db/ehr`) holds the
 * value itself: it is percent-encoded into the URL, so a generated password with `/`, `#`, `?`,
 * `@` or `%` in it works as it is. Errors name the plan field, never the value.
 */
import { UsageError } from '../errors.js';
import { parseReferences, resolveReferences, type ResolveContext } from './refs.js';

const SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;

/** Resolves a connection value's references, encoding those in a URL's user information. */
export function resolvePostgres(raw: string, ctx: ResolveContext): string {
  const parts = parseReferences(raw);
  // The literal text with each reference as one character that is none of the URL's delimiters.
  const shape = parts.map((p) => (p.kind === 'text' ? p.text : '\u0000')).join('');
  const scheme = SCHEME.exec(shape);
  let userinfoEnd = -1;
  if (scheme) {
    const authority = shape.slice(scheme[0].length).split(/[/?#]/)[0]!;
    userinfoEnd = authority.lastIndexOf('@') < 0 ? -1 : scheme[0].length + authority.lastIndexOf('@');
  }
  let at = 0;
  const out = parts.map((p) => {
    const start = at;
    at += p.kind === 'text' ? p.text.length : 1;
    if (p.kind === 'text') return p.text;
    const value = resolveReferences(p.raw, ctx);
    return start < userinfoEnd ? encodeURIComponent(value) : value;
  });
  return postgresUrl(out.join(''), ctx.where);
}

/** A URL as it is (once checked), or key=value turned into a URL. */
export function postgresUrl(value: string, where: string): string {
  const invalid = (why: string) =>
    new UsageError(`${where}: ${why}`, {
      hint: 'give a URL (postgres://user:password@host:5432/database) or libpq key=value pairs (host=... dbname=... user=...)',
    });
  if (SCHEME.test(value)) {
    if (!/^postgres(ql)?:\/\//i.test(value)) throw invalid('a connection URL must start with postgres:// or postgresql://');
    try {
      new URL(value);
    } catch {
      throw invalid(
        'not a valid connection URL; a user name or password written into it (not through a reference) must be percent-encoded',
      );
    }
    return value;
  }
  const pairs = parseKeyValue(value);
  if (!pairs) throw invalid("neither a connection URL nor key=value pairs (a value with spaces is quoted: key='a b')");
  const take = (key: string) => {
    const v = pairs.get(key);
    pairs.delete(key);
    return v;
  };
  const host = take('host') ?? take('hostaddr');
  pairs.delete('hostaddr');
  if (host?.includes(',')) throw invalid('more than one host is not supported; name one');
  const port = take('port');
  if (port !== undefined && !/^\d+$/.test(port)) throw invalid('port must be a number');
  const user = take('user');
  const password = take('password');
  const dbname = take('dbname');
  const query = new URLSearchParams();
  // A Unix socket directory goes in the query, as node-postgres reads it there.
  const socket = host?.startsWith('/') ? host : undefined;
  if (socket) query.set('host', socket);
  for (const [k, v] of pairs) query.set(k, v);
  const userinfo =
    user === undefined && password === undefined
      ? ''
      : `${encodeURIComponent(user ?? '')}${password === undefined ? '' : `:${encodeURIComponent(password)}`}@`;
  const authority = socket || host === undefined ? '' : `${host.includes(':') ? `[${host}]` : host}${port ? `:${port}` : ''}`;
  const search = query.size > 0 ? `?${query.toString()}` : '';
  return `postgresql://${userinfo}${authority}/${encodeURIComponent(dbname ?? '')}${search}`;
}

/** libpq's keyword = value pairs: values bare (backslash escapes) or single-quoted; null if it is not that. */
function parseKeyValue(text: string): Map<string, string> | null {
  const pairs = new Map<string, string>();
  let i = 0;
  const space = () => {
    while (i < text.length && /\s/.test(text[i]!)) i += 1;
  };
  space();
  if (i === text.length) return null;
  while (i < text.length) {
    const key = /^[a-z_][a-z0-9_]*/i.exec(text.slice(i))?.[0];
    if (!key) return null;
    i += key.length;
    space();
    if (text[i] !== '=') return null;
    i += 1;
    space();
    let value = '';
    if (text[i] === "'") {
      i += 1;
      for (; i < text.length && text[i] !== "'"; i += 1) value += text[i] === '\\' ? (text[++i] ?? '') : text[i];
      if (text[i] !== "'") return null;
      i += 1;
    } else {
      for (; i < text.length && !/\s/.test(text[i]!); i += 1) value += text[i] === '\\' ? (text[++i] ?? '') : text[i];
    }
    pairs.set(key.toLowerCase(), value);
    space();
  }
  return pairs;
}
