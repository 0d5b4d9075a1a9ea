// Regenerates the README's command and plan reference from the built CLI (npm run docs).
import { readFileSync, writeFileSync } from 'node:fs';
import { applySections, readmeSections } from '../dist/src/cli/docs.js';

const readme = readFileSync('README.md', 'utf8');
writeFileSync('README.md', applySections(readme, await readmeSections()));
console.log('README.md updated');
