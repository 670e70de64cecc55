//! Free-space guard for the data directory.
//!
//! A storage engine that runs out of space mid-write can only fail hard. Refusing
//! new writes while the file system is nearly full turns that into a clear,
//! retryable error and leaves room for the log, compaction and snapshots.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a free-space reading is reused; statvfs on every write is wasted work.
const READING_TTL: Duration = Duration::from_millis(500);

/// Checks free space on the data directory's file system.
pub struct DiskGuard {
    dir: PathBuf,
    min_free_bytes: u64,
    last: Mutex<Option<(Instant, u64)>>,
}

impl DiskGuard {
    /// A guard for `dir` refusing writes below `min_free_bytes`.
    pub fn new(dir: &Path, min_free_bytes: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            min_free_bytes,
            last: Mutex::new(None),
        }
    }

    /// `Err((free, min))` when free space is below the floor. A failed reading
    /// lets the write through: the engine's own error is then the report.
    pub fn check(&self) -> Result<(), (u64, u64)> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let free = match *last {
            Some((at, free)) if at.elapsed() < READING_TTL => free,
            _ => match free_bytes(&self.dir) {
                Some(free) => {
                    *last = Some((Instant::now(), free));
                    free
                }
                None => return Ok(()),
            },
        };
        if free < self.min_free_bytes {
            Err((free, self.min_free_bytes))
        } else {
            Ok(())
        }
    }
}

/// Bytes available to unprivileged users on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    space(dir).map(|(free, _)| free)
}

/// Free bytes (available to this process) and total size of the file
/// system holding `dir`.
pub fn space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string and `stat` is a plain
    // out-parameter that statvfs fully initializes on success.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        let unit = stat.f_frsize as u64;
        Some((
            (stat.f_bavail as u64).saturating_mul(unit),
            (stat.f_blocks as u64).saturating_mul(unit),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_free_space_and_floor() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(DiskGuard::new(dir.path(), 1).check().is_ok());
        let (free, min) = DiskGuard::new(dir.path(), u64::MAX).check().unwrap_err();
        assert!(free < min);
    }
}
