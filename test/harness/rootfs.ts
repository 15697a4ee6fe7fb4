/** Moved to localcloud/rootfs.ts (the local cloud uses it at run time; nothing there imports test/). */
export * from '../../localcloud/rootfs.ts';
