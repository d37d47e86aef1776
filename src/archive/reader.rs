//! Reads an archive: one streaming pass that checks every entry (`scan`), and random access to a blob's bytes
//! afterwards (`ArchiveFile::open_blob`) so import can read many blobs at once without extracting anything.
//!
//! Accepted inputs: our seekable `.tar.zst`, any other zstd- or gzip-compressed tar (read by streaming), a plain
//! tar such as skopeo's `oci-archive` (`./`-rooted ones too, as `tar -C DIR -cf X.tar .` writes them), and an OCI
//! layout directory, read in place. `manifest.json` and `repositories` beside the layout (docker and containerd
//! exports) are tolerated and noted. Entries outside the layout's paths are hashed and kept as `OtherEntry`: they
//! are what a `docker save` archive is made of (`archive::docker_save` reads them), and problems in a layout.
//! The scan trusts nothing: entry types, paths, sizes and digests are all checked, and problems are collected
//! rather than stopping at the first, so `verify` can report them all.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

pub use super::seekable::read_up_to;
use super::seekable::{SeekTable, SeekTableError};
use crate::oci::digest::{Digest, DigestWriter};
use crate::oci::layout::{self, BUNDLE_FILE, INDEX_FILE, OCI_LAYOUT_FILE};
use crate::oci::manifest::MAX_MANIFEST_BYTES;
use crate::support::direct_io::SequentialReader;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Metadata files larger than this are refused rather than read into memory.
const MAX_METADATA_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot open the archive {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a tar, or a zstd- or gzip-compressed tar")]
    UnknownFormat { path: PathBuf },
    #[error("the seek table of {path} is damaged")]
    SeekTable {
        path: PathBuf,
        #[source]
        source: SeekTableError,
    },
}

/// Something wrong with one entry (or the archive as a whole, with `entry` = "archive").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub entry: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.entry, self.message)
    }
}

/// Where a blob's bytes are in the uncompressed tar stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone)]
enum Access {
    /// Our format: any offset through the seek table.
    Seekable(SeekTable),
    /// Uncompressed tar: offsets are file offsets.
    PlainTar,
    /// Compressed without a seek table: reading a blob means decompressing from the start.
    StreamOnly,
    /// A gzip-compressed tar (`docker save | gzip`): read by streaming, like `StreamOnly`.
    Gzip,
    /// An OCI layout directory: every blob is a file of its own.
    Directory,
}

/// Files docker and containerd write beside an OCI layout (`docker save`, `ctr images export`): not part of the
/// layout, not blobs, and not a reason to refuse it.
pub const EXPORT_EXTRAS: [&str; 2] = [DOCKER_MANIFEST_FILE, "repositories"];
/// The table of contents of a `docker save` archive.
pub const DOCKER_MANIFEST_FILE: &str = "manifest.json";

/// Where `locate` found every blob, and a volume's pieces (by the digests their names give: not yet proven).
pub struct Located {
    pub blobs: BTreeMap<Digest, BlobEntry>,
    pub pieces: BTreeMap<Digest, BlobEntry>,
}

/// An archive file on disk and how its contents can be reached.
#[derive(Debug, Clone)]
pub struct ArchiveFile {
    path: PathBuf,
    access: Access,
}

/// What one pass over the archive found.
pub struct Scan {
    pub oci_layout: Option<Bytes>,
    pub index: Option<Bytes>,
    pub metadata: Option<Bytes>,
    /// Every blob entry whose content matched its name.
    pub blobs: BTreeMap<Digest, BlobEntry>,
    /// Small JSON blobs (manifests and configs), kept so the graph can be walked without a second pass.
    pub json_blobs: HashMap<Digest, Bytes>,
    pub problems: Vec<Problem>,
    /// sha256 of the archive file's bytes, as read.
    pub file_digest: Digest,
    pub file_len: u64,
    /// Order in which metadata and blobs appeared (for the layout rule that metadata comes first).
    pub first_blob_before_metadata: bool,
    /// `EXPORT_EXTRAS` present (which tool wrote the archive shows in them).
    pub extras: Vec<String>,
    /// `manifest.json`'s bytes: the table of contents of a `docker save` archive.
    pub docker_manifest: Option<Bytes>,
    /// Entries outside an OCI layout's paths, in the order they came.
    pub others: Vec<OtherEntry>,
    /// The input is a layout directory, not a file.
    pub directory: bool,
}

