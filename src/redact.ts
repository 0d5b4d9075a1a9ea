/**
 * The one place secrets are masked. Every connection string, URL or error text that may carry a
 * password, account key or SAS token passes through redact() before it is printed, logged or
 * stored (ghostferry's MaskedDSN). Masking is by pattern, so it also catches secrets embedded in
 * error messages from drivers.
 */

const MASK = '***';

const patterns: Array<[RegExp, string]> = [
  // scheme://user:password@host (to the last "@" before the host: a password may hold one unencoded);
  // a scheme starts where no scheme character precedes it, so a long run of them is scanned once
  [/(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*:)[^/\s]*@/gi, `$1${MASK}@`],
  // key=value connection strings (libpq, Azure storage) and settings a script echoes (PGPASSWORD=,
  // DB_PASSWORD=): the key may end a longer name
  [/\b([a-z0-9_]*(?:password|pwd|accountkey|sharedaccesssignature|sharedaccesskey))\s*=\s*('[^']*'|"[^"]*"|[^;\s]*)/gi, `$1=${MASK}`],
  // the same keys as JSON ("password": "…")
  [/("[a-z0-9_]*(?:password|pwd|accountkey|sharedaccesssignature|sharedaccesskey)"\s*:\s*)"(?:[^"\\]|\\.)*"/gi, `$1"${MASK}"`],
  // SAS query parameters
  [/([?&]sig=)[^&\s]*/gi, `$1${MASK}`],
  // bearer tokens
  [/(bearer\s+)[a-z0-9._~+/-]+=*/gi, `$1${MASK}`],
];

export function redact(text: string): string {
  let out = text;
  for (const [re, replacement] of patterns) out = out.replace(re, replacement);
  return out;
}

/** Every string inside a value (an event's or a switch's details) redacted; the structure kept. */
export function redactDeep<T>(value: T): T {
  if (typeof value === 'string') return redact(value) as T;
  if (Array.isArray(value)) return value.map((v: unknown) => redactDeep(v)) as T;
  if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactDeep(v)])) as T;
  }
  return value;
}

/** Remove exact secret values (resolved from references) wherever they appear. */
export function redactValues(text: string, secrets: Iterable<string>): string {
  let out = text;
  for (const s of secrets) {
    if (s.length >= 4) out = out.split(s).join(MASK);
  }
  return redact(out);
}
