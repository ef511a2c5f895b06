//! Parse, validate and plan a generated file of 1,000 apps.
//! Run: `cargo bench --bench plan`. Prints the median of 21 runs.

use std::fmt::Write;
use std::time::Instant;

fn generated(apps: usize) -> String {
    let mut text = String::from("name: big\nenv:\n  NODE_ENV: production\napps:\n");
    for i in 0..apps {
        let _ = write!(
            text,
            "  app{i}:\n    cmd: node server.js --port {port}\n    instances: 2\n    env: {{ PORT: {port}, NAME: app{i} }}\n    restart_delay: 250ms\n    max_memory: 300M\n    watch: [\"src/**/*.js\"]\n",
            port = 3000 + i
        );
        if i > 0 {
            let _ = writeln!(text, "    depends_on: [app{}]", i - 1);
        }
    }
    text
}

fn main() {
    let text = generated(1000);
    let folder = std::env::temp_dir();
    let mut times = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let spec = eco::config::validate(&eco::config::Input {
            file: folder.join("ecosystem.yaml"),
            text: &text,
            profile: None,
            cpus: 2,
            fs: &eco::config::RealFs,
        })
        .expect("the generated file is valid");
        let actions = eco::plan::plan(&spec, &eco::state::Observed::new());
        assert_eq!(actions.len(), 1000);
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "parse + validate + plan, 1,000 apps ({} KiB): median {:.1} ms, min {:.1} ms, max {:.1} ms",
        text.len() / 1024,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );
}