impl Scan {
    fn empty() -> Scan {
        Scan {
            oci_layout: None,
            index: None,
            metadata: None,
            blobs: BTreeMap::new(),
            json_blobs: HashMap::new(),
            problems: Vec::new(),
            file_digest: Digest::of(b""),
            file_len: 0,
            first_blob_before_metadata: false,
            extras: Vec::new(),
            docker_manifest: None,
            others: Vec::new(),
            directory: false,
        }
    }
}

/// An entry that is not part of an OCI image layout. A layout must have none; a `docker save` archive is made
/// of nothing else.
#[derive(Debug, Clone)]
pub struct OtherEntry {
    pub path: String,
    pub kind: OtherKind,
}

#[derive(Debug, Clone)]
pub enum OtherKind {
    Directory,
    /// A symbolic or hard link; `target` is the path it names from the archive's root, `None` when that path
    /// leaves the archive.
    Link {
        target: Option<String>,
        hard: bool,
    },
    /// A regular file, hashed as it was read. `json` holds it when it is small JSON (a config).
    File {
        entry: BlobEntry,
        digest: Digest,
        json: Option<Bytes>,
        content: FileContent,
    },
}

/// What a file's bytes are, from their first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Plain,
    /// gzip data, and the digest of what it decompresses to (`None`: it does not decompress).
    Gzip(Option<Digest>),
    Zstd,
}

