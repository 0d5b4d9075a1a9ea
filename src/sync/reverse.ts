/** The reverse sync (target → source) a rollback after cutover drains: its objects' names. */
import type { Plan } from '../plan/defaults.js';
import type { ReplicationObject } from './objects.js';

export function reverseObjects(plan: Plan): { slot: ReplicationObject; publication: ReplicationObject; origin: ReplicationObject } {
  const base = `${plan.sync.slot}_reverse`.slice(0, 63);
  return {
    slot: { side: 'target', kind: 'slot', name: base, direction: 'reverse' },
    publication: { side: 'target', kind: 'publication', name: `${plan.sync.publication}_reverse`.slice(0, 63), direction: 'reverse' },
    origin: { side: 'source', kind: 'origin', name: base, direction: 'reverse' },
  };
}
