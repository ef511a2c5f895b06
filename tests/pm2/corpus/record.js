// Turns `pm2 jlist` (PM2 7.0.4) into the values tests/pm2_corpus.rs checks
// under eco: per app its mode and instances, per instance the argv PM2
// executes, the cwd, selected env and the pid file. Paths inside the
// corpus folder are written `{dir}/...`.
// Usage: node record.js DIR CONFIG JLIST.json [ENV] > CONFIG.pm2.json
const fs = require('fs');
const os = require('os');
const path = require('path');

const [dir, config, jlistFile, envName] = process.argv.slice(2);
const real = fs.realpathSync(dir);
const rel = (p) => {
  if (typeof p !== 'string') return p;
  for (const d of [real, dir]) {
    if (p === d) return '{dir}';
    if (p.startsWith(d + '/')) return '{dir}/' + p.slice(d.length + 1);
  }
  return p;
};
const procs = JSON.parse(fs.readFileSync(jlistFile, 'utf8'))
  .sort((a, b) => a.pm_id - b.pm_id);
// The env keys the file itself sets, and those PM2 adds.
const keys = new Set(['PORT', 'NODE_APP_INSTANCE']);
const text = fs.readFileSync(path.join(dir, config), 'utf8');
for (const m of text.matchAll(/\b([A-Z][A-Z0-9_]+)["']?\s*:/g)) keys.add(m[1]);
const apps = {};
for (const p of procs) {
  const e = p.pm2_env;
  const app = (apps[e.name] ||= { mode: e.exec_mode.replace(/_mode$/, ''), instances: 0, processes: [] });
  app.instances += 1;
  const interp = e.exec_interpreter;
  const args = [].concat(e.args || []);
  const nodeArgs = [].concat(e.node_args || []);
  const argv = interp === 'none'
    ? [path.basename(e.pm_exec_path), ...args]
    : [path.basename(interp), ...nodeArgs, rel(e.pm_exec_path), ...args];
  const env = {};
  // PM2 sets PYTHONUNBUFFERED for Python apps (it may be in the caller's env too).
  const wanted = interp.includes('python') ? [...keys, 'PYTHONUNBUFFERED'] : [...keys];
  for (const k of wanted.sort()) {
    const v = e.env && k in e.env ? e.env[k] : e[k];
    if (v !== undefined && v !== null) env[k] = String(v);
  }
  const pid = rel(e.pm_pid_path);
  app.processes.push({
    status: e.status,
    argv,
    cwd: rel(e.pm_cwd),
    env,
    ...(pid.startsWith('{dir}') ? { pid_file: pid } : {}),
  });
}
process.stdout.write(JSON.stringify({
  pm2: '7.0.4',
  config,
  ...(envName ? { env: envName } : {}),
  cpus: os.cpus().length,
  apps,
}, null, 2) + '\n');