impl ArchiveFile {
    pub fn open(path: &Path) -> Result<ArchiveFile, ArchiveError> {
        let open_err = |source| ArchiveError::Open { path: path.to_path_buf(), source };
        if path.is_dir() {
            return Ok(ArchiveFile { path: path.to_path_buf(), access: Access::Directory });
        }
        let mut file = File::open(path).map_err(open_err)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(open_err)?;
        let access = if n == 4 && magic == ZSTD_MAGIC {
            match SeekTable::read(&mut file) {
                Ok(Some(t)) => Access::Seekable(t),
                Ok(None) => Access::StreamOnly,
                Err(source) => return Err(ArchiveError::SeekTable { path: path.to_path_buf(), source }),
            }
        } else if n >= 2 && magic[..2] == GZIP_MAGIC {
            Access::Gzip
        } else {
            // A tar header has "ustar" at offset 257.
            let mut header = [0u8; 512];
            file.seek(SeekFrom::Start(0)).map_err(open_err)?;
            let n = read_up_to(&mut file, &mut header).map_err(open_err)?;
            if n < 512 || &header[257..262] != b"ustar" {
                return Err(ArchiveError::UnknownFormat { path: path.to_path_buf() });
            }
            Access::PlainTar
        };
        Ok(ArchiveFile { path: path.to_path_buf(), access })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether blobs can be read in any order without decompressing what precedes them.
    pub fn is_random_access(&self) -> bool {
        !matches!(self.access, Access::StreamOnly | Access::Gzip)
    }

    /// The decompressed tar stream from its beginning.
    fn tar_stream<'r>(&self, file: impl Read + 'r) -> io::Result<Box<dyn Read + 'r>> {
        Ok(match self.access {
            Access::PlainTar => Box::new(file),
            Access::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file))),
            _ => Box::new(zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, file))?),
        })
    }

    /// Whether this is a layout directory rather than an archive file.
    pub fn is_directory(&self) -> bool {
        matches!(self.access, Access::Directory)
    }

    /// Read the bytes of blob `digest` at `entry` (unverified: callers hash what they read).
    pub fn open_blob(&self, digest: &Digest, entry: BlobEntry) -> io::Result<Box<dyn Read + Send>> {
        match &self.access {
            Access::Directory => {
                let f = File::open(self.path.join(digest.layout_path()))?;
                Ok(Box::new(BufReader::with_capacity(1 << 20, f).take(entry.size)))
            }
            Access::Seekable(table) => Ok(Box::new(table.open_range(&self.path, entry.offset, entry.size)?)),
            Access::PlainTar => {
                let mut f = File::open(&self.path)?;
                f.seek(SeekFrom::Start(entry.offset))?;
                Ok(Box::new(BufReader::with_capacity(1 << 20, f).take(entry.size)))
            }
            Access::StreamOnly => {
                let f = BufReader::with_capacity(1 << 20, File::open(&self.path)?);
                skip_to(zstd::stream::read::Decoder::with_buffer(f)?, entry)
            }
            Access::Gzip => {
                let f = BufReader::with_capacity(1 << 20, File::open(&self.path)?);
                skip_to(flate2::read::MultiGzDecoder::new(f), entry)
            }
        }
    }

    /// `bundle.json`, read from the start of the archive and stopping at the first entry that is not layout
    /// metadata; `None` when the archive has none there (another tool's archive).
    pub fn read_metadata(&self) -> Result<Option<layout::BundleMetadata>, ArchiveError> {
        let open_err = |source| ArchiveError::Open { path: self.path.clone(), source };
        if self.is_directory() {
            let file = self.path.join(BUNDLE_FILE);
            let Ok(meta) = std::fs::symlink_metadata(&file) else { return Ok(None) };
            if !meta.is_file() || meta.len() > MAX_METADATA_BYTES {
                return Ok(None);
            }
            let buf = std::fs::read(&file).map_err(open_err)?;
            return serde_json::from_slice(&buf).map(Some).map_err(|e| {
                open_err(io::Error::new(io::ErrorKind::InvalidData, format!("bundle.json is not valid: {e}")))
            });
        }
        let file = File::open(&self.path).map_err(open_err)?;
        let mut tar = tar::Archive::new(self.tar_stream(file).map_err(open_err)?);
        for entry in tar.entries().map_err(open_err)? {
            let mut entry = entry.map_err(open_err)?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).to_string();
            match normalise(&path).as_deref() {
                Some(BUNDLE_FILE) if entry.size() <= MAX_METADATA_BYTES => {
                    let mut buf = Vec::new();
                    entry.read_to_end(&mut buf).map_err(open_err)?;
                    return serde_json::from_slice(&buf).map(Some).map_err(|e| {
                        open_err(io::Error::new(io::ErrorKind::InvalidData, format!("bundle.json is not valid: {e}")))
                    });
                }
                // Our archives put bundle.json right after oci-layout and index.json: anything else first means
                // another tool's archive (a docker save one would otherwise be read to its end for nothing).
                Some(OCI_LAYOUT_FILE | INDEX_FILE | "." | "blobs" | "blobs/sha256") => {}
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The front of one of our archives: metadata and every manifest (hashed against its name), stopping at
    /// the first layer. Blob sizes come from bundle.json; offsets are unknown, so this is for planning only.
    /// `None` when the archive is not laid out that way (another tool's archive, or damage): use `scan`.
    pub fn scan_front(&self) -> Result<Option<Scan>, ArchiveError> {
        if self.is_directory() {
            return Ok(None);
        }
        let open_err = |source| ArchiveError::Open { path: self.path.clone(), source };
        let file = File::open(&self.path).map_err(open_err)?;
        let mut tar = tar::Archive::new(self.tar_stream(file).map_err(open_err)?);
        let mut scan = Scan::empty();
        let Ok(entries) = tar.entries() else { return Ok(None) };
        for entry in entries {
            let Ok(mut entry) = entry else { return Ok(None) };
            let Some(path) = normalise(&String::from_utf8_lossy(&entry.path_bytes())) else { return Ok(None) };
            let size = entry.size();
            let slot = match path.as_str() {
                OCI_LAYOUT_FILE => Some(&mut scan.oci_layout),
                INDEX_FILE => Some(&mut scan.index),
                BUNDLE_FILE => Some(&mut scan.metadata),
                "." | "blobs" | "blobs/sha256" => continue,
                p if EXPORT_EXTRAS.contains(&p) => continue,
                _ => None,
            };
            if let Some(slot) = slot {
                if size > MAX_METADATA_BYTES {
                    return Ok(None);
                }
                let mut buf = Vec::new();
                if entry.read_to_end(&mut buf).is_err() {
                    return Ok(None);
                }
                *slot = Some(Bytes::from(buf));
                continue;
            }
            let Some(digest) = layout::blob_digest(&path) else {
                // A volume's pieces come after its blobs: the front ends there.
                if layout::piece_digest(&path).is_some() {
                    break;
                }
                return Ok(None);
            };
            if size > MAX_MANIFEST_BYTES as u64 {
                break;
            }
            let mut buf = Vec::new();
            if entry.read_to_end(&mut buf).is_err() || Digest::of(&buf) != digest {
                return Ok(None);
            }
            if buf.first() != Some(&b'{') {
                break;
            }
            scan.json_blobs.insert(digest, Bytes::from(buf));
        }
        let Some(meta) = scan.metadata.as_ref().and_then(|m| serde_json::from_slice::<layout::BundleMetadata>(m).ok())
        else {
            return Ok(None);
        };
        for b in &meta.blobs {
            scan.blobs.insert(b.digest.clone(), BlobEntry { offset: u64::MAX, size: b.size });
        }
        Ok(Some(scan))
    }

    /// Where every blob's bytes are, from the tar headers alone: the seek table lets the walk jump from one
    /// header to the next without reading the blobs between. Import plans and uploads from this when the
    /// sidecar vouches for the file, instead of reading everything once more before the first upload.
    ///
    /// `None` unless the archive is our seekable format and its structure is exactly what the scan accepts
    /// (regular files and the two directories, layout paths only, no duplicates, valid header checksums,
    /// sizes inside the stream): anything unusual is left to `scan`, which explains it.
    pub fn locate(&self) -> Result<Option<Located>, ArchiveError> {
        let Access::Seekable(table) = &self.access else { return Ok(None) };
        let end = table.decompressed_len();
        let mut cursor = table.cursor(&self.path);
        let mut blobs = BTreeMap::new();
        let mut pieces = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut block = [0u8; 512];
        let mut offset = 0u64;
        loop {
            if offset.saturating_add(512) > end || cursor.read_exact_at(offset, &mut block).is_err() {
                return Ok(None);
            }
            if block.iter().all(|b| *b == 0) {
                return Ok(Some(Located { blobs, pieces }));
            }
            if !header_checksum_ok(&block) {
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let Ok(size) = header.entry_size() else { return Ok(None) };
            let Some(path) = normalise(&String::from_utf8_lossy(&header.path_bytes())) else { return Ok(None) };
            let data = offset + 512;
            let Some(next) = size.checked_next_multiple_of(512).and_then(|s| data.checked_add(s)) else {
                return Ok(None);
            };
            if next > end || !seen.insert(path.clone()) {
                return Ok(None);
            }
            match header.entry_type() {
                tar::EntryType::Directory
                    if size == 0
                        && matches!(path.as_str(), "." | "blobs" | "blobs/sha256" | "pieces" | "pieces/sha256") => {}
                tar::EntryType::Regular | tar::EntryType::Continuous => match path.as_str() {
                    OCI_LAYOUT_FILE | INDEX_FILE | BUNDLE_FILE => {}
                    p if EXPORT_EXTRAS.contains(&p) => {}
                    other => match (layout::blob_digest(other), layout::piece_digest(other)) {
                        (Some(digest), _) => {
                            blobs.insert(digest, BlobEntry { offset: data, size });
                        }
                        (None, Some(digest)) => {
                            pieces.insert(digest, BlobEntry { offset: data, size });
                        }
                        (None, None) => return Ok(None),
                    },
                },
                _ => return Ok(None),
            }
            offset = next;
        }
    }

    /// One pass over the whole archive; see the module docs. `on_bytes` is told about progress (file bytes).
    pub fn scan(&self, on_bytes: &(dyn Fn(u64) + Sync)) -> Result<Scan, ArchiveError> {
        if self.is_directory() {
            return scan_directory(&self.path, on_bytes)
                .map_err(|source| ArchiveError::Open { path: self.path.clone(), source });
        }
        let file = SequentialReader::open(&self.path)
            .map_err(|source| ArchiveError::Open { path: self.path.clone(), source })?;
        let (hashed, hasher) = HashingReader::new(file, on_bytes);
        let mut scan = Scan::empty();
        let stream =
            self.tar_stream(hashed).map_err(|source| ArchiveError::Open { path: self.path.clone(), source })?;
        let mut tar = tar::Archive::new(stream);
        if let Err(e) = scan_entries(&mut tar, &mut scan) {
            scan.problems.push(Problem { entry: "archive".into(), message: describe_stream_error(&e) });
        }
        // Read whatever follows the end-of-archive marker: it must be zero padding. This also pulls the rest
        // of the compressed file through the hasher.
        let mut rest = tar.into_inner();
        match count_nonzero(&mut rest) {
            Ok(0) => {}
            Ok(n) => scan.problems.push(Problem {
                entry: "archive".into(),
                message: format!("{n} bytes of data follow the end of the tar archive"),
            }),
            Err(e) => scan.problems.push(Problem { entry: "archive".into(), message: describe_stream_error(&e) }),
        }
        drop(rest);
        let (digest, len) = finish_file_digest(hasher, &self.path);
        scan.file_digest = digest;
        scan.file_len = len;
        Ok(scan)
    }
}

/// A compressed stream read from its start up to `entry`, then `entry`'s bytes.
fn skip_to<R: Read + Send + 'static>(mut stream: R, entry: BlobEntry) -> io::Result<Box<dyn Read + Send>> {
    io::copy(&mut (&mut stream).take(entry.offset), &mut io::sink())?;
    Ok(Box::new(stream.take(entry.size)))
}

fn describe_stream_error(e: &io::Error) -> String {
    let msg = e.to_string();
    if e.kind() == io::ErrorKind::UnexpectedEof || msg.contains("incomplete") || msg.contains("EOF") {
        format!("the archive ends too early (truncated?): {msg}")
    } else {
        format!("the archive's data is damaged: {msg}")
    }
}

fn scan_entries(tar: &mut tar::Archive<Box<dyn Read + '_>>, scan: &mut Scan) -> io::Result<()> {
    let mut seen: HashMap<String, ()> = HashMap::new();
    for entry in tar.entries()? {
        let mut entry = entry?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let problem = |message: String| Problem { entry: raw_path.clone(), message };
        let Some(path) = normalise(&raw_path) else {
            scan.problems.push(problem("the path is absolute or leaves the archive (`..`); refusing it".into()));
            continue;
        };
        if seen.insert(path.clone(), ()).is_some() {
            scan.problems.push(problem("appears twice in the archive".into()));
            continue;
        }
        let kind = entry.header().entry_type();
        let size = entry.size();
        match kind {
            tar::EntryType::Directory => {
                if !matches!(path.as_str(), "." | "blobs" | "blobs/sha256") {
                    scan.others.push(OtherEntry { path, kind: OtherKind::Directory });
                }
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let hard = kind == tar::EntryType::Link;
                let named =
                    entry.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                // A symbolic link is relative to its own directory; a hard link names another member.
                let from_root = match (hard, path.rsplit_once('/')) {
                    (false, Some((dir, _))) => format!("{dir}/{named}"),
                    _ => named,
                };
                let target = (!from_root.starts_with('/')).then(|| resolve_dots(&from_root)).flatten();
                scan.others.push(OtherEntry { path, kind: OtherKind::Link { target, hard } });
                continue;
            }
            other => {
                scan.problems.push(problem(format!(
                    "is a {}, but an image layout holds only regular files and directories",
                    entry_kind(other)
                )));
                continue;
            }
        }
        let metadata_slot = scan.metadata_slot(&path);
        if let Some(slot) = metadata_slot {
            if size > MAX_METADATA_BYTES {
                scan.problems.push(problem(format!("is {size} bytes, more than the {MAX_METADATA_BYTES}-byte limit")));
                continue;
            }
            let mut buf = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut buf)?;
            *slot = Some(Bytes::from(buf));
            continue;
        }
        if EXPORT_EXTRAS.contains(&path.as_str()) {
            if path == DOCKER_MANIFEST_FILE && size <= MAX_METADATA_BYTES {
                let mut buf = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut buf)?;
                scan.docker_manifest = Some(Bytes::from(buf));
            }
            scan.extras.push(path);
            continue;
        }
        let Some(digest) = layout::blob_digest(&path) else {
            let offset = entry.raw_file_position();
            let mut content = ContentProbe::default();
            let (hasher, json) = read_blob(&mut entry, size, &mut |chunk| content.feed(chunk))?;
            if hasher.len() != size {
                scan.problems.push(problem(format!("the header says {size} bytes but {} were read", hasher.len())));
                continue;
            }
            let (entry, content) = (BlobEntry { offset, size }, content.finish());
            let file = OtherKind::File { entry, digest: hasher.finish(), json: json.map(Bytes::from), content };
            scan.others.push(OtherEntry { path, kind: file });
            continue;
        };
        if scan.metadata.is_none() && scan.index.is_none() && scan.blobs.is_empty() {
            scan.first_blob_before_metadata = true;
        }
        let offset = entry.raw_file_position();
        let read = read_blob(&mut entry, size, &mut |_| {})?;
        let short = |read: u64| format!("the header says {size} bytes but {read} were read");
        if let Err(message) = scan.add_blob(digest, BlobEntry { offset, size }, read, short) {
            scan.problems.push(problem(message));
        }
    }
    Ok(())
}

