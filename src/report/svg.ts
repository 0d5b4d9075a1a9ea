/**
 * Inline SVG charts for the report: pure functions from numbers to markup, no script, no
 * external resource. Colours come from the report's stylesheet (classes), so the charts print.
 * Times are given in ms since an origin (the run's start) and labelled as elapsed time.
 * Every label passes through text() (redacted and escaped).
 */
import { text } from './escape.js';

export interface ChartSize {
  width: number;
  height: number;
  margin: { top: number; right: number; bottom: number; left: number };
}

/** Maps [d0, d1] onto [r0, r1]; a degenerate domain (one value) maps to the middle of the range. */
export function linearScale(d0: number, d1: number, r0: number, r1: number): (v: number) => number {
  if (!Number.isFinite(d0) || !Number.isFinite(d1) || d1 === d0) return () => (r0 + r1) / 2;
  const k = (r1 - r0) / (d1 - d0);
  return (v) => r0 + (v - d0) * k;
}

/** A "nice" step (1, 2, 2.5 or 5 × 10^n) giving at most `maxTicks` intervals over `span`. */
export function niceStep(span: number, maxTicks: number): number {
  if (!(span > 0) || !Number.isFinite(span)) return 1;
  const raw = span / Math.max(1, maxTicks);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * magnitude >= raw) return m * magnitude;
  return 10 * magnitude;
}

/** Ticks of a value axis that starts at 0: 0, step, … up to the first tick at or above `max`. */
export function valueTicks(max: number, maxTicks = 5): number[] {
  const top = Number.isFinite(max) && max > 0 ? max : 1;
  const step = niceStep(top, maxTicks);
  const ticks: number[] = [];
  for (let i = 0; i * step < top + step * 1e-9; i += 1) ticks.push(round(i * step));
  if (ticks[ticks.length - 1]! < top) ticks.push(round(ticks.length * step));
  return ticks;
}

/** Steps of a time axis, in ms. */
export const TIME_STEPS_MS = [
  1, 2, 5, 10, 20, 50, 100, 200, 250, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
  1_800_000, 3_600_000, 7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
];

export function timeStep(spanMs: number, maxTicks: number): number {
  for (const s of TIME_STEPS_MS) if (spanMs / s <= maxTicks) return s;
  return Math.ceil(spanMs / maxTicks / 86_400_000) * 86_400_000;
}

/** Tick positions (ms since the origin) on [startMs, endMs], multiples of a nice step. */
export function timeTicks(startMs: number, endMs: number, maxTicks = 8): { step: number; ticks: number[] } {
  if (!(endMs > startMs)) return { step: 1_000, ticks: [startMs] };
  const step = timeStep(endMs - startMs, maxTicks);
  const ticks: number[] = [];
  for (let t = Math.ceil(startMs / step) * step; t <= endMs + 1e-9; t += step) ticks.push(t);
  return { step, ticks };
}

/** Elapsed time as an axis label: `1.25 s`, `45 s`, `2:30`, `1:05:00`. */
export function formatElapsed(ms: number, stepMs = 1_000): string {
  const sign = ms < 0 ? '−' : '';
  const a = Math.abs(ms);
  if (stepMs < 1_000 && a < 60_000) {
    const decimals = Math.min(3, Math.max(1, (String(stepMs / 1000).split('.')[1] ?? '').length));
    return `${sign}${(a / 1000).toFixed(decimals)} s`;
  }
  const total = Math.round(a / 1000);
  if (total < 60) return `${sign}${total} s`;
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  return h > 0 ? `${sign}${h}:${pad(m)}:${pad(s)}` : `${sign}${m}:${pad(s)}`;
}

/** Compact value label: 0, 7.5, 120, 1.5k, 12k, 3.4M. */
export function formatValue(v: number): string {
  const a = Math.abs(v);
  const trim = (s: string) => s.replace(/\.0+$/, '').replace(/(\.\d*?)0+$/, '$1');
  if (a >= 1e9) return `${trim((v / 1e9).toFixed(1))}G`;
  if (a >= 1e6) return `${trim((v / 1e6).toFixed(1))}M`;
  if (a >= 1e4) return `${trim((v / 1e3).toFixed(0))}k`;
  if (a >= 1e3) return `${trim((v / 1e3).toFixed(1))}k`;
  if (a >= 100 || a === 0) return String(Math.round(v));
  if (a >= 10) return trim(v.toFixed(1));
  return trim(v.toFixed(2));
}

