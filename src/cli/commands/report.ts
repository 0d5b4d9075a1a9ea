/** `cloudshift report`: placeholder wired by the CLI; implemented in the report work. */
import { UsageError } from '../../errors.js';
import type { CliIO } from '../io.js';

export async function reportCommand(_io: CliIO, _file: string, _flags: { out: string }): Promise<number> {
  throw new UsageError('cloudshift report is not implemented yet');
}
