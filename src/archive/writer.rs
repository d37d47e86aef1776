//! Writes the archive: a tar stream with fixed headers, through the seekable zstd writer, to disk and (on a
//! thread of its own) through sha256 for the `.sha256` sidecar. Same entries in, same bytes out.
//!
//! The tar framing is written here (a ustar header, the data, zero padding to 512 bytes, two zero blocks at
//! the end) rather than by `tar::Builder`, so that blob bytes are read straight into the compressor's buffers.

use std::fs::File;
use std::io::{self, Read, Write};

use super::seekable::{SeekableWriter, read_up_to};
use crate::oci::digest::{Digest, DigestWriter};

/// The archive file, written in whole frames, with writeback started every `WRITEBACK_STEP` bytes: the disk
/// writes while the export runs, and the `fsync` that makes the archive durable at the end waits for the last
/// few MiB instead of the whole archive (0.12 s of 300 MB here, all on the critical path).
struct WritebackFile {
    file: File,
    written: u64,
    /// Where writeback was last started up to.
    started: u64,
}

const WRITEBACK_STEP: u64 = 8 << 20;

impl WritebackFile {
    fn written(&mut self, n: usize) {
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            start_writeback(&self.file, self.started, self.written - self.started);
            self.started = self.written;
        }
    }
}

/// Ask the kernel to start writing back a range, without waiting. Only an optimisation: errors are ignored
/// (the final `fsync` reports what matters).
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is open for the duration of the call.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written(n);
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.file.write_vectored(bufs)?;
        self.written(n);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct ArchiveWriter {
    /// The file, and sha256 of everything written to it (which also counts the bytes).
    out: SeekableWriter<WritebackFile, DigestWriter>,
    /// Uncompressed tar offset of the next entry's header.
    position: u64,
}

/// What was written.
pub struct WrittenArchive {
    pub file: File,
    pub digest: Digest,
    pub compressed_len: u64,
    pub tar_len: u64,
}

const BLOCK: u64 = 512;
const ZEROS: [u8; BLOCK as usize] = [0; BLOCK as usize];

impl ArchiveWriter {
    pub fn new(file: File, threads: usize) -> ArchiveWriter {
        // No buffering: everything arrives in whole frames.
        let file = WritebackFile { file, written: 0, started: 0 };
        ArchiveWriter { out: SeekableWriter::with_copy(file, DigestWriter::new(), threads), position: 0 }
    }

    pub fn add_dir(&mut self, path: &str) -> io::Result<()> {
        self.out.write_all(header(path, 0, tar::EntryType::Directory)?.as_bytes())?;
        self.position += BLOCK;
        Ok(())
    }

    pub fn add_bytes(&mut self, path: &str, bytes: &[u8]) -> io::Result<()> {
        self.add_reader(path, bytes.len() as u64, bytes)
    }

    /// Append a regular file of exactly `size` bytes read from `reader`. The bytes go from the reader straight
    /// into the compressor's buffers: tar's own builder would copy them twice more.
    pub fn add_reader(&mut self, path: &str, size: u64, mut reader: impl Read) -> io::Result<()> {
        self.out.write_all(header(path, size, tar::EntryType::Regular)?.as_bytes())?;
        let ended_early = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(e.kind(), format!("{path}: expected {size} bytes: {e}")),
            _ => e,
        };
        // The first bytes say whether the content is compressed already (most layers are).
        let mut magic = [0u8; MAGIC_LEN];
        let n = read_up_to(&mut reader, &mut magic[..(size.min(MAGIC_LEN as u64) as usize)])?;
        let incompressible = is_compressed(&magic[..n]);
        self.out.write_from(&mut &magic[..n], n as u64, incompressible).map_err(ended_early)?;
        self.out.write_from(&mut reader, size - n as u64, incompressible).map_err(ended_early)?;
        let padding = size.next_multiple_of(BLOCK) - size;
        self.out.write_all(&ZEROS[..padding as usize])?;
        self.position += BLOCK + size + padding;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<WrittenArchive> {
        // The end-of-archive marker: two zero blocks.
        self.out.write_all(&ZEROS)?;
        self.out.write_all(&ZEROS)?;
        let tar_len = self.position + 2 * BLOCK;
        let (file, digest) = self.out.finish()?;
        let digest = digest.expect("made with a copy");
        let compressed_len = digest.len();
        let digest = digest.finish();
        let file = file.file;
        file.sync_all()?;
        Ok(WrittenArchive { file, digest, compressed_len, tar_len })
    }
}

const MAGIC_LEN: usize = 6;

/// Whether `start` opens gzip, zstd, xz or bzip2 data: content zstd would not shrink.
fn is_compressed(start: &[u8]) -> bool {
    start.starts_with(&[0x1f, 0x8b])
        || start.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || start.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || start.starts_with(b"BZh")
}

/// A ustar header with everything that could vary between machines fixed: owner 0:0, mtime 0, no user or
/// group names, modes 0644/0755.
fn header(path: &str, size: u64, kind: tar::EntryType) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    Ok(h)
}
