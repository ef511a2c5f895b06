// The eco dashboard: polls GET api/v1/apps (the `eco ls --json` rows), keeps
// ten minutes of CPU and memory per app in memory for the sparklines, follows
// one app's log and the event stream over server-sent events, and posts
// control requests with the token the user typed. Plain JS, no build step.
//
// Safety: every string from the API reaches the page through textContent,
// dataset or a numeric SVG attribute: nothing from it is parsed as HTML. The token
// lives in sessionStorage and travels only in the Authorization header.
'use strict';

(() => {
  const POLL_MS = 2000;
  const HISTORY_MS = 10 * 60 * 1000;
  const LOG_LINES_KEPT = 1000;
  const COLLAPSE_OVER = 12;
  const TOKEN_KEY = 'eco.token';
  const ACTIONS = ['restart', 'reload', 'stop'];
  const STOPPED_ACTIONS = ['start'];
  const SPARK_W = 120;
  const SPARK_H = 24;
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    projects: new Map(), // project name -> {article, tbody container, apps}
    apps: new Map(), // "project/app" -> app view (see appView)
    history: new Map(), // "project/app" -> [{t, cpu, mem}]
    expanded: new Set(), // "project/app" whose instance rows show
    logKey: null,
    logSource: null,
    pollTimer: null,
    pollSoon: null,
    lastRenderMs: 0,
  };

  // ---- small DOM helpers ------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** Sets a node's text only when it changed: a poll then touches only
   *  what moved, without reading the DOM back (a thousand rows stay cheap). */
  function setText(node, text) {
    if (node.ecoText !== text) {
      node.ecoText = text;
      node.textContent = text;
    }
  }

  /** Sets an attribute only when it changed (see setText). */
  function setAttr(node, name, value) {
    const key = `eco:${name}`;
    if (node[key] !== value) {
      node[key] = value;
      node.setAttribute(name, value);
    }
  }

  /** Puts `children` into `parent` in this order, moving only what moved. */
  function order(parent, children) {
    children.forEach((child, i) => {
      if (parent.children[i] !== child) {
        parent.insertBefore(child, parent.children[i] || null);
      }
    });
  }

  // ---- formatting -------------------------------------------------------

  function fmtBytes(bytes) {
    if (bytes === null || bytes === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value >= 10 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
  }

  function fmtCpu(percent) {
    if (percent === null || percent === undefined) return '–';
    return `${percent >= 100 ? percent.toFixed(0) : percent.toFixed(1)} %`;
  }

  function fmtUptime(ms) {
    if (ms === null || ms === undefined) return '–';
    const s = Math.floor(ms / 1000);
    if (s < 60) return `${s}s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${s % 60}s`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h}h ${m % 60}m`;
    return `${Math.floor(h / 24)}d ${h % 24}h`;
  }

  function clock(date) {
    return date.toTimeString().slice(0, 8);
  }

  // ---- notices and connection state -------------------------------------

  let noticeTimer = null;
  function notice(text, kind) {
    const node = $('notice');
    node.textContent = text;
    node.dataset.kind = kind || 'info';
    node.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { node.hidden = true; }, kind === 'error' ? 15000 : 5000);
  }

  function connection(ok, text) {
    const node = $('conn');
    node.dataset.state = ok ? 'ok' : 'error';
    setText(node, text);
  }

  // ---- the model: rows grouped by project and app ----------------------

  /** Groups the rows into [[project, [[app, rows]]]], sorted by name. */
  function group(rows) {
    const projects = new Map();
    for (const row of rows) {
      if (!projects.has(row.project)) projects.set(row.project, new Map());
      const apps = projects.get(row.project);
      if (!apps.has(row.app)) apps.set(row.app, []);
      apps.get(row.app).push(row);
    }
    const byName = (a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
    return [...projects].sort(byName).map(([project, apps]) => [
      project,
      [...apps].sort(byName).map(([app, list]) => [app, list.sort((a, b) => a.instance - b.instance)]),
    ]);
  }

  /** One app's line: its instances summed up. */
  function summary(rows) {
    const counts = new Map();
    let restarts = 0;
    let cpu = null;
    let mem = null;
    let uptime = null;
    let reason = null;
    let reasonRestarts = -1;
    for (const row of rows) {
      counts.set(row.status, (counts.get(row.status) || 0) + 1);
      restarts += row.restarts;
      if (row.cpu_percent !== null && row.cpu_percent !== undefined) cpu = (cpu || 0) + row.cpu_percent;
      if (row.memory_bytes !== null && row.memory_bytes !== undefined) mem = (mem || 0) + row.memory_bytes;
      if (row.uptime_ms !== null && row.uptime_ms !== undefined) {
        uptime = uptime === null ? row.uptime_ms : Math.min(uptime, row.uptime_ms);
      }
      if (row.last_restart_reason && row.restarts > reasonRestarts) {
        reason = row.last_restart_reason;
        reasonRestarts = row.restarts;
      }
    }
    const online = counts.get('online') || 0;
    let status;
    if (online === rows.length) status = 'online';
    else if (counts.size === 1) status = rows[0].status;
    else status = 'mixed';
    const detail = [...counts].map(([s, n]) => `${n} ${s}`).join(', ');
    return { status, detail, online, restarts, cpu, mem, uptime, reason };
  }

  function remember(key, now, sum) {
    let points = state.history.get(key);
    if (!points) {
      points = [];
      state.history.set(key, points);
    }
    points.push({ t: now, cpu: sum.cpu || 0, mem: sum.mem || 0 });
    while (points.length && points[0].t < now - HISTORY_MS) points.shift();
  }

  // ---- sparklines --------------------------------------------------------

  function sparkNode(label) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('class', 'spark');
    svg.setAttribute('viewBox', `0 0 ${SPARK_W} ${SPARK_H}`);
    svg.setAttribute('width', String(SPARK_W));
    svg.setAttribute('height', String(SPARK_H));
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
    const title = document.createElementNS(SVG_NS, 'title');
    const back = document.createElementNS(SVG_NS, 'rect');
    back.setAttribute('width', String(SPARK_W));
    back.setAttribute('height', String(SPARK_H));
    const line = document.createElementNS(SVG_NS, 'polyline');
    svg.append(title, back, line);
    return svg;
  }

  /** Draws the last ten minutes of `field`, scaled to its own maximum. */
  function drawSpark(svg, points, field, now, format) {
    const max = points.reduce((m, p) => Math.max(m, p[field]), 0);
    const scale = max > 0 ? max : 1;
    const coords = points.map((p) => {
      const x = ((p.t - (now - HISTORY_MS)) / HISTORY_MS) * SPARK_W;
      const y = SPARK_H - 1 - (p[field] / scale) * (SPARK_H - 2);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    svg.lastChild.setAttribute('points', coords.join(' '));
    setText(svg.firstChild, `last 10 min, max ${format(max)}`);
  }

  // ---- building rows -----------------------------------------------------

  const APP_COLUMNS = ['app', 'status', 'restarts', 'last reason', 'uptime', 'cpu', 'memory'];

  function cells(tr, labels) {
    const out = {};
    for (const label of labels) {
      const td = el('td');
      td.dataset.label = label;
      tr.append(td);
      out[label] = td;
    }
    return out;
  }

  function newProject(name) {
    const article = el('article', 'project');
    article.dataset.project = name;
    article.append(el('h2', null, name));
    const table = el('table', 'apps');
    const head = el('tr');
    for (const label of [...APP_COLUMNS, 'cpu · 10 min', 'memory · 10 min', '']) head.append(el('th', null, label));
    const thead = el('thead');
    thead.append(head);
    table.append(thead);
    article.append(table);
    return { article, table };
  }

  function newApp(project, app, key) {
    const body = el('tbody', 'app');
    body.dataset.project = project;
    body.dataset.app = app;
    const tr = el('tr', 'app-row');
    const td = cells(tr, [...APP_COLUMNS, 'cpu · 10 min', 'memory · 10 min', 'actions']);
    const name = el('button', 'app-name', app);
    name.type = 'button';
    name.title = 'follow this app\'s log';
    name.addEventListener('click', () => followLog(key));
    const toggle = el('button', 'toggle');
    toggle.type = 'button';
    toggle.addEventListener('click', () => {
      if (state.expanded.has(key)) state.expanded.delete(key);
      else state.expanded.add(key);
      renderAll();
    });
    td.app.append(name, toggle);
    const status = el('span', 'status');
    td.status.append(status);
    const cpuSpark = sparkNode(`cpu of ${app}, last 10 minutes`);
    const memSpark = sparkNode(`memory of ${app}, last 10 minutes`);
    td['cpu · 10 min'].append(cpuSpark);
    td['memory · 10 min'].append(memSpark);
    td.actions.className = 'actions';
    body.append(tr);
    return { key, project, app, body, td, status, toggle, cpuSpark, memSpark, instances: new Map(), token: null };
  }

  function newInstance(row) {
    const tr = el('tr', 'instance-row');
    const td = cells(tr, [...APP_COLUMNS, 'pid']);
    const name = el('span', 'instance-name');
    const pid = el('span', 'pid');
    td.app.append(name);
    td.pid.append(pid);
    td.pid.colSpan = 3;
    const status = el('span', 'status');
    td.status.append(status);
    tr.dataset.instance = String(row.instance);
    return { tr, td, name, pid, status };
  }

  /** The control buttons, present in the page only while a token is set;
   *  a stopped app offers start instead. */
  function renderActions(view, stopped) {
    const want = !state.token ? 'off' : stopped ? 'stopped' : 'on';
    if (view.token === want) return;
    view.token = want;
    view.td.actions.replaceChildren();
    if (!state.token) return;
    for (const action of stopped ? STOPPED_ACTIONS : ACTIONS) {
      const button = el('button', `act act-${action}`, action);
      button.type = 'button';
      button.dataset.action = action;
      button.addEventListener('click', () => control(view, action, button));
      view.td.actions.append(button);
    }
  }

  // ---- rendering ---------------------------------------------------------

  let lastRows = [];

  function renderAll() {
    const started = performance.now();
    const now = Date.now();
    const seenProjects = new Set();
    const seenApps = new Set();
    const articles = [];
    let instances = 0;
    for (const [project, apps] of group(lastRows)) {
      seenProjects.add(project);
      let p = state.projects.get(project);
      if (!p) {
        p = newProject(project);
        state.projects.set(project, p);
      }
      articles.push(p.article);
      const bodies = [];
      for (const [app, rows] of apps) {
        const key = `${project}/${app}`;
        seenApps.add(key);
        let view = state.apps.get(key);
        if (!view) {
          view = newApp(project, app, key);
          state.apps.set(key, view);
        }
        renderApp(view, rows, now);
        instances += rows.length;
        bodies.push(view.body);
      }
      order(p.table, [p.table.tHead, ...bodies]);
    }
    for (const [key, view] of state.apps) {
      if (!seenApps.has(key)) {
        view.body.remove();
        state.apps.delete(key);
        state.history.delete(key);
      }
    }
    for (const [name, p] of state.projects) {
      if (!seenProjects.has(name)) {
        p.article.remove();
        state.projects.delete(name);
      }
    }
    const root = $('projects');
    order(root, articles);
    if (!articles.length) {
      if (!root.querySelector('.empty')) root.append(el('p', 'empty', 'No app is running: start a project with `eco up`.'));
    } else {
      const empty = root.querySelector('.empty');
      if (empty) empty.remove();
    }
    setText($('summary'), `${seenProjects.size} projects · ${seenApps.size} apps · ${instances} instances`);
    state.lastRenderMs = performance.now() - started;
    window.ecoRenderMs = state.lastRenderMs;
  }

  function renderApp(view, rows, now) {
    const sum = summary(rows);
    setText(view.status, sum.status === 'mixed' ? sum.detail : sum.status);
    setAttr(view.status, 'data-status', sum.status);
    setAttr(view.status, 'title', sum.detail);
    setText(view.td.restarts, String(sum.restarts));
    setText(view.td['last reason'], sum.reason || '–');
    setText(view.td.uptime, fmtUptime(sum.uptime));
    setText(view.td.cpu, fmtCpu(sum.cpu));
    setText(view.td.memory, fmtBytes(sum.mem));
    const points = state.history.get(view.key) || [];
    drawSpark(view.cpuSpark, points, 'cpu', now, fmtCpu);
    drawSpark(view.memSpark, points, 'mem', now, fmtBytes);
    renderActions(view, sum.status === 'stopped');
    const many = rows.length > COLLAPSE_OVER;
    const open = !many || state.expanded.has(view.key);
    view.toggle.hidden = !many;
    setText(view.toggle, open ? `hide ${rows.length}` : `${rows.length} instances`);
    setAttr(view.body, 'data-instances', String(rows.length));
    renderInstances(view, open ? rows : []);
  }

  function renderInstances(view, rows) {
    const seen = new Set();
    const trs = [view.td.app.parentNode];
    for (const row of rows) {
      seen.add(row.instance);
      let inst = view.instances.get(row.instance);
      if (!inst) {
        inst = newInstance(row);
        view.instances.set(row.instance, inst);
      }
      setText(inst.name, `${view.app}:${row.instance} · id ${row.id}`);
      setText(inst.pid, row.pid === null || row.pid === undefined ? 'pid –' : `pid ${row.pid}`);
      setAttr(inst.pid, 'data-pid', row.pid === null || row.pid === undefined ? '' : String(row.pid));
      setText(inst.status, row.status);
      setAttr(inst.status, 'data-status', row.status);
      setAttr(inst.status, 'title', row.last_error || row.status_text || '');
      setText(inst.td.restarts, String(row.restarts));
      setText(inst.td['last reason'], row.last_restart_reason || '–');
      setText(inst.td.uptime, fmtUptime(row.uptime_ms));
      setText(inst.td.cpu, fmtCpu(row.cpu_percent));
      setText(inst.td.memory, fmtBytes(row.memory_bytes));
      trs.push(inst.tr);
    }
    for (const [instance, inst] of view.instances) {
      if (!seen.has(instance)) {
        inst.tr.remove();
        view.instances.delete(instance);
      }
    }
    order(view.body, trs);
  }

  // ---- polling -----------------------------------------------------------

  async function poll() {
    clearTimeout(state.pollTimer);
    try {
      const response = await fetch('api/v1/apps', { cache: 'no-store' });
      if (!response.ok) throw new Error(`GET /api/v1/apps answered ${response.status}: ${problemText(await response.text())}`);
      const rows = await response.json();
      if (!Array.isArray(rows)) throw new Error('GET /api/v1/apps did not answer a list of instances');
      const now = Date.now();
      for (const [project, apps] of group(rows)) {
        for (const [app, list] of apps) remember(`${project}/${app}`, now, summary(list));
      }
      lastRows = rows;
      renderAll();
      connection(true, `live · ${clock(new Date())}`);
      if (!state.logKey && rows.length) followLog(`${rows[0].project}/${rows[0].app}`);
    } catch (err) {
      connection(false, `cannot reach eco serve (${err.message}); retrying`);
    }
    state.pollTimer = setTimeout(poll, POLL_MS);
  }

  /** A change was announced: poll shortly, once for a burst of events. */
  function pollSoon() {
    if (state.pollSoon) return;
    state.pollSoon = setTimeout(() => {
      state.pollSoon = null;
      poll();
    }, 150);
  }

  function followEvents() {
    const source = new EventSource('api/v1/events');
    source.onmessage = pollSoon;
    for (const kind of ['state', 'restart', 'save', 'lagged']) source.addEventListener(kind, pollSoon);
  }

  // ---- logs --------------------------------------------------------------

  function appPath(key) {
    const view = state.apps.get(key);
    const name = view ? `${view.project}/${view.app}` : key;
    return `api/v1/apps/${encodeURIComponent(name)}`;
  }

  /** One SSE message as {text, stream}: JSON ({text, stream}) or plain text. */
  function logLine(data, eventType) {
    let stream = eventType === 'err' || eventType === 'stderr' ? 'err' : 'out';
    let text = data;
    if (data.startsWith('{')) {
      try {
        const parsed = JSON.parse(data);
        text = String(parsed.text ?? data);
        if (parsed.stream) stream = String(parsed.stream);
      } catch (_) {
        text = data;
      }
    }
    return { text, stream };
  }

  function appendLog(data, eventType) {
    const pre = $('log-lines');
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const { text, stream } = logLine(data, eventType);
    const line = el('span', 'line', `${text}\n`);
    line.dataset.stream = stream.includes('err') ? 'err' : 'out';
    pre.append(line);
    while (pre.childElementCount > LOG_LINES_KEPT) pre.firstElementChild.remove();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }

  function followLog(key) {
    if (state.logSource) state.logSource.close();
    state.logKey = key;
    $('log-lines').replaceChildren();
    setText($('log-target'), key);
    document.querySelectorAll('tbody.app.following').forEach((b) => b.classList.remove('following'));
    const view = state.apps.get(key);
    if (view) view.body.classList.add('following');
    const logState = $('log-state');
    const source = new EventSource(`${appPath(key)}/logs?follow=1&lines=100`);
    state.logSource = source;
    logState.dataset.state = 'connecting';
    setText(logState, 'connecting…');
    source.onopen = () => {
      // Each (re)connection starts with the tail again: show it once.
      $('log-lines').replaceChildren();
      logState.dataset.state = 'ok';
      setText(logState, 'following');
    };
    source.onerror = () => {
      logState.dataset.state = 'error';
      setText(logState, 'disconnected; retrying');
    };
    source.onmessage = (event) => appendLog(event.data, 'message');
    source.addEventListener('line', (event) => appendLog(event.data, 'line'));
    source.addEventListener('skipped', (event) => {
      const count = Number(JSON.parse(event.data).count) || 0;
      appendLog(`… ${count} lines skipped (the page read too slowly)`, 'err');
    });
  }

  // ---- control -----------------------------------------------------------

  /** An error body ({error, hint}) as one sentence; other bodies as they are. */
  function problemText(body) {
    try {
      const parsed = JSON.parse(body);
      if (parsed && parsed.error) return parsed.hint ? `${parsed.error}: ${parsed.hint}` : String(parsed.error);
    } catch (_) {
      // not JSON: shown as it is
    }
    return body;
  }

  async function control(view, action, button) {
    button.disabled = true;
    const what = `${action} ${view.project}/${view.app}`;
    try {
      const response = await fetch(`${appPath(view.key)}/${action}`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${state.token}` },
        cache: 'no-store',
      });
      const body = await response.text();
      if (response.status === 401) {
        notice(`${what}: the token was refused (401). Enter the content of eco serve's --token-file.`, 'error');
      } else if (!response.ok) {
        notice(`${what} failed (${response.status}): ${problemText(body)}`, 'error');
      } else {
        notice(`${what}: done`, 'ok');
      }
    } catch (err) {
      notice(`${what}: cannot reach eco serve (${err.message})`, 'error');
    } finally {
      button.disabled = false;
      pollSoon();
    }
  }

  // ---- the token ---------------------------------------------------------

  function showToken() {
    const has = Boolean(state.token);
    $('token-forget').hidden = !has;
    $('token-input').placeholder = has ? 'token set (controls on)' : 'control token';
    document.body.dataset.token = has ? 'set' : 'none';
    renderAll();
  }

  function setupToken() {
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const input = $('token-input');
      const token = input.value.trim();
      input.value = '';
      if (!token) return;
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      showToken();
    });
    $('token-forget').addEventListener('click', () => {
      state.token = '';
      sessionStorage.removeItem(TOKEN_KEY);
      showToken();
    });
  }

  // ---- start -------------------------------------------------------------

  function start() {
    setupToken();
    $('log-clear').addEventListener('click', () => $('log-lines').replaceChildren());
    showToken();
    followEvents();
    poll();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
