// Drives the eco dashboard in headless chromium for tests/dashboard.rs.
//
//   node drive.mjs SCENARIO URL [ARG...]
//
// Prints one JSON object on stdout (what it saw, for the Rust test to
// assert on) and exits 0; on a failure prints the reason on stderr and
// exits 1. Every wait has a deadline.
import { renameSync, writeFileSync } from 'node:fs';
import { open } from './browser.mjs';

const [scenario, url, ...args] = process.argv.slice(2);
const WAIT = { timeout: 20000 };

/** The app's tbody, once the page lists it. */
async function appBody(page, project, app) {
  const body = page.locator(`tbody.app[data-project="${project}"][data-app="${app}"]`);
  await body.waitFor(WAIT);
  return body;
}

/** Every app the page lists: {project, app, instances, status, pids}. */
function listed(page) {
  return page.$$eval('tbody.app', (bodies) =>
    bodies.map((b) => ({
      project: b.dataset.project,
      app: b.dataset.app,
      instances: Number(b.dataset.instances),
      status: b.querySelector('tr.app-row .status').textContent,
      pids: [...b.querySelectorAll('.pid')].map((p) => p.dataset.pid),
    })));
}

async function pidOf(body) {
  return body.locator('tr.instance-row .pid').first().getAttribute('data-pid');
}

/** list PROJECT/APP...: the page lists these apps. */
async function list(page, names) {
  for (const name of names) {
    const [project, app] = name.split('/');
    await appBody(page, project, app);
  }
  const desktop = await fits(page);
  await page.setViewportSize({ width: 390, height: 844 });
  const phone = await fits(page);
  return { apps: await listed(page), summary: await page.textContent('#summary'), desktop, phone };
}

/** At the page's current width: nothing runs off to the side, and no
 *  cell of an app's line is cut (its content wider than its box). */
function fits(page) {
  return page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const cut = [...document.querySelectorAll('tr.app-row td')]
      .filter((td) => td.scrollWidth > td.clientWidth + 1)
      .map((td) => td.dataset.label);
    return { width, overflow: document.documentElement.scrollWidth > width, cut };
  });
}

/** log PROJECT/APP TRIGGER MARKER: follows the app's log, asks the app
 *  to print MARKER (by writing TRIGGER), and times the line's arrival. */
async function log(page, [name, trigger, marker]) {
  const [project, app] = name.split('/');
  const body = await appBody(page, project, app);
  await body.locator('.app-name').click();
  await page.locator('#log-state[data-state="ok"]').waitFor(WAIT);
  const started = Date.now();
  writeFileSync(`${trigger}.tmp`, marker);
  renameSync(`${trigger}.tmp`, trigger);
  await page.locator('#log-lines .line', { hasText: marker }).first().waitFor(WAIT);
  return { ms: Date.now() - started, target: await page.textContent('#log-target') };
}

/** restart PROJECT/APP TOKEN: enters the token, clicks restart, waits for a new pid. */
async function restart(page, [name, token]) {
  const [project, app] = name.split('/');
  const body = await appBody(page, project, app);
  const before = await pidOf(body);
  const noButtons = await page.locator('button.act').count();
  await page.fill('#token-input', token);
  await page.click('#token-use');
  const button = body.locator('button.act-restart');
  await button.waitFor(WAIT);
  const inUrl = page.url().includes(token);
  const stored = await page.evaluate(() => sessionStorage.getItem('eco.token'));
  await button.click();
  await page.waitForFunction(
    ([sel, old]) => {
      const pid = document.querySelector(sel)?.dataset.pid;
      return pid && pid !== old;
    },
    [`tbody.app[data-project="${project}"][data-app="${app}"] tr.instance-row .pid`, before],
    WAIT,
  );
  return {
    before,
    after: await pidOf(body),
    buttonsBefore: noButtons,
    buttons: await body.locator('button.act').allTextContents(),
    tokenInUrl: inUrl,
    tokenStored: stored === token,
    notice: await page.textContent('#notice'),
  };
}

/** readonly PROJECT/APP WRONG_TOKEN: no control shows; forged POSTs answer 401. */
async function readonly(page, [name, wrong]) {
  const [project, app] = name.split('/');
  const body = await appBody(page, project, app);
  const target = encodeURIComponent(`${project}/${app}`);
  const forged = await page.evaluate(async ([path, token]) => {
    const none = await fetch(path, { method: 'POST' });
    const bad = await fetch(path, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
    return { none: none.status, wrong: bad.status };
  }, [`api/v1/apps/${target}/restart`, wrong]);
  return {
    controls: await page.locator('button.act').count(),
    visibleControls: await page.locator('button.act:visible').count(),
    pid: await pidOf(body),
    forged,
  };
}

const SCENARIOS = { list: (p) => list(p, args), log, restart, readonly };

async function main() {
  const run = SCENARIOS[scenario];
  if (!run || !url) {
    throw new Error(`usage: node drive.mjs ${Object.keys(SCENARIOS).join('|')} URL [ARG...]`);
  }
  const { page, errors, close } = await open();
  try {
    await page.goto(url, WAIT);
    const seen = await run(page, args);
    process.stdout.write(`${JSON.stringify({ ...seen, errors })}\n`);
  } finally {
    await close();
  }
}

main().catch((err) => {
  process.stderr.write(`drive.mjs ${scenario}: ${err.stack || err}\n`);
  process.exit(1);
});
