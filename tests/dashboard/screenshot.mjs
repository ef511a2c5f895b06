// Takes docs/dashboard.png: starts an example project under a fresh
// ECO_HOME, `eco serve` in front of it, and photographs the dashboard at
// 1280×800 once the sparklines have some history.
//
//   cargo build && node tests/dashboard/screenshot.mjs \
//       [--eco target/debug/eco] [--out docs/dashboard.png] [--wait 120]
//
// --wait is how many seconds of history the sparklines get first.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { open } from './browser.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 && process.argv[at + 1] ? process.argv[at + 1] : fallback;
}

const ECO = resolve(option('eco', join(ROOT, 'target/debug/eco')));
const OUT = resolve(option('out', join(ROOT, 'docs/dashboard.png')));
const WAIT_S = Number(option('wait', '120'));
const TOKEN = 'screenshot-token-0123456789';

// A shop: a web server, workers that print what they do and use some CPU,
// and a flaky importer that crashes now and then (restarts, reason).
const ECOSYSTEM = `name: shop
apps:
  web:
    cmd: [python3, -m, http.server, '0', --bind, 127.0.0.1]
  worker:
    cmd: [python3, -u, worker.py]
    instances: 3
  importer:
    cmd: [python3, -u, importer.py]
  mailer:
    cmd: [sleep, '100000']
`;

const WORKER = `import os, random, time
n = 0
while True:
    n += 1
    busy = time.time() + random.uniform(0.05, 0.3)
    while time.time() < busy:
        sum(range(1000))
    print(f"worker {os.getpid()}: job {n} done in {random.randint(12, 240)} ms", flush=True)
    time.sleep(random.uniform(0.5, 2))
`;

const IMPORTER = `import random, sys, time
rows = bytearray(random.randint(20, 60) * 1024 * 1024)
for batch in range(random.randint(5, 12)):
    print(f"importer: batch {batch} imported ({random.randint(100, 900)} rows)", flush=True)
    time.sleep(2)
print("importer: upstream closed the connection", file=sys.stderr, flush=True)
sys.exit(1)
`;

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

function eco(env, args) {
  const run = spawnSync(ECO, args, { env, cwd: env.ECO_HOME, encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`eco ${args.join(' ')} failed: ${run.stderr}`);
  return run.stdout;
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function main() {
  const home = mkdtempSync(join(tmpdir(), 'eco-screenshot-'));
  const env = { ...process.env, ECO_HOME: home, NO_COLOR: '1' };
  writeFileSync(join(home, 'ecosystem.yaml'), ECOSYSTEM);
  writeFileSync(join(home, 'worker.py'), WORKER);
  writeFileSync(join(home, 'importer.py'), IMPORTER);
  const tokenFile = join(home, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`);
  chmodSync(tokenFile, 0o600);
  let serve = null;
  let browser = null;
  try {
    eco(env, ['up']);
    const port = await freePort();
    serve = spawn(ECO, ['serve', '--listen', `127.0.0.1:${port}`, '--token-file', tokenFile], {
      env, cwd: home, stdio: 'inherit',
    });
    browser = await open({ width: 1280, height: 800 });
    const { page } = browser;
    const url = `http://127.0.0.1:${port}/`;
    for (let tries = 0; ; tries += 1) {
      try {
        await page.goto(url);
        break;
      } catch (err) {
        if (tries > 100) throw err;
        await sleep(100);
      }
    }
    await page.fill('#token-input', TOKEN);
    await page.click('#token-use');
    await page.locator('tbody.app[data-app="worker"] .app-name').click();
    process.stderr.write(`screenshot.mjs: letting the sparklines fill for ${WAIT_S} s\n`);
    await sleep(WAIT_S * 1000);
    await page.screenshot({ path: OUT });
    process.stderr.write(`screenshot.mjs: wrote ${OUT}\n`);
  } finally {
    if (browser) await browser.close();
    if (serve) serve.kill();
    spawnSync(ECO, ['kill'], { env, cwd: home });
    rmSync(home, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`screenshot.mjs: ${err.stack || err}\n`);
  process.exit(1);
});