impl Scan {
    /// Keep a blob whose bytes were read: its size and digest must be what its entry says (`short` words a size
    /// that is not), and small JSON is kept for the graph walk. `Err` is the problem, worded for the entry.
    fn add_blob(
        &mut self,
        digest: Digest,
        entry: BlobEntry,
        (hasher, json): (DigestWriter, Option<Vec<u8>>),
        short: impl FnOnce(u64) -> String,
    ) -> Result<(), String> {
        if hasher.len() != entry.size {
            return Err(short(hasher.len()));
        }
        let actual = hasher.finish();
        if actual != digest {
            return Err(format!("content does not match its name: expected {digest}, found {actual}"));
        }
        if let Some(j) = json {
            self.json_blobs.insert(digest.clone(), Bytes::from(j));
        }
        self.blobs.insert(digest, entry);
        Ok(())
    }

    /// Where the metadata file at `path` goes, if it is one.
    fn metadata_slot(&mut self, path: &str) -> Option<&mut Option<Bytes>> {
        match path {
            OCI_LAYOUT_FILE => Some(&mut self.oci_layout),
            INDEX_FILE => Some(&mut self.index),
            BUNDLE_FILE => Some(&mut self.metadata),
            _ => None,
        }
    }
}

/// Hash a blob's bytes as they are read, keeping them only when they can be a manifest or config (small JSON);
/// `also` sees every chunk too.
fn read_blob(r: &mut dyn Read, size: u64, also: &mut dyn FnMut(&[u8])) -> io::Result<(DigestWriter, Option<Vec<u8>>)> {
    let mut hasher = DigestWriter::new();
    let mut json = (size <= MAX_MANIFEST_BYTES as u64).then(Vec::new);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        also(&buf[..n]);
        if let Some(j) = json.as_mut() {
            // Only JSON documents can be manifests or configs; layers are never kept in memory.
            if j.is_empty() && buf[..n].first() != Some(&b'{') {
                json = None;
            } else {
                j.extend_from_slice(&buf[..n]);
            }
        }
    }
    Ok((hasher, json))
}

