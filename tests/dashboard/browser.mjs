// Starts Debian's chromium, headless, through playwright-core: the flags keep
// it off the network it would otherwise try (updates, sync, QUIC probes), and
// a fresh profile folder makes every run start clean.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.ECO_CHROMIUM || '/usr/bin/chromium';

const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** A page in a fresh browser, its uncaught script errors, and a function that closes both. */
export async function open({ width = 1280, height = 800 } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'eco-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width, height },
  });
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on('pageerror', (err) => errors.push(String(err)));
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { page, errors, close };
}
