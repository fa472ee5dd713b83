//! The few file-system moves that durability rests on, in one place.
//!
//! A new or renamed file is durable only once the file itself is fsynced and then the
//! directory that names it is fsynced; forgetting the second step loses the file on a crash
//! on ext4 and others. Writes go through [`write_at`], which undoes a partial write (a full
//! disk) by cutting the file back to where it was.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{is_no_space, Result, WalError};
use crate::faults::{enospc, FaultInjector};

pub type Faults = Option<Arc<FaultInjector>>;

/// fsyncs a directory so that creations, renames and removals in it are durable. A failure
/// is returned as [`WalError::Poisoned`].
pub fn sync_dir(dir: &Path, faults: &Faults) -> Result<()> {
    let res = check_sync(faults).and_then(|skip| if skip { Ok(()) } else { File::open(dir)?.sync_all() });
    res.map_err(|e| poisoned(dir, "fsync of directory", e))
}

/// fdatasync (`all == false`) or fsync (`all == true`) of a file. A failure is returned as
/// [`WalError::Poisoned`]: the caller must never retry on the same descriptor.
pub fn sync_file(file: &File, path: &Path, all: bool, faults: &Faults) -> Result<()> {
    let res = check_sync(faults).and_then(|skip| match (skip, all) {
        (true, _) => Ok(()),
        (false, true) => file.sync_all(),
        (false, false) => file.sync_data(),
    });
    res.map_err(|e| poisoned(path, if all { "fsync" } else { "fdatasync" }, e))
}

/// `Ok(true)` when a test asked to skip syncs.
fn check_sync(faults: &Faults) -> io::Result<bool> {
    match faults {
        Some(f) => f.check_sync(),
        None => Ok(false),
    }
}

pub fn poisoned(path: &Path, what: &str, e: io::Error) -> WalError {
    WalError::Poisoned { cause: format!("{what} of {} failed: {e}", path.display()) }
}

/// Writes all of `buf` at `offset` (the file's current end). If the write fails part way,
/// cuts the file back to `offset` so that no partial record is left behind, and returns
/// [`WalError::NoSpace`] for a full disk. If even the cut fails, or the error was not a full
/// disk, the file's state is unknown and the error is [`WalError::Poisoned`].
pub fn write_at(file: &File, path: &Path, buf: &[u8], offset: u64, faults: &Faults) -> Result<()> {
    let allowed = faults.as_ref().map_or(buf.len(), |f| f.take_space(buf.len()));
    let res =
        file.write_all_at(&buf[..allowed], offset).and_then(
            |()| {
                if allowed < buf.len() {
                    Err(enospc())
                } else {
                    Ok(())
                }
            },
        );
    let Err(e) = res else { return Ok(()) };
    if let Err(cut) = file.set_len(offset) {
        return Err(poisoned(path, "undoing a failed write", cut));
    }
    if is_no_space(&e) {
        Err(WalError::NoSpace { path: path.to_path_buf() })
    } else {
        Err(poisoned(path, "write", e))
    }
}

/// Makes `file` `len` bytes long with its blocks allocated (reading as zeros), when it is
/// shorter. Best effort: `false` when the file system refused (no support, or no space);
/// the file may then have grown part of the way, in zeros, which recovery and
/// `Segment::seal` take as they take preallocated space, and it grows with each write
/// past that. Durable with the file's next fdatasync, like any size change.
pub fn preallocate(file: &File, len: u64) -> bool {
    match file.metadata() {
        Ok(meta) if meta.len() >= len => true,
        Ok(_) => rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len).is_ok(),
        Err(_) => false,
    }
}

/// Creates `dir/name` holding `parts` one after the other, durably and atomically: the bytes go to
/// `dir/name.tmp`, which is fsynced, renamed to `name`, and the directory fsynced. Readers
/// see either no file or the whole of it. Returns the file, open for reading and writing.
pub fn create_durably(dir: &Path, name: &str, parts: &[&[u8]], faults: &Faults) -> Result<File> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let _ = std::fs::remove_file(&tmp);
    let file =
        OpenOptions::new().read(true).write(true).create_new(true).open(&tmp).map_err(|e| WalError::io(&tmp, e))?;
    let mut offset = 0;
    let mut written = Ok(());
    for part in parts {
        written = write_at(&file, &tmp, part, offset, faults);
        if written.is_err() {
            break;
        }
        offset += part.len() as u64;
    }
    let written = written.and_then(|()| sync_file(&file, &tmp, true, faults));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(|e| WalError::io(&path, e))?;
    sync_dir(dir, faults)?;
    Ok(file)
}

/// Removes leftover `*.tmp` files (an interrupted [`create_durably`]). Returns whether any
/// was removed; the caller fsyncs the directory.
pub fn remove_tmp_files(dir: &Path) -> Result<bool> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(|e| WalError::io(dir, e))? {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            std::fs::remove_file(entry.path()).map_err(|e| WalError::io(entry.path(), e))?;
            removed = true;
        }
    }
    Ok(removed)
}

/// Creates `dir` (and parents) if needed, making the creation durable.
pub fn ensure_dir(dir: &Path, faults: &Faults) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| WalError::io(dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent, faults)?;
    }
    Ok(())
}
