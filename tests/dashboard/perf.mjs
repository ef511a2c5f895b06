// Measures the dashboard against a live `eco serve` with many instances:
// time to the first full render, the cost of each poll's re-render, the
// page's longest stall over a while, and its JS heap.
//
//   node tests/dashboard/perf.mjs URL INSTANCES [SECONDS]
//
// INSTANCES is how many the page must show; SECONDS (default 20) how long
// the stalls are watched, every instance row shown. Prints JSON.
import { open } from './browser.mjs';

const [url, expected, seconds = '20'] = process.argv.slice(2);
if (!url || !expected) {
  process.stderr.write('usage: node perf.mjs URL INSTANCES [SECONDS]\n');
  process.exit(2);
}

/** The page's JS heap and DOM size, from chromium's own counters. */
async function heap(cdp) {
  const { metrics } = await cdp.send('Performance.getMetrics');
  const get = (name) => metrics.find((m) => m.name === name)?.value;
  return { jsHeapUsedBytes: get('JSHeapUsedSize'), domNodes: get('Nodes') };
}

async function main() {
  const { page, errors, close } = await open();
  try {
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Performance.enable');
    const started = Date.now();
    await page.goto(url);
    await page.waitForFunction(
      (n) => document.getElementById('summary').textContent.includes(`${n} instances`),
      expected,
      { timeout: 60000 },
    );
    const firstRenderMs = Date.now() - started;
    const firstRender = await page.evaluate(() => ({
      sinceNavigationMs: Math.round(performance.now()),
      renderMs: Math.round(Number(window.ecoRenderMs)),
      apiMs: Math.round(performance.getEntriesByType('resource')
        .filter((e) => e.name.includes('api/v1/apps'))[0]?.duration || 0),
      apiBytes: performance.getEntriesByType('resource')
        .filter((e) => e.name.includes('api/v1/apps'))[0]?.encodedBodySize,
    }));
    // Every instance row on screen: the worst case for each re-render.
    const expandStarted = Date.now();
    for (const toggle of await page.locator('button.toggle:visible').all()) await toggle.click();
    await page.waitForFunction(
      (n) => document.querySelectorAll('tr.instance-row').length >= Number(n),
      expected,
      { timeout: 60000 },
    );
    const expandMs = Date.now() - expandStarted;
    // Watches the page: the event loop's longest delay and the long tasks.
    const watched = await page.evaluate(async (ms) => {
      const long = [];
      const observer = new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) long.push(entry.duration);
      });
      observer.observe({ type: 'longtask', buffered: false });
      window.ecoRenderMs = 0; // only the polls' re-renders from here on
      let worstLag = 0;
      let renders = [];
      let last = performance.now();
      const tick = setInterval(() => {
        const now = performance.now();
        worstLag = Math.max(worstLag, now - last - 50);
        last = now;
        renders.push(Number(window.ecoRenderMs));
      }, 50);
      await new Promise((done) => setTimeout(done, ms));
      clearInterval(tick);
      observer.disconnect();
      renders = renders.filter((r) => r > 0);
      return {
        worstEventLoopLagMs: Math.round(worstLag),
        longTasks: long.length,
        longestTaskMs: Math.round(Math.max(0, ...long)),
        rerenderMsMax: Math.round(Math.max(0, ...renders)),
      };
    }, Number(seconds) * 1000);
    // A click still answers: following another app's log clears the pane at once.
    const clickStarted = Date.now();
    await page.locator('.app-name').first().click();
    const clickMs = Date.now() - clickStarted;
    const seen = {
      instances: Number(expected),
      firstRenderMs,
      ...firstRender,
      expandMs,
      ...watched,
      clickMs,
      ...(await heap(cdp)),
      errors,
    };
    process.stdout.write(`${JSON.stringify(seen, null, 2)}\n`);
  } finally {
    await close();
  }
}

main().catch((err) => {
  process.stderr.write(`perf.mjs: ${err.stack || err}\n`);
  process.exit(1);
});