function round(v: number): number {
  return Number(v.toPrecision(12));
}

function n(v: number): string {
  return String(Math.round(v * 10) / 10);
}

function open(id: string, className: string, size: ChartSize, title: string, description: string): string {
  return (
    `<svg id="${text(id)}" class="${text(className)}" role="img" ` +
    `viewBox="0 0 ${size.width} ${size.height}" width="${size.width}" height="${size.height}" ` +
    `aria-labelledby="${text(id)}-title ${text(id)}-desc">` +
    `<title id="${text(id)}-title">${text(title)}</title><desc id="${text(id)}-desc">${text(description)}</desc>`
  );
}

function emptyChart(id: string, className: string, size: ChartSize, title: string, message: string): string {
  return (
    open(id, `${className} empty`, size, title, message) +
    `<rect class="frame" x="0.5" y="0.5" width="${size.width - 1}" height="${size.height - 1}"/>` +
    `<text class="empty-note" x="${size.width / 2}" y="${size.height / 2}" text-anchor="middle">${text(message)}</text></svg>`
  );
}

function timeAxis(x: (v: number) => number, startMs: number, endMs: number, y: number, label: string, size: ChartSize): string {
  const { step, ticks } = timeTicks(startMs, endMs);
  const parts = [`<g class="axis x-axis"><line x1="${n(x(startMs))}" y1="${n(y)}" x2="${n(x(endMs))}" y2="${n(y)}"/>`];
  for (const t of ticks) {
    parts.push(
      `<line x1="${n(x(t))}" y1="${n(y)}" x2="${n(x(t))}" y2="${n(y + 5)}"/>` +
        `<text x="${n(x(t))}" y="${n(y + 18)}" text-anchor="middle">${text(formatElapsed(t, step))}</text>`,
    );
  }
  const mid = size.margin.left + (size.width - size.margin.left - size.margin.right) / 2;
  parts.push(`<text class="axis-label" x="${n(mid)}" y="${n(size.height - 6)}" text-anchor="middle">${text(label)}</text></g>`);
  return parts.join('');
}

export interface TimePointMs {
  /** ms since the chart's origin. */
  atMs: number;
  value: number;
}

export interface TimeChartOptions {
  id: string;
  /** Extra classes, e.g. `throughput-chart`. */
  className?: string;
  title: string;
  /** One sentence for screen readers and the tooltip-less reader (e.g. peak and average). */
  description?: string;
  points: TimePointMs[];
  /** Width of each point's bucket in ms (bars span it). */
  bucketMs: number;
  unit: string;
  xLabel: string;
  yLabel: string;
  emptyMessage?: string;
  size?: Partial<ChartSize>;
}

const DEFAULT_SIZE: ChartSize = { width: 960, height: 260, margin: { top: 16, right: 24, bottom: 46, left: 72 } };

/** A value over time: one bar per bucket. */
export function timeChart(o: TimeChartOptions): string {
  const size: ChartSize = { ...DEFAULT_SIZE, ...o.size, margin: { ...DEFAULT_SIZE.margin, ...o.size?.margin } };
  const className = `chart time-chart bars-chart${o.className ? ` ${o.className}` : ''}`;
  if (o.points.length === 0) return emptyChart(o.id, className, size, o.title, o.emptyMessage ?? 'no data');
  const { top, right, bottom, left } = size.margin;
  const x0 = left;
  const x1 = size.width - right;
  const y0 = size.height - bottom;
  const y1 = top;
  const startMs = Math.min(...o.points.map((p) => p.atMs));
  const endMs = Math.max(...o.points.map((p) => p.atMs + o.bucketMs));
  const x = linearScale(startMs, endMs, x0, x1);
  const ticks = valueTicks(Math.max(...o.points.map((p) => p.value)));
  const yMax = ticks[ticks.length - 1]!;
  const y = linearScale(0, yMax, y0, y1);
  const parts = [open(o.id, className, size, o.title, o.description ?? o.title)];
  // value axis with grid lines
  parts.push('<g class="axis y-axis">');
  for (const t of ticks) {
    parts.push(
      `<line class="grid" x1="${x0}" y1="${n(y(t))}" x2="${x1}" y2="${n(y(t))}"/>` +
        `<text x="${x0 - 8}" y="${n(y(t) + 4)}" text-anchor="end">${text(formatValue(t))}</text>`,
    );
  }
  const midY = y1 + (y0 - y1) / 2;
  parts.push(
    `<text class="axis-label" x="14" y="${n(midY)}" text-anchor="middle" transform="rotate(-90 14 ${n(midY)})">${text(o.yLabel)}</text></g>`,
  );
  parts.push(`<g class="series">`);
  for (const p of o.points) {
    if (!(p.value > 0)) continue;
    const left = x(p.atMs);
    const width = Math.max(1, x(p.atMs + o.bucketMs) - left - (o.bucketMs > 0 ? 1 : 0));
    parts.push(
      `<rect class="bar" x="${n(left)}" y="${n(y(p.value))}" width="${n(width)}" height="${n(Math.max(0.5, y0 - y(p.value)))}">` +
        `<title>${text(`${formatElapsed(p.atMs, o.bucketMs)}: ${formatValue(p.value)} ${o.unit}`)}</title></rect>`,
    );
  }
  parts.push('</g>');
  parts.push(timeAxis(x, startMs, endMs, y0, o.xLabel, size));
  parts.push('</svg>');
  return parts.join('');
}

