/** Moved to localcloud/machines/machines.ts (the local cloud uses it at run time; nothing there imports test/). */
export * from '../../localcloud/machines/machines.ts';
