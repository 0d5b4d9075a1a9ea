import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { applySections, readmeSections } from '../../src/cli/docs.js';

describe('README', () => {
  it('command and plan references match the CLI and the schema (run `npm run docs` to update)', async () => {
    const readme = readFileSync('README.md', 'utf8');
    expect(readme).toBe(applySections(readme, await readmeSections()));
  });

  it('gives the two commands a newcomer needs', () => {
    const readme = readFileSync('README.md', 'utf8');
    expect(readme).toContain('npm ci');
    expect(readme).toContain('npm test');
  });
});
