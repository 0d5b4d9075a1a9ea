/** The tool's version, read from package.json (recorded on every run in the state store). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageJson(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'package.json');
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('package.json not found');
    dir = parent;
  }
}

export const packageRoot = dirname(findPackageJson());
export const toolVersion: string = (JSON.parse(readFileSync(findPackageJson(), 'utf8')) as { version: string }).version;
