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
  const values = parts.map((p) => (p.kind === 'ref' ? resolveReferences(p.raw, ctx) : p.text));
  // Written wholly by references: the value is what they give, as written there.
  if (parts.every((p) => p.kind === 'ref')) return postgresUrl(values.join(''), ctx.where);
  // The written text with each reference as one character that is none of the delimiters.
  const shape = parts.map((p) => (p.kind === 'text' ? p.text : '\u0000')).join('');
  const scheme = SCHEME.exec(shape);
  if (scheme) {
    const authority = shape.slice(scheme[0].length).split(/[/?#]/)[0]!;
    const userinfoEnd = authority.lastIndexOf('@') < 0 ? -1 : scheme[0].length + authority.lastIndexOf('@');
    let at = 0;
    const out = parts.map((p, i) => {
      const start = at;
      at += p.kind === 'text' ? p.text.length : 1;
      return p.kind === 'ref' && start < userinfoEnd ? encodeURIComponent(values[i]!) : values[i]!;
    });
    return postgresUrl(out.join(''), ctx.where);
  }
  // key=value: the pairs are read from the written text, each reference standing for its whole
  // value, so a referenced password with spaces, quotes or backslashes is taken as it is.
  // Private-use characters: no delimiter, quote or escape of libpq's syntax, nor of a plan's text.
  const token = (i: number) => `\uE000${i}\uE001`;
  const pairs = parseKeyValue(parts.map((p, i) => (p.kind === 'text' ? p.text : token(i))).join(''));
  if (!pairs) throw notPostgres(ctx.where);
  for (const [k, v] of pairs)
    pairs.set(
      k,
      v.replace(/\uE000(\d+)\uE001/g, (_, i: string) => values[Number(i)]!),
    );
  return urlOfPairs(pairs, ctx.where);
}

function invalid(where: string, why: string): UsageError {
  return new UsageError(`${where}: ${why}`, {
    hint: 'give a URL (postgres://user:password@host:5432/database) or libpq key=value pairs (host=... dbname=... user=...)',
  });
}

const notPostgres = (where: string) =>
  invalid(where, "neither a connection URL nor key=value pairs (a value with spaces is quoted: key='a b')");

/** A URL as it is (once checked), or key=value turned into a URL. */
export function postgresUrl(value: string, where: string): string {
  if (SCHEME.test(value)) {
    if (!/^postgres(ql)?:\/\//i.test(value)) throw invalid(where, 'a connection URL must start with postgres:// or postgresql://');
    try {
      new URL(value);
    } catch {
      throw invalid(
        where,
        'not a valid connection URL; a user name or password written into it (not through a reference) must be percent-encoded',
      );
    }
    return value;
  }
  const pairs = parseKeyValue(value);
  if (!pairs) throw notPostgres(where);
  return urlOfPairs(pairs, where);
}

function urlOfPairs(pairs: Map<string, string>, where: string): string {
  const take = (key: string) => {
    const v = pairs.get(key);
    pairs.delete(key);
    return v;
  };
  // node-postgres connects by name: hostaddr stands in only where no host is given.
  const host = take('host') ?? pairs.get('hostaddr');
  pairs.delete('hostaddr');
  if (host?.includes(',')) throw invalid(where, 'more than one host is not supported; name one');
  const port = take('port');
  if (port !== undefined && !/^\d+$/.test(port)) throw invalid(where, 'port must be a number');
  const user = take('user');
  const password = take('password');
  const dbname = take('dbname');
  const query = new URLSearchParams();
  // A Unix socket directory (or no host at all) leaves the URL without an authority: the socket
  // and the port go in the query, as node-postgres reads them there.
  const socket = host?.startsWith('/') ? host : undefined;
  const authority = socket || host === undefined ? '' : `${host.includes(':') ? `[${host}]` : host}${port ? `:${port}` : ''}`;
  if (socket) query.set('host', socket);
  if (!authority && port) query.set('port', port);
  for (const [k, v] of pairs) query.set(k, v);
  const userinfo =
    user === undefined && password === undefined
      ? ''
      : `${encodeURIComponent(user ?? '')}${password === undefined ? '' : `:${encodeURIComponent(password)}`}@`;
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