/// Learns what a file holds from its bytes as they stream past: gzip data is decompressed and hashed on the way
/// (a layer's diff_id is the digest of its uncompressed tar).
#[derive(Default)]
struct ContentProbe {
    seen: u64,
    start: Vec<u8>,
    gzip: Option<flate2::write::MultiGzDecoder<DigestWriter>>,
    gzip_failed: bool,
}

impl ContentProbe {
    fn feed(&mut self, chunk: &[u8]) {
        if self.seen == 0 {
            self.start = chunk.iter().take(4).copied().collect();
            if self.start.starts_with(&GZIP_MAGIC) {
                self.gzip = Some(flate2::write::MultiGzDecoder::new(DigestWriter::new()));
            }
        }
        self.seen += chunk.len() as u64;
        if let Some(d) = self.gzip.as_mut()
            && !self.gzip_failed
        {
            use std::io::Write as _;
            self.gzip_failed = d.write_all(chunk).is_err();
        }
    }

    fn finish(self) -> FileContent {
        if let Some(d) = self.gzip {
            let digest = if self.gzip_failed { None } else { d.finish().ok().map(DigestWriter::finish) };
            FileContent::Gzip(digest)
        } else if self.start.starts_with(&ZSTD_MAGIC) {
            FileContent::Zstd
        } else {
            FileContent::Plain
        }
    }
}

