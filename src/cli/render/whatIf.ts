/** `cloudshift provision` output: the what-if's changes and a deployment's result, as text or JSON. */
import type { DeployResult, PropertyDelta, ResourceChange, WhatIfResult } from '../../azure/deploy.js';
import { formatSeconds } from '../../preflight/format.js';

const CHANGE_MARK: Record<string, string> = {
  Create: '+',
  Delete: '-',
  Modify: '~',
  Deploy: '!',
  NoChange: '=',
  Ignore: '*',
  Unsupported: '?',
};
const DELTA_MARK: Record<string, string> = { Create: '+', Delete: '-', Modify: '~', Array: '~', NoEffect: '=' };

/** Order and wording of the summary line. */
const SUMMARY: ReadonlyArray<readonly [string, string]> = [
  ['Create', 'to create'],
  ['Modify', 'to modify'],
  ['Delete', 'to delete'],
  ['Deploy', 'to deploy'],
  ['NoChange', 'unchanged'],
  ['Ignore', 'ignored'],
  ['Unsupported', 'unsupported'],
];

export function renderWhatIf(result: WhatIfResult, format: 'text' | 'json'): string {
  if (format === 'json') return `${JSON.stringify(result, null, 2)}\n`;
  const lines = [`what-if: deployment ${result.deployment} of ${result.template} in resource group ${result.resourceGroup}`];
  if (result.changes.length === 0) lines.push('no resources in the template');
  for (const c of result.changes) lines.push(...changeLines(c));
  for (const d of result.diagnostics) lines.push(`${d.level.toLowerCase()}: ${d.code}: ${d.message}`);
  lines.push(`changes: ${summaryText(result.summary)}`);
  return `${lines.join('\n')}\n`;
}

export function summaryText(summary: Record<string, number>): string {
  return SUMMARY.filter(([type]) => ['Create', 'Modify', 'Delete'].includes(type) || (summary[type] ?? 0) > 0)
    .map(([type, words]) => `${summary[type] ?? 0} ${words}`)
    .join(', ');
}

function changeLines(c: ResourceChange): string[] {
  const head = `${CHANGE_MARK[c.changeType] ?? '?'} ${c.changeType.padEnd(11)} ${c.resourceId}${c.unsupportedReason ? `: ${c.unsupportedReason}` : ''}`;
  return [head, ...c.delta.flatMap((d) => deltaLines(d, '    '))];
}

function deltaLines(d: PropertyDelta, indent: string): string[] {
  const mark = DELTA_MARK[d.change] ?? '?';
  let value: string;
  if (d.change === 'Modify') value = `${show(d.before)} => ${show(d.after)}`;
  else if (d.change === 'Delete') value = show(d.before);
  else if (d.change === 'Array') value = '(list)';
  else value = show(d.after ?? d.before);
  return [`${indent}${mark} ${d.path}: ${value}`, ...d.children.flatMap((child) => deltaLines(child, `${indent}    `))];
}

function show(v: unknown): string {
  const s = v === undefined ? '(none)' : JSON.stringify(v);
  return s.length > 100 ? `${s.slice(0, 99)}…` : s;
}

export function renderDeploy(result: DeployResult, format: 'text' | 'json'): string {
  if (format === 'json') return `${JSON.stringify(result, null, 2)}\n`;
  const lines = [
    `deployment ${result.deployment} of ${result.template} in resource group ${result.resourceGroup}: ${result.provisioningState} in ${formatSeconds(result.durationMs / 1000)}`,
  ];
  for (const id of result.outputResources) lines.push(`  ${id}`);
  for (const [name, value] of Object.entries(result.outputs)) lines.push(`output ${name}: ${show(value)}`);
  return `${lines.join('\n')}\n`;
}
