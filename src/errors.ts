/**
 * Every failure cloudshift reports carries a code, the exit code the CLI maps it to, and a hint
 * that says what to do. The engine throws these; only src/cli turns them into an exit status.
 * Messages never contain secrets: anything derived from a connection string goes through
 * redact() first.
 */

/** Exit codes, grouped by category (documented in the README). */
export const ExitCode = {
  ok: 0,
  /** Checks or verification failed. */
  failed: 1,
  /** Invalid plan or usage. */
  invalid: 2,
  /** Cannot connect, or a precondition is not met. */
  precondition: 3,
  /** State conflict: the plan changed since the run began, or the run is locked. */
  conflict: 4,
  /** Interrupted (SIGINT); the run stopped at a safe point and can be resumed. */
  interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export interface CloudshiftErrorOptions {
  cause?: unknown;
  hint?: string;
}

export class CloudshiftError extends Error {
  readonly code: string;
  readonly exitCode: ExitCode;
  readonly hint: string | undefined;

  constructor(code: string, exitCode: ExitCode, message: string, options: CloudshiftErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.exitCode = exitCode;
    this.hint = options.hint;
  }
}

/** The plan or the command line is wrong; nothing was touched. */
export class UsageError extends CloudshiftError {
  constructor(message: string, options: CloudshiftErrorOptions = {}) {
    super('CS_USAGE', ExitCode.invalid, message, options);
  }
}

/** A server could not be reached or refused us; nothing was written. */
export class ConnectError extends CloudshiftError {
  constructor(message: string, options: CloudshiftErrorOptions = {}) {
    super('CS_CONNECT', ExitCode.precondition, message, options);
  }
}

/** Something that must hold before we may write does not. */
export class PreconditionError extends CloudshiftError {
  constructor(message: string, options: CloudshiftErrorOptions = {}) {
    super('CS_PRECONDITION', ExitCode.precondition, message, options);
  }
}

/** The state store disagrees with what we were asked to do. */
export class StateConflictError extends CloudshiftError {
  constructor(message: string, options: CloudshiftErrorOptions = {}) {
    super('CS_STATE_CONFLICT', ExitCode.conflict, message, options);
  }
}

export function isCloudshiftError(err: unknown): err is CloudshiftError {
  return err instanceof CloudshiftError;
}

/** Message of any thrown value, for wrapping foreign errors. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
