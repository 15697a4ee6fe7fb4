/** Moved to localcloud/machines/rootfs.ts (the local cloud uses it at run time; nothing there imports test/). */
export * from '../../localcloud/machines/rootfs.ts';
