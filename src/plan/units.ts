/** Durations ("500ms", "2s", "5m", "1h") and sizes ("512MB", "10GB") from plans. */

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/;
const SIZE = /^(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/;

const durationFactor: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const sizeFactor: Record<string, number> = {
  B: 1,
  kB: 1024,
  KB: 1024,
  MB: 1024 ** 2,
  GB: 1024 ** 3,
  TB: 1024 ** 4,
  KiB: 1024,
  MiB: 1024 ** 2,
  GiB: 1024 ** 3,
  TiB: 1024 ** 4,
};

export function isDuration(text: string): boolean {
  return DURATION.test(text.trim());
}

export function parseDurationMs(text: string): number {
  const m = DURATION.exec(text.trim());
  if (!m) throw new Error(`not a duration: ${text}`);
  return Math.round(Number(m[1]) * durationFactor[m[2]!]!);
}

export function isSize(text: string): boolean {
  return SIZE.test(text.trim());
}

export function parseSizeBytes(text: string): number {
  const m = SIZE.exec(text.trim());
  if (!m) throw new Error(`not a size: ${text}`);
  return Math.round(Number(m[1]) * sizeFactor[m[2]!]!);
}