export interface GanttBar {
  row: string;
  startMs: number;
  endMs: number;
  /** Shown next to the bar (e.g. its duration). */
  label: string;
  /** Tooltip. */
  title: string;
  /** Extra class, e.g. `open` for a span with no recorded end. */
  className?: string;
}

export interface GanttOptions {
  id: string;
  title: string;
  description?: string;
  /** Row names, top to bottom. */
  rows: string[];
  bars: GanttBar[];
  xLabel: string;
  emptyMessage?: string;
  width?: number;
}

/** Spans on a time axis, one row per name (a name may have several spans, e.g. a resumed phase). */
export function ganttChart(o: GanttOptions): string {
  const rowHeight = 30;
  const margin = { top: 12, right: 24, bottom: 46, left: 110 };
  const width = o.width ?? 960;
  const size: ChartSize = { width, height: margin.top + Math.max(1, o.rows.length) * rowHeight + margin.bottom, margin };
  const className = 'chart gantt-chart';
  if (o.bars.length === 0) return emptyChart(o.id, className, { ...size, height: 80 }, o.title, o.emptyMessage ?? 'nothing recorded');
  const x0 = margin.left;
  const x1 = width - margin.right;
  const startMs = Math.min(0, ...o.bars.map((b) => b.startMs));
  const endMs = Math.max(...o.bars.map((b) => b.endMs));
  const x = linearScale(startMs, endMs > startMs ? endMs : startMs + 1_000, x0, x1);
  const y0 = size.height - margin.bottom;
  const parts = [open(o.id, className, size, o.title, o.description ?? o.title)];
  parts.push('<g class="rows">');
  o.rows.forEach((row, i) => {
    const y = margin.top + i * rowHeight;
    parts.push(
      `<rect class="row-band${i % 2 ? ' odd' : ''}" x="${x0}" y="${y}" width="${x1 - x0}" height="${rowHeight}"/>` +
        `<text class="row-label" x="${x0 - 8}" y="${y + rowHeight / 2 + 4}" text-anchor="end">${text(row)}</text>`,
    );
  });
  parts.push('</g><g class="bars">');
  for (const b of o.bars) {
    const i = Math.max(0, o.rows.indexOf(b.row));
    const y = margin.top + i * rowHeight + 6;
    const left = x(b.startMs);
    const w = Math.max(2, x(b.endMs) - left);
    const labelWidth = b.label.length * 6.5;
    const place = left + w + 6 + labelWidth <= x1 ? 'after' : left - 6 - labelWidth >= x0 ? 'before' : 'inside';
    const labelX = place === 'after' ? left + w + 6 : place === 'before' ? left - 6 : left + 6;
    parts.push(
      `<rect class="phase-bar${b.className ? ` ${text(b.className)}` : ''}" data-phase="${text(b.row)}" x="${n(left)}" y="${y}" width="${n(w)}" height="${rowHeight - 12}">` +
        `<title>${text(b.title)}</title></rect>` +
        `<text class="bar-label${place === 'inside' ? ' inside' : ''}" x="${n(labelX)}" y="${y + (rowHeight - 12) / 2 + 4}" text-anchor="${place === 'before' ? 'end' : 'start'}">${text(b.label)}</text>`,
    );
  }
  parts.push('</g>');
  parts.push(timeAxis(x, startMs, endMs > startMs ? endMs : startMs + 1_000, y0, o.xLabel, size));
  parts.push('</svg>');
  return parts.join('');
}
