/**
 * The plan reference in Markdown, generated from the JSON Schema (itself generated from the zod
 * schema), so the README cannot drift from what the validator accepts.
 */
import { planJsonSchema } from './jsonSchema.js';

interface SchemaNode {
  type?: string | string[];
  description?: string;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  enum?: unknown[];
  const?: unknown;
  additionalProperties?: SchemaNode | boolean;
  anyOf?: SchemaNode[];
}

function typeOf(node: SchemaNode): string {
  if (node.const !== undefined) return `\`${JSON.stringify(node.const)}\``;
  if (node.enum) return node.enum.map((v) => `\`${String(v)}\``).join(' \\| ');
  if (node.type === 'array') return `list of ${node.items ? typeOf(node.items) : 'values'}`;
  if (node.type === 'object' && !node.properties && typeof node.additionalProperties === 'object')
    return `map of ${typeOf(node.additionalProperties)}`;
  if (node.type === 'object') return 'mapping';
  return String(node.type ?? 'value');
}

export function planReferenceMarkdown(): string {
  const rows: string[] = ['| Field | Type | Meaning |', '| --- | --- | --- |'];
  const walk = (node: SchemaNode, path: string): void => {
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      if (key === '$schema') continue;
      const p = path ? `${path}.${key}` : key;
      const shown = child.type === 'array' ? `${p}[]` : p;
      rows.push(`| \`${shown}\` | ${typeOf(child)} | ${(child.description ?? '').replace(/\|/g, '\\|')} |`);
      if (child.properties) walk(child, p);
      if (child.items?.properties) walk(child.items, `${p}[]`);
    }
  };
  walk(planJsonSchema() as SchemaNode, '');
  return `${rows.join('\n')}\n`;
}
