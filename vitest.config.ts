import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // integration tests start real etcd, sshd and systemd machines: give them room, run files one at a time
    testTimeout: 60_000,
    hookTimeout: 180_000,
    fileParallelism: false,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
