/** Who is acting: recorded on every event and claim. */
import { hostname, userInfo } from 'node:os';

export interface Who {
  osUser: string;
  host: string;
  pid: number;
}

export function whoAmI(): Who {
  let osUser = 'unknown';
  try {
    osUser = userInfo().username;
  } catch {
    osUser = process.env.USER ?? 'unknown';
  }
  return { osUser, host: hostname(), pid: process.pid };
}

export function workerId(who: Who = whoAmI()): string {
  return `${who.host}:${who.pid}`;
}