/// The scan of an OCI layout directory, read in place: the same checks as for a tar, entry by entry.
fn scan_directory(dir: &Path, on_bytes: &(dyn Fn(u64) + Sync)) -> io::Result<Scan> {
    let mut scan = Scan { directory: true, ..Scan::empty() };
    let mut entries = Vec::new();
    list_directory(dir, "", 0, &mut entries)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, meta) in entries {
        let problem = |message: String| Problem { entry: path.clone(), message };
        if meta.is_dir() {
            if !matches!(path.as_str(), "blobs" | "blobs/sha256") {
                scan.problems.push(problem("unexpected directory".into()));
            }
            continue;
        }
        if !meta.is_file() {
            let kind = if meta.file_type().is_symlink() { "symbolic link" } else { "special file" };
            scan.problems
                .push(problem(format!("is a {kind}, but an image layout holds only regular files and directories")));
            continue;
        }
        let size = meta.len();
        scan.file_len += size;
        let metadata_slot = scan.metadata_slot(&path);
        if let Some(slot) = metadata_slot {
            if size > MAX_METADATA_BYTES {
                scan.problems.push(problem(format!("is {size} bytes, more than the {MAX_METADATA_BYTES}-byte limit")));
                continue;
            }
            *slot = Some(Bytes::from(std::fs::read(dir.join(&path))?));
            on_bytes(size);
            continue;
        }
        if EXPORT_EXTRAS.contains(&path.as_str()) {
            scan.extras.push(path);
            continue;
        }
        let Some(digest) = layout::blob_digest(&path) else {
            scan.problems.push(problem("is not part of an OCI image layout".into()));
            continue;
        };
        let read = read_blob(&mut File::open(dir.join(&path))?, size, &mut |_| {})?;
        on_bytes(read.0.len());
        let short = |read: u64| format!("changed while it was read: {size} bytes, then {read}");
        if let Err(message) = scan.add_blob(digest, BlobEntry { offset: 0, size }, read, short) {
            scan.problems.push(problem(message));
        }
    }
    Ok(scan)
}

