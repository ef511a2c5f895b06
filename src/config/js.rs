//! PM2's JavaScript ecosystem files (`ecosystem.config.js`, `.cjs`,
//! `.mjs`), evaluated by the machine's `node` in a child process that
//! prints the exports as JSON: no config code runs inside eco.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script node runs: load the file (require, or import for ES
/// modules), print its exports as JSON.
const EVALUATE: &str = r"
const url = require('url');
const file = process.argv[1];
const esm = () => import(url.pathToFileURL(file).href);
async function load() {
  if (file.endsWith('.mjs')) return esm();
  try { return require(file); } catch (e) {
    if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) return esm();
    throw e;
  }
}
load().then((m) => {
  if (m && m[Symbol.toStringTag] === 'Module') m = 'default' in m ? m.default : { ...m };
  process.stdout.write(JSON.stringify(m === undefined ? null : m));
}, (e) => {
  process.stderr.write(String((e && e.stack) || e));
  process.exit(3);
});
";

/// How long a config file may take to evaluate.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The most JSON eco reads back (as for any ecosystem file).
const MAX_OUTPUT: u64 = super::MAX_FILE_BYTES;

/// Whether eco reads `file` as JavaScript.
pub fn is_js(file: &Path) -> bool {
    matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("js" | "cjs" | "mjs")
    )
}

/// Why a JavaScript file could not be read: (message, hint).
pub type JsError = (String, Option<String>);

/// Runs `node` on `file` and parses what it prints.
pub fn evaluate(file: &Path) -> Result<serde_json::Value, JsError> {
    let node = std::env::var_os("ECO_NODE").unwrap_or_else(|| "node".into());
    let folder = file.parent().unwrap_or(Path::new("/"));
    let mut child = Command::new(&node)
        .arg("-e")
        .arg(EVALUATE)
        .arg(file)
        .current_dir(folder)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                (
                    "node is needed to read a JavaScript ecosystem file, and it is not on PATH".into(),
                    Some("install Node.js (or set ECO_NODE to its path), or convert the file once on a machine with node: `eco import ecosystem.config.js > ecosystem.yaml`".into()),
                )
            } else {
                (format!("cannot run node: {err}"), None)
            }
        })?;
    let out = child.stdout.take();
    let err = child.stderr.take();
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(MAX_OUTPUT + 1).read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = reader(out.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = reader(err.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    format!("node did not finish evaluating the file in {}s", TIMEOUT.as_secs()),
                    Some("the file must only build its exports (a timer or a server keeps node running)".into()),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err((format!("cannot wait for node: {e}"), None)),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let first: Vec<&str> = text.lines().take(6).collect();
        return Err((
            format!(
                "node could not evaluate the file:\n    {}",
                first.join("\n    ")
            ),
            Some("fix the error above (PM2 would fail the same way)".into()),
        ));
    }
    if u64::try_from(out.len()).unwrap_or(u64::MAX) > MAX_OUTPUT {
        return Err((
            "the file's exports are larger than 1 MiB as JSON".into(),
            None,
        ));
    }
    serde_json::from_slice(&out).map_err(|e| {
        (
            format!("node printed something that is not JSON: {e}"),
            None,
        )
    })
}
