//! Replace a file so that, at every moment, its path holds either the old content or the new
//! content, whole: a crash, a full disk or a failing writer never leaves a half-written file
//! under the real name.
//!
//! The steps, each for a reason:
//! 1. create a temporary file in the SAME directory (a rename is atomic only within one
//!    file system), with `create_new` so two writers never share one, and lock it until
//!    the rename, so that a clean-up by another process leaves it alone;
//! 2. write the content through the caller's closure, then `sync_all`: the data is on disk
//!    before the name points at it (otherwise a crash after the rename can leave an empty file);
//! 3. rename the temporary over the target: POSIX makes this atomic;
//! 4. `sync_all` the directory, so the rename itself survives a crash.
//!
//! On any error before the rename the temporary file is removed and the target is untouched.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Distinguishes temporary files of one process (the process id distinguishes processes).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary file's name: hidden, next to the target, ending in `.tmp`.
/// `checkpoint.safetensors` -> `.checkpoint.safetensors.<pid>.<n>.tmp`.
pub fn temp_path_for(path: &Path) -> Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| Error::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        ".{}.{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        n
    );
    Ok(path.with_file_name(name))
}

/// Removes the temporary files of `path` (named as [`temp_path_for`] names them) that a
/// process killed mid-write left behind, and returns how many. Only names this module gives,
/// only plain files, and only those no live writer holds: a writer keeps an exclusive lock
/// on its temporary file until the rename (see [`write_atomically`]), so a file whose lock
/// can be taken has no writer, and where the system says (Linux's /proc) the process named
/// in the file must be gone too. Another run writing into the same folder, even from
/// another container, keeps its files.
pub fn remove_stale_temps(path: &Path) -> Result<usize> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(0);
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io_error(dir)(source)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_error(dir))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        // `.<name>.<pid>.<n>.tmp`
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|rest| rest.split_once('.'))
            .filter(|(_, n)| n.parse::<u64>().is_ok())
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let stale = entry.path();
        if !entry.file_type().map_err(io_error(&stale))?.is_file()
            || pid == std::process::id()
            || process_alive(pid)
        {
            continue;
        }
        let Ok(handle) = File::open(&stale) else {
            continue; // gone already, or not ours to read
        };
        match handle.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => continue, // a live writer
            Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {}
            Err(fs::TryLockError::Error(e)) => return Err(io_error(&stale)(e)),
        }
        fs::remove_file(&stale).map_err(io_error(&stale))?;
        removed += 1;
    }
    Ok(removed)
}

/// Whether process `pid` exists here, where the system says (Linux's /proc); false where it
/// cannot say, which leaves the decision to the file lock.
fn process_alive(pid: u32) -> bool {
    Path::new("/proc/self").exists() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Writes `path` atomically: `write` fills a buffered temporary file in the same directory,
/// which then replaces `path` (see the module doc for the steps). Errors name `path`.
///
/// `write` is also the seam through which tests inject a failing writer (a full disk).
pub fn write_atomically<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let temp = temp_path_for(path)?;
    let named = |source: io::Error| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(named)?;
    // From here on, any failure must remove the temporary file. The lock, held until after
    // the rename, tells [`remove_stale_temps`] of another process that the file is live
    // (a file system without locks still writes, unguarded).
    let written = match file.lock() {
        Err(e) if e.kind() != io::ErrorKind::Unsupported => Err(e),
        _ => fill_and_sync(&file, write).and_then(|()| fs::rename(&temp, path)),
    };
    drop(file);
    if let Err(source) = written {
        // Best effort: the error that matters is the one we return.
        let _ = fs::remove_file(&temp);
        return Err(named(source));
    }
    sync_parent_dir(path).map_err(named)
}

/// Step 2: write through a buffer, flush it, and fsync the file.
fn fill_and_sync<F>(file: &File, write: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let mut buffered = BufWriter::new(file);
    write(&mut buffered)?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// Step 4: make the rename durable. Directories cannot be opened for syncing on Windows;
/// there the rename is all we can do.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
