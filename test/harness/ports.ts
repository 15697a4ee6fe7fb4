/** Moved to localcloud/ports.ts (the local cloud uses it at run time; nothing there imports test/). */
export * from '../../localcloud/ports.ts';
