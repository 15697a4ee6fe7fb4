/** Moved to localcloud/docker.ts (the local cloud uses it at run time; nothing there imports test/). */
export * from '../../localcloud/docker.ts';
