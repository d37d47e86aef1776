//! Writes the archive: a tar stream with fixed headers, through the seekable zstd writer, hashed on its way
//! to disk for the `.sha256` sidecar. Same entries in, same bytes out.

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
    tar: tar::Builder<SeekableWriter<HashingWriter<BufWriter<File>>>>,
    /// Uncompressed tar offset of the next entry's data (for the caller's bookkeeping and tests).
    position: u64,
}

/// What was written.
pub struct WrittenArchive {
    pub file: File,
    pub digest: Digest,
    pub compressed_len: u64,
    pub tar_len: u64,
}

impl ArchiveWriter {
    pub fn new(file: File, threads: usize) -> ArchiveWriter {
        let hashing = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), digest: DigestWriter::new() };
        let mut tar = tar::Builder::new(SeekableWriter::new(hashing, threads));
        tar.mode(tar::HeaderMode::Deterministic);
        ArchiveWriter { tar, position: 0 }
    }

    pub fn add_dir(&mut self, path: &str) -> io::Result<()> {
        let header = header(path, 0, tar::EntryType::Directory)?;
        self.tar.append(&header, io::empty())?;
        self.position += 512;
        Ok(())
    }

    pub fn add_bytes(&mut self, path: &str, bytes: &[u8]) -> io::Result<()> {
        self.add_reader(path, bytes.len() as u64, bytes)
    }

    /// Append a regular file of exactly `size` bytes read from `reader`.
    pub fn add_reader(&mut self, path: &str, size: u64, reader: impl Read) -> io::Result<()> {
        let header = header(path, size, tar::EntryType::Regular)?;
        let mut counted = CountingReader { inner: reader, count: 0 };
        self.tar.append(&header, &mut counted)?;
        if counted.count != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {size} bytes, the source gave {}", counted.count),
            ));
        }
        self.position += 512 + size.div_ceil(512) * 512;
        Ok(())
    }

    pub fn finish(self) -> io::Result<WrittenArchive> {
        let tar_len = self.position + 1024;
        let seekable = self.tar.into_inner()?;
        let hashing = seekable.finish()?;
        let compressed_len = hashing.digest.len();
        let digest = hashing.digest.finish();
        let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(WrittenArchive { file, digest, compressed_len, tar_len })
    }
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
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
