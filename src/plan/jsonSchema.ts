/** The plan's JSON Schema, generated from the zod schema (committed as plans/plan.schema.json). */
import { z } from 'zod';
import { planSchema } from './schema.js';

export const PLAN_SCHEMA_ID = 'https://cloudshift.dev/plan.schema.json';

export function planJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(planSchema, { target: 'draft-7', io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return { ...schema, $id: PLAN_SCHEMA_ID, title: 'cloudshift migration plan' };
}

export function planJsonSchemaText(): string {
  return `${JSON.stringify(planJsonSchema(), null, 2)}\n`;
}