/// Every entry under `dir` as (path relative to the layout, metadata without following links); directories
/// deeper than a layout's are listed but not entered.
fn list_directory(root: &Path, rel: &str, depth: usize, out: &mut Vec<(String, std::fs::Metadata)>) -> io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        let meta = std::fs::symlink_metadata(entry.path())?;
        let descend = meta.is_dir() && depth < 2;
        out.push((path.clone(), meta));
        if descend {
            list_directory(root, &path, depth + 1, out)?;
        }
    }
    Ok(())
}

/// The header's stored checksum equals the sum of its bytes with the checksum field read as spaces.
fn header_checksum_ok(block: &[u8; 512]) -> bool {
    let sum: u32 =
        block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { b' ' as u32 } else { *b as u32 }).sum();
    tar::Header::from_byte_slice(block).cksum().is_ok_and(|c| c == sum)
}

/// `./a/b` → `a/b`; `None` for absolute paths or `..`.
pub(crate) fn normalise(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() { Some(".".into()) } else { Some(parts.join("/")) }
}

/// `a/../b/./c` → `b/c`; `None` when the path climbs out of the archive.
fn resolve_dots(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn entry_kind(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        _ => "special entry",
    }
}

fn count_nonzero(r: &mut dyn Read) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut nonzero = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(nonzero);
        }
        nonzero += buf[..n].iter().filter(|b| **b != 0).count() as u64;
    }
}

