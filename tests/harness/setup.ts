/**
 * Run before every test file (vitest `setupFiles`): the folders the file's tests made with
 * scratchDir are removed after its last test, as its worker process may be ended by a signal.
 */
import { afterAll } from 'vitest';
import { removeScratchDirs } from '../../src/embedded/util.js';

afterAll(removeScratchDirs);
