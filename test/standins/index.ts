/** Moved to localcloud/standins/ (the local cloud's release mirror uses them at run time). */
export * from '../../localcloud/standins/index.ts';
