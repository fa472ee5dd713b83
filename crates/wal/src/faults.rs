//! Fault injection for tests: make the next fsyncs fail, make the disk "full", or skip
//! fsyncs altogether.
//!
//! Real ENOSPC and EIO cannot be produced on demand on a developer's machine without root and
//! a scratch file system, so the write and sync paths ask this injector first. It is inert
//! unless a test installs it through [`crate::WalOptions::faults`].
//!
//! Skipping fsyncs is for tests that model a crash by cutting copies of the files at the
//! offsets the log reported durable: they check the log's bookkeeping, not the kernel's, and
//! thousands of real fsyncs on a busy shared disk would make them slow.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared switches a test flips while a [`crate::Wal`] runs.
#[derive(Debug)]
pub struct FaultInjector {
    fail_syncs: AtomicBool,
    skip_syncs: AtomicBool,
    /// Bytes that may still be written before writes fail with ENOSPC (`u64::MAX`: no limit).
    space_left: AtomicU64,
}

impl Default for FaultInjector {
    fn default() -> Self {
        FaultInjector {
            fail_syncs: AtomicBool::new(false),
            skip_syncs: AtomicBool::new(false),
            space_left: AtomicU64::new(u64::MAX),
        }
    }
}

impl FaultInjector {
    pub fn new() -> FaultInjector {
        FaultInjector::default()
    }

    /// While on, every fsync and fdatasync fails with EIO.
    pub fn fail_syncs(&self, on: bool) {
        self.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// While on (and syncs are not failing), fsyncs report success without reaching the
    /// kernel. Only for tests that simulate crashes themselves.
    pub fn skip_syncs(&self, on: bool) {
        self.skip_syncs.store(on, Ordering::SeqCst);
    }

    /// After `bytes` more bytes, writes fail with ENOSPC (a write that crosses the limit is
    /// partly done first, as a real one may be). `None` lifts the limit.
    pub fn limit_space(&self, bytes: Option<u64>) {
        self.space_left.store(bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// `Err` to fail the sync, `Ok(true)` to skip it, `Ok(false)` to do it.
    pub(crate) fn check_sync(&self) -> io::Result<bool> {
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure (EIO)"));
        }
        Ok(self.skip_syncs.load(Ordering::SeqCst))
    }

    /// How many of `len` bytes may be written now.
    pub(crate) fn take_space(&self, len: usize) -> usize {
        let left = self.space_left.load(Ordering::SeqCst);
        if left == u64::MAX {
            return len;
        }
        let granted = left.min(len as u64);
        self.space_left.store(left - granted, Ordering::SeqCst);
        granted as usize
    }
}

/// The "no space" error as the OS reports it.
pub(crate) fn enospc() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "injected: no space left on device")
}
