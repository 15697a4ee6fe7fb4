#!/usr/bin/env node
// The one entry point: runs the TypeScript CLI through tsx's loader, so the tree needs no build step.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
