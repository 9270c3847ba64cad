// Runs a bug bundle's `repro.spec.ts` (tests/bundle.rs) against Debian's Chromium: Playwright's
// own browser builds are never downloaded (install with `PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci`).
// The spec lives in a directory of its own, given by COBROWSE_SPEC_DIR; `@playwright/test`
// resolves from this directory's node_modules, so that directory must be below this one.
import { defineConfig } from '@playwright/test';
import * as path from 'path';

const specDir = process.env.COBROWSE_SPEC_DIR ?? __dirname;

export default defineConfig({
  testDir: specDir,
  outputDir: path.join(specDir, 'test-results'),
  workers: 1,
  retries: 0,
  fullyParallel: false,
  timeout: 60_000,
  reporter: 'list',
  use: {
    browserName: 'chromium',
    headless: true,
    launchOptions: {
      executablePath: process.env.COBROWSE_CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    },
  },
});
