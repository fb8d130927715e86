//! The memory store's state on local disk: one file, always written whole
//! and atomically (a temporary file, `fsync`, `rename`, `fsync` of the
//! directory), so a crash leaves either the previous state or the new one,
//! never a mixture. Its header makes a file that was cut short or damaged
//! recognisable instead of misread:
//!
//! ```text
//! "ANTEROOM" | format: u32 LE | body length: u64 LE | CRC-32 of the body: u32 LE | body
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The file's name in `state_dir`.
pub const FILE_NAME: &str = "state.bin";
const MAGIC: &[u8; 8] = b"ANTEROOM";
/// The layout of the body; a newer anteroom reads older formats.
pub const FORMAT: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 4;

/// What is wrong with the state directory or file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory cannot be made or written.
    #[error("store.state_dir {}: {reason}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The file cannot be read or written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The file is not an anteroom state file.
    #[error("{}: not an anteroom state file", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// Written by a newer anteroom.
    #[error("{}: state format {found} is newer than this anteroom reads ({FORMAT})", path.display())]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u32,
    },
    /// Cut short.
    #[error("{}: truncated: {found} bytes of state where its header promises {expected}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes of body promised.
        expected: u64,
        /// Bytes of body found.
        found: u64,
    },
    /// The body does not match its checksum.
    #[error("{}: damaged: the state does not match its checksum", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
    },
    /// The body is complete but cannot be decoded.
    #[error("{}: unreadable state: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
}

/// The state file in its directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    /// The state file of `dir`, which is created if missing and must be writable.
    pub fn open(dir: &Path) -> Result<StateFile, StateError> {
        let fail = |reason: String| StateError::Dir {
            dir: dir.to_owned(),
            reason,
        };
        fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create: {e}")))?;
        let probe = dir.join(".anteroom-write-test");
        File::create(&probe)
            .and_then(|mut f| f.write_all(b"ok"))
            .map_err(|e| fail(format!("not writable: {e}")))?;
        let _ = fs::remove_file(&probe);
        Ok(StateFile {
            dir: dir.to_owned(),
        })
    }

    /// Where the state is.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The saved body, `None` when there is no file yet (a first start).
    /// Only a regular file is read: it is opened without following a
    /// symlink and without blocking (a FIFO put there would block `open`
    /// for ever), then checked on the open descriptor.
    pub fn read(&self) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.path();
        let fail = |reason: String| StateError::Io {
            path: path.clone(),
            reason,
        };
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(fail("is a symbolic link, not a regular file".into()));
            }
            Err(e) => return Err(fail(format!("cannot read: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if !meta.is_file() {
            return Err(fail("is not a regular file".into()));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        decode(&path, bytes).map(Some)
    }

    /// Replaces the saved state with `body`, atomically.
    pub fn write(&self, body: &[u8]) -> Result<(), StateError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let io = |e: std::io::Error| StateError::Io {
            path: tmp.clone(),
            reason: format!("cannot write: {e}"),
        };
        // Made anew, never opened through whatever is in its place: a
        // symlink there is removed, not followed (`create_new` is O_EXCL,
        // which refuses any existing name, a dangling link included).
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io)?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT.to_le_bytes());
        header.extend_from_slice(&(body.len() as u64).to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        file.write_all(&header).map_err(io)?;
        file.write_all(body).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io)?;
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Moves an unusable file out of the way (kept for inspection), so the
    /// next write does not replace the evidence; returns where it went.
    pub fn set_aside(&self, now_secs: u64) -> Option<PathBuf> {
        let to = self.dir.join(format!("{FILE_NAME}.bad-{now_secs}"));
        fs::rename(self.path(), &to).ok().map(|()| to)
    }
}

fn decode(path: &Path, bytes: Vec<u8>) -> Result<Vec<u8>, StateError> {
    let path = path.to_owned();
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(StateError::Foreign { path });
    }
    if bytes.len() < HEADER {
        return Err(StateError::Truncated {
            path,
            expected: 0,
            found: 0,
        });
    }
    let word = |at: usize, n: usize| {
        bytes[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    };
    let format = word(8, 4) as u32;
    if format > FORMAT {
        return Err(StateError::Newer {
            path,
            found: format,
        });
    }
    let expected = word(12, 8);
    let crc = word(20, 4) as u32;
    let found = (bytes.len() - HEADER) as u64;
    if found != expected {
        return Err(StateError::Truncated {
            path,
            expected,
            found,
        });
    }
    let body = bytes[HEADER..].to_vec();
    if crc32fast::hash(&body) != crc {
        return Err(StateError::Damaged { path });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_is_read_and_no_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::open(&dir.path().join("state")).unwrap();
        // A FIFO would block `open` for ever: it is refused at once.
        let made = std::process::Command::new("mkfifo")
            .arg(file.path())
            .status()
            .unwrap();
        assert!(made.success());
        let e = file.read().unwrap_err().to_string();
        assert!(e.contains("is not a regular file"), "{e}");
        fs::remove_file(file.path()).unwrap();
        // A directory in its place.
        fs::create_dir(file.path()).unwrap();
        assert!(file.read().is_err());
        fs::remove_dir(file.path()).unwrap();
        // A symlink, even to a good state file, is not followed.
        let elsewhere = dir.path().join("elsewhere");
        let other = StateFile::open(&elsewhere).unwrap();
        other.write(b"theirs").unwrap();
        std::os::unix::fs::symlink(other.path(), file.path()).unwrap();
        let e = file.read().unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        fs::remove_file(file.path()).unwrap();
        // A symlink where the temporary file goes is replaced, never written through.
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep me").unwrap();
        let tmp = file.path().with_file_name(format!("{FILE_NAME}.tmp"));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        file.write(b"the line").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(file.read().unwrap().unwrap(), b"the line");
    }

    #[test]
    fn a_written_state_reads_back_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::open(&dir.path().join("state")).unwrap();
        assert!(file.read().unwrap().is_none(), "no file yet");
        file.write(b"the line").unwrap();
        assert_eq!(file.read().unwrap().unwrap(), b"the line");

        let whole = fs::read(file.path()).unwrap();
        fs::write(file.path(), &whole[..whole.len() - 3]).unwrap();
        let e = file.read().unwrap_err().to_string();
        assert!(
            e.contains("truncated: 5 bytes of state where its header promises 8"),
            "{e}"
        );

        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        fs::write(file.path(), &flipped).unwrap();
        assert!(matches!(file.read(), Err(StateError::Damaged { .. })));

        fs::write(file.path(), b"[server]\n").unwrap();
        assert!(matches!(file.read(), Err(StateError::Foreign { .. })));
        fs::write(file.path(), &whole[..10]).unwrap();
        assert!(matches!(file.read(), Err(StateError::Truncated { .. })));

        let aside = file.set_aside(7).unwrap();
        assert!(aside.ends_with("state.bin.bad-7") && aside.exists());
        assert!(file.read().unwrap().is_none());
    }
}
