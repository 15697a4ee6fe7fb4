/** Moved to localcloud/mirror.ts (the local cloud uses it at run time; nothing there imports test/). */
export * from '../../localcloud/mirror.ts';
