/** Moved to localcloud/cleanup.ts (the local cloud uses it at run time; nothing there imports test/). */
export * from '../../localcloud/cleanup.ts';
