/** Moved to localcloud/mirrors/mirror.ts (the local cloud uses it at run time; nothing there imports test/). */
export * from '../../localcloud/mirrors/mirror.ts';