/// Hashes every byte read from the file, so the sidecar check costs no second read. The hashing runs on a
/// thread of its own: the reading thread decompresses and hashes the blobs, and the two sha256 passes (of the
/// file and of its content) then take one core each.
struct HashingReader<'a> {
    file: SequentialReader,
    to_hasher: std::sync::mpsc::SyncSender<Vec<u8>>,
    /// Buffers the hasher is done with.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    on_bytes: &'a (dyn Fn(u64) + Sync),
}

/// The thread hashing what a `HashingReader` read; it ends when the reader is dropped.
type FileHasher = std::thread::JoinHandle<DigestWriter>;

impl<'a> HashingReader<'a> {
    fn new(file: SequentialReader, on_bytes: &'a (dyn Fn(u64) + Sync)) -> (Self, FileHasher) {
        let (to_hasher, chunks) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let (give_back, spare) = std::sync::mpsc::channel();
        let hasher = std::thread::spawn(move || {
            let mut h = DigestWriter::new();
            for chunk in chunks {
                h.update(&chunk);
                let _ = give_back.send(chunk);
            }
            h
        });
        (HashingReader { file, to_hasher, spare, on_bytes }, hasher)
    }
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n > 0 {
            let mut chunk = self.spare.try_recv().unwrap_or_default();
            chunk.clear();
            chunk.extend_from_slice(&buf[..n]);
            self.to_hasher.send(chunk).map_err(|_| io::Error::other("the file hasher stopped"))?;
        }
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

/// The decoder may stop before the end of the file (the seek table, a truncated frame): hash the rest from
/// where the reader stopped, so the digest covers the whole file as the sidecar does. Call once the reader is
/// dropped.
fn finish_file_digest(hasher: FileHasher, path: &Path) -> (Digest, u64) {
    let mut hasher = hasher.join().unwrap_or_default();
    let read_so_far = hasher.len();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(read_so_far)).is_ok()
    {
        let _ = io::copy(&mut f, &mut hasher);
    }
    let len = hasher.len();
    (hasher.finish(), len)
}

impl crate::support::hint::Hint for ArchiveError {
    fn hint(&self) -> Option<String> {
        match self {
            ArchiveError::Open { .. } => Some("check the archive's path and permissions".into()),
            ArchiveError::UnknownFormat { .. } => {
                Some("bundle reads the .tar.zst it writes, tars of OCI image layouts and docker save archives (plain, zstd or gzip), and OCI layout directories".into())
            }
            ArchiveError::SeekTable { source, .. } => source.hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_rejects_escapes() {
        assert_eq!(normalise("./blobs/sha256/ab").as_deref(), Some("blobs/sha256/ab"));
        assert_eq!(normalise("../etc/passwd"), None);
        assert_eq!(normalise("/etc/passwd"), None);
        assert_eq!(normalise("blobs/../../x"), None);
    }

    #[test]
    fn link_targets_resolve_inside_the_archive() {
        assert_eq!(resolve_dots("0123/../abc.tar").as_deref(), Some("abc.tar"));
        assert_eq!(resolve_dots("./a/./b").as_deref(), Some("a/b"));
        assert_eq!(resolve_dots("0123/../../etc/passwd"), None);
    }
}
