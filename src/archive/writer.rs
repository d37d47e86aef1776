//! Writes the archive: a tar stream with fixed headers, through the seekable zstd writer, hashed on its way
//! to disk for the `.sha256` sidecar. Same entries in, same bytes out.
//!
//! The tar framing is written here (a ustar header, the data, zero padding to 512 bytes, two zero blocks at
//! the end) rather than by `tar::Builder`, so that blob bytes are read straight into the compressor's buffers.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};

use super::seekable::SeekableWriter;
use crate::digest::{Digest, DigestWriter};

/// Hashes and counts the compressed bytes as they are written.
struct HashingWriter<W> {
    inner: W,
    digest: DigestWriter,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub struct ArchiveWriter {
    out: SeekableWriter<HashingWriter<BufWriter<File>>>,
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
        let hashing = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), digest: DigestWriter::new() };
        ArchiveWriter { out: SeekableWriter::new(hashing, threads), position: 0 }
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
        self.out.write_from(&mut reader, size).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => io::Error::new(e.kind(), format!("{path}: expected {size} bytes: {e}")),
            _ => e,
        })?;
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
        let hashing = self.out.finish()?;
        let compressed_len = hashing.digest.len();
        let digest = hashing.digest.finish();
        let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(WrittenArchive { file, digest, compressed_len, tar_len })
    }
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
