//! `eco export systemd|kubernetes`: loads the file, calls the pure
//! renderers of [`crate::export`], and writes their files or prints them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::args::ExportTarget;
use crate::error::UsageError;
use crate::export::{Export, kubernetes, systemd};

pub fn run(target: ExportTarget) -> Result<i32> {
    match target {
        ExportTarget::Systemd {
            file,
            profile,
            output,
            user,
        } => {
            let spec = super::load(&file, &profile)?;
            // A value no unit can hold is invalid input: exit 2, naming its key.
            let export = systemd::export(&spec, systemd::Options { user }, &which)
                .map_err(|e| UsageError(e.to_string()))?;
            warn(&export);
            write_all(&output, &export)?;
            let (scope, dir) = if user {
                ("--user ", "~/.config/systemd/user")
            } else {
                ("", "/etc/systemd/system")
            };
            println!(
                "wrote {} files to {}\nnext: cp -r {}/* {dir}/ && systemctl {scope}daemon-reload \
                 && systemctl {scope}enable --now {}.target",
                export.files.len(),
                output.display(),
                output.display(),
                spec.name
            );
            Ok(0)
        }
        ExportTarget::Kubernetes {
            file,
            profile,
            image,
            app_image,
            output,
        } => {
            let spec = super::load(&file, &profile)?;
            let options = kubernetes::Options {
                image,
                app_images: app_image,
            };
            let export =
                kubernetes::export(&spec, &options).map_err(|e| UsageError(e.to_string()))?;
            warn(&export);
            match output {
                Some(dir) => {
                    write_all(&dir, &export)?;
                    println!("wrote {} files to {}", export.files.len(), dir.display());
                }
                None => {
                    let docs: Vec<&str> = export.files.iter().map(|(_, d)| d.as_str()).collect();
                    print!("---\n{}", docs.join("---\n"));
                }
            }
            Ok(0)
        }
    }
}

fn warn(export: &Export) {
    for warning in &export.warnings {
        eprintln!("eco: warning: {warning}");
    }
}

fn write_all(dir: &Path, export: &Export) -> Result<()> {
    for (name, contents) in &export.files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the folder {}", parent.display()))?;
        }
        fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The first executable `name` on PATH, as a shell would find it.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
