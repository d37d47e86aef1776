//! The archive file as written: with `O_DIRECT` where the filesystem allows it, through the page cache where not.
//!
//! An archive is written once and not read again on this host (it goes to removable media or a transfer
//! service). Through the page cache, every byte costs a copy into freshly allocated cache pages, writeback
//! work, and a long `fsync` at the end, and a large export evicts everything else the host had cached. With
//! `O_DIRECT` the compressed frames go from one reused, aligned buffer to the disk. Filesystems that refuse it
//! (tmpfs before Linux 6.6, some network and FUSE filesystems) say so at `open` or at the first write, and the
//! file is then written normally: the bytes are the same either way.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Alignment `O_DIRECT` needs for buffer addresses, file offsets and lengths (the largest logical block size).
const ALIGN: usize = 4096;
/// Bytes per direct write.
const BLOCK: usize = 4 << 20;

pub struct ArchiveOutput {
    /// The file as opened by the caller (buffered); used for the fallback, the final length and `fsync`.
    file: File,
    direct: Option<File>,
    /// `BLOCK + ALIGN` bytes, of which `BLOCK` starting at `start` are aligned.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// File offset of `buf`'s first byte.
    offset: u64,
}

impl ArchiveOutput {
    /// `path` names `file` (opened again with `O_DIRECT` if possible); writing starts at offset 0.
    pub fn new(file: File, path: &Path) -> ArchiveOutput {
        let direct = open_direct(path);
        let buf = vec![0u8; BLOCK + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN);
        ArchiveOutput { file, direct, buf, start, filled: 0, offset: 0 }
    }

    /// Whether the bytes are going around the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn block(&self, len: usize) -> &[u8] {
        &self.buf[self.start..self.start + len]
    }

    /// Write `len` buffered bytes (a multiple of `ALIGN`, or the whole tail in buffered mode) at `offset`.
    fn write_block(&mut self, len: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Some(direct) = &self.direct {
            match direct.write_all_at(self.block(len), self.offset) {
                Ok(()) => return Ok(()),
                // Refused on the first write: this filesystem does not do direct I/O after all.
                Err(e) if self.offset == 0 && e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(self.block(len), self.offset)
    }

    /// Write what is left and make the file exactly as long as what was written, durable on disk.
    pub fn finish(mut self) -> io::Result<File> {
        let len = self.offset + self.filled as u64;
        if self.filled > 0 {
            let padded = if self.direct.is_some() { self.filled.next_multiple_of(ALIGN) } else { self.filled };
            let (start, filled) = (self.start, self.filled);
            self.buf[start + filled..start + padded].fill(0);
            self.write_block(padded)?;
        }
        // Direct writes of the tail were padded to the alignment.
        self.file.set_len(len)?;
        self.file.sync_all()?;
        Ok(self.file)
    }
}

impl Write for ArchiveOutput {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = (BLOCK - self.filled).min(data.len());
        let at = self.start + self.filled;
        self.buf[at..at + take].copy_from_slice(&data[..take]);
        self.filled += take;
        if self.filled == BLOCK {
            self.write_block(BLOCK)?;
            self.offset += BLOCK as u64;
            self.filled = 0;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_through(output: &mut ArchiveOutput, data: &[u8]) {
        // Uneven pieces, as frames are.
        for piece in data.chunks(1_000_003) {
            output.write_all(piece).unwrap();
        }
    }

    #[test]
    fn the_file_holds_exactly_the_bytes_written_direct_or_not() {
        let data: Vec<u8> = (0..(BLOCK * 2 + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        for direct_wanted in [true, false] {
            let dir = tempfile::tempdir_in(".").unwrap();
            let path = dir.path().join("a");
            // Stale longer content must not survive.
            std::fs::write(&path, vec![1u8; BLOCK * 3]).unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut output = ArchiveOutput::new(file, &path);
            if !direct_wanted {
                output.direct = None;
            }
            write_through(&mut output, &data);
            output.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "direct: {direct_wanted}");
        }
    }

    #[test]
    fn small_files_work_too() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let path = dir.path().join("a");
        let file = File::create(&path).unwrap();
        let mut output = ArchiveOutput::new(file, &path);
        output.write_all(b"tiny").unwrap();
        output.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"tiny");
    }
}
