//! [`CacheLock`]: one scheduler (or maintenance command) per cache. An exclusive `flock` on
//! `<root>/lock`, which the kernel drops when its holder dies, so a stale lock (a `kill -9`ed
//! run) never blocks anyone; the file records pid and host for the "in use" message and for the
//! takeover warning.

use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use super::{CacheError, Result};

#[derive(Debug)]
pub struct CacheLock {
    // Held open for the lock's lifetime; closing it releases the flock.
    _file: std::fs::File,
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl CacheLock {
    pub fn acquire(root: &Path) -> Result<CacheLock> {
        let path = root.join("lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| CacheError::NotWritable {
                root: root.to_path_buf(),
                source,
            })?;
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        let (pid, host) = parse(&previous);
        // SAFETY: a valid, open file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(CacheError::Locked {
                    root: root.to_path_buf(),
                    pid,
                    host,
                });
            }
            return Err(CacheError::io("cannot lock", &path)(e));
        }
        if !pid.is_empty() && pid != "-" {
            tracing::warn!("taking over the stale lock of {path} left by pid {pid} on {host} (no longer running)", path = path.display());
        }
        // Written over the old record, then cut to length: rewriting a block the file already
        // has works on a full disk too (the flock is what counts; the record is for messages).
        let me = format!("{} {}\n", std::process::id(), hostname());
        let _ = file
            .rewind()
            .and_then(|_| file.write_all(me.as_bytes()))
            .and_then(|_| file.set_len(me.len() as u64));
        Ok(CacheLock { _file: file })
    }

    /// Whether a live process holds the lock of the cache at `root` (without taking it or
    /// writing anything: `status` uses it while a run may start).
    pub fn is_held(root: &Path) -> bool {
        let Ok(file) = std::fs::File::open(root.join("lock")) else {
            return false;
        };
        // SAFETY: a valid, open file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        // Mark a clean release ("-") so the next holder does not warn about a stale lock.
        let _ = self
            ._file
            .rewind()
            .and_then(|_| self._file.write_all(b"-\n"))
            .and_then(|_| self._file.set_len(2));
    }
}

fn parse(s: &str) -> (String, String) {
    let mut it = s.split_whitespace();
    let pid = it.next().unwrap_or("").to_string();
    let host = it.next().unwrap_or("unknown host").to_string();
    (pid, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_release_frees_it() {
        let t = tempfile::tempdir().unwrap();
        let a = CacheLock::acquire(t.path()).unwrap();
        // flock is per open file description, so a second open in the same process conflicts too.
        match CacheLock::acquire(t.path()) {
            Err(CacheError::Locked { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(a);
        CacheLock::acquire(t.path()).unwrap();
    }
}
