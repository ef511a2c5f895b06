//! `write_pid_file` (PM2's `pid_file`): eco writes each instance's pid to
//! a file, as PM2 does, and removes it when the process has exited.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where instance `index` writes its pid for `write_pid_file: base`, as
/// PM2 names it: a trailing `.pid` (or `-N.pid`) becomes `-INDEX.pid`
/// (`app.pid` → `app-0.pid`); any other name is used as it is.
pub fn file_of(base: &Path, index: u32) -> PathBuf {
    let text = base.to_string_lossy();
    let Some(stem) = text.strip_suffix(".pid") else {
        return base.to_path_buf();
    };
    // PM2: replace(/-[0-9]+\.pid$|\.pid$/, '-' + pm_id + '.pid').
    let stem = match stem.rsplit_once('-') {
        Some((head, digits))
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            head
        }
        _ => stem,
    };
    PathBuf::from(format!("{stem}-{index}.pid"))
}

/// Writes `pid` to `path`, atomically (a temporary file in the same folder,
/// then a rename): a reader never sees half a number. The folder is created
/// if missing, as PM2 does. Mode 0644, as PM2's files.
pub fn write(path: &Path, pid: i32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "pid".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.{pid}.tmp", std::process::id()));
    let result = (|| {
        // O_EXCL | O_NOFOLLOW: never writes through a link someone left there.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(format!("{pid}\n").as_bytes())?;
        drop(file);
        // The rename replaces a link at `path` itself, never its target.
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes `path` if it still names `pid`: during a rolling reload the new
/// process of the same instance may have written it already.
pub fn remove(path: &Path, pid: i32) {
    let ours = std::fs::read_to_string(path).is_ok_and(|text| text.trim() == pid.to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// PM2 (God.js): `pm_pid_path.replace(/-[0-9]+\.pid$|\.pid$/, '-' + pm_id + '.pid')`.
    #[test]
    fn named_as_pm2_names_them() {
        let f = |base: &str, i| file_of(Path::new(base), i).display().to_string();
        assert_eq!(f("/srv/run/app.pid", 0), "/srv/run/app-0.pid");
        assert_eq!(f("/srv/run/app.pid", 3), "/srv/run/app-3.pid");
        assert_eq!(f("/srv/run/app-7.pid", 1), "/srv/run/app-1.pid");
        assert_eq!(f("/srv/my-app.pid", 1), "/srv/my-app-1.pid");
        assert_eq!(f("/srv/x-1/app.pid", 2), "/srv/x-1/app-2.pid");
        // Not `.pid`: every instance writes the same file, as in PM2.
        assert_eq!(f("/srv/app.lock", 2), "/srv/app.lock");
    }

    #[test]
    fn written_atomically_then_removed_only_by_its_process() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("run/app-0.pid");
        write(&file, 4242).expect("write");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "4242\n");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // Another process's pid there now: left alone.
        remove(&file, 1);
        assert!(file.exists());
        write(&file, 4343).expect("rewrite");
        remove(&file, 4343);
        assert!(!file.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("run"))
            .expect("dir")
            .collect();
        assert!(left.is_empty(), "no temporary file is left: {left:?}");
    }

    #[test]
    fn a_link_at_the_path_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("victim");
        std::fs::write(&target, "keep").expect("write");
        let file = dir.path().join("app.pid");
        std::os::unix::fs::symlink(&target, &file).expect("symlink");
        write(&file, 7).expect("write");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "keep");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "7\n");
    }
}
