/**
 * The README's generated sections: the command reference (from the CLI's own --help) and the
 * plan reference (from the schema). `npm run docs` rewrites them; a test fails when they drift.
 */
import { planReferenceMarkdown } from '../plan/reference.js';
import { runCli } from './main.js';

export const DOCUMENTED_COMMANDS: ReadonlyArray<readonly string[]> = [
  [],
  ['plan', 'validate'],
  ['plan', 'schema'],
  ['plan', 'reference'],
  ['dry-run'],
  ['run'],
  ['status'],
  ['verify'],
  ['report'],
  ['cutover'],
  ['rollback'],
  ['cleanup'],
  ['provision'],
  ['demo'],
];

async function help(path: readonly string[]): Promise<string> {
  let out = '';
  await runCli([...path, '--help'], {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: () => true },
    env: {},
    cwd: process.cwd(),
  });
  return out;
}

export async function readmeSections(): Promise<Record<string, string>> {
  const parts: string[] = [];
  for (const path of DOCUMENTED_COMMANDS) {
    parts.push(`#### \`cloudshift${path.length ? ` ${path.join(' ')}` : ''}\`\n\n\`\`\`text\n${(await help(path)).trimEnd()}\n\`\`\`\n`);
  }
  return { commands: parts.join('\n'), 'plan-reference': planReferenceMarkdown() };
}

/** Replaces each `<!-- generated:NAME -->…<!-- /generated:NAME -->` block with fresh text. */
export function applySections(readme: string, sections: Record<string, string>): string {
  let out = readme;
  for (const [name, body] of Object.entries(sections)) {
    const re = new RegExp(`(<!-- generated:${name} -->\\n)[\\s\\S]*?(<!-- /generated:${name} -->)`);
    if (!re.test(out)) throw new Error(`README has no generated:${name} block`);
    out = out.replace(re, (_m, open: string, close: string) => `${open}${body}${close}`);
  }
  return out;
}
