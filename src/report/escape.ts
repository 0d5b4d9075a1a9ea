/**
 * Escaping for the report. Every value that reaches the HTML (text or attribute, inside SVG
 * too) goes through `text()`: redacted first (no secret may reach a report), then escaped, so a
 * table named `x"; <script>` shows as that text and nothing else.
 */
import { redact } from '../redact.js';

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes &, <, >, " and ' : safe in element content and in quoted attribute values. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

/** Redacted, then escaped: the only way a string from the plan or the state store enters the report. */
export function text(value: string | number): string {
  return escapeHtml(redact(String(value)));
}
