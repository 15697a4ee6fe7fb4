#!/usr/bin/env node
// The one entry point: runs the TypeScript CLI through tsx's loader, so the tree needs no build step.
import { register } from 'tsx/esm/api';

// etcd and discovery are reached by IP with certificates whose IP SANs are verified; Node still warns that
// an IP as TLS ServerName is not RFC 6066 (DEP0123) on every connection. Drop that one warning only.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = (warning, ...rest) => {
  const code = typeof rest[0] === 'object' && rest[0] !== null ? rest[0].code : rest[1];
  if (code === 'DEP0123') return;
  emitWarning(warning, ...rest);
};

register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
