/** Process entry point: real stdio and environment, Ctrl-C handling, exit code to the OS. */
import { setMaxListeners } from 'node:events';
import { runCli } from './main.js';

// First Ctrl-C: stop at a safe point (the command finishes in-flight work and says how to
// resume). Second Ctrl-C: stop now; whatever was not committed is rolled back by the servers.
const controller = new AbortController();
// Every blob request in flight listens to it (--blob-concurrency times the blocks of each).
setMaxListeners(0, controller.signal);
process.on('SIGINT', () => {
  if (controller.signal.aborted) process.exit(130);
  process.stderr.write('\nstopping at a safe point (Ctrl-C again to stop at once)\n');
  controller.abort();
});

const code = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
  signal: controller.signal,
});
process.exitCode = code;
