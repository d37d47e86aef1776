//! Parity volumes: Reed-Solomon recovery data over the volume files of a set, so that as many lost (or damaged)
//! volumes as there are parity volumes can be rebuilt at import, byte for byte.
//!
//! The volume files are the original shards, each padded with zeros to the longest; the code runs stripe by
//! stripe (1 MiB of each shard at a time), so memory stays at (volumes + parity) MiB whatever the volume size. A
//! parity file is a 64-byte header (magic, the set, the volume count, the parity count, its own index) and then
//! the recovery shard. Every volume leaves those 64 bytes free, so a parity file fits the same medium. A rebuilt
//! volume's length is found without any record of it: a seekable zstd file ends with the seek table's magic,
//! whose last byte is not zero, so the rebuilt file is cut after its last non-zero byte. It is then verified like
//! any volume.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use super::VolumeError;
use crate::oci::digest::{Digest, DigestWriter};

const MAGIC: &[u8; 16] = b"bundle-parity-v1";
/// The header's length, and the room every volume leaves so that a parity file is no larger than a volume.
pub const HEADER: u64 = 64;
const STRIPE: u64 = 1 << 20;

/// What a parity file says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParityHeader {
    pub set: Digest,
    /// Volumes in the set.
    pub count: u32,
    /// Parity volumes of the set.
    pub parity: u32,
    /// This one's number, from 1.
    pub index: u32,
}

impl ParityHeader {
    fn bytes(&self) -> [u8; HEADER as usize] {
        let mut h = [0u8; HEADER as usize];
        h[..16].copy_from_slice(MAGIC);
        h[16..48].copy_from_slice(&hex_bytes(self.set.hex()));
        h[48..52].copy_from_slice(&self.count.to_le_bytes());
        h[52..56].copy_from_slice(&self.parity.to_le_bytes());
        h[56..60].copy_from_slice(&self.index.to_le_bytes());
        h
    }

    /// The header of `path`, if it is a parity file.
    pub fn read(path: &Path) -> Option<ParityHeader> {
        let mut h = [0u8; HEADER as usize];
        File::open(path).ok()?.read_exact_at(&mut h, 0).ok()?;
        if &h[..16] != MAGIC {
            return None;
        }
        let hex: String = h[16..48].iter().map(|b| format!("{b:02x}")).collect();
        let word = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        let header = ParityHeader {
            set: format!("sha256:{hex}").parse().ok()?,
            count: word(48),
            parity: word(52),
            index: word(56),
        };
        (header.count > 0 && (1..=header.parity).contains(&header.index)).then_some(header)
    }
}

fn hex_bytes(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("a digest is hex");
    }
    out
}

/// `DIR/NAME.tar.zst` → `DIR/NAME.parityNN.bin` (two digits, more when there are more parity volumes).
pub fn parity_path(output: &Path, index: u32, parity: u32) -> PathBuf {
    let width = parity.to_string().len().max(2);
    output.with_file_name(format!("{}.parity{index:0width$}.bin", super::stem(output)))
}

/// Whether a file name is a parity volume's.
pub fn is_parity_name(name: &str) -> bool {
    name.strip_suffix(".bin")
        .and_then(|r| r.rsplit_once(".parity"))
        .is_some_and(|(_, d)| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let path = path.to_path_buf();
    move |source| VolumeError::Io { what, path, source }
}

fn codec_error(e: reed_solomon_simd::Error) -> VolumeError {
    VolumeError::Parity { reason: e.to_string() }
}

/// Read `len` bytes of `file` at `offset` into `buf`, zeros past its end (the padding every shard has).
fn read_padded(file: &File, path: &Path, offset: u64, buf: &mut [u8]) -> Result<(), VolumeError> {
    buf.fill(0);
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(())
}

/// Write `parity` recovery files (`outputs`, in order) for the volume files `volumes` (in volume order). Returns
/// each file's sha256 and length.
pub fn write(set: &Digest, volumes: &[PathBuf], outputs: &[PathBuf]) -> Result<Vec<(Digest, u64)>, VolumeError> {
    let (count, parity) = (volumes.len(), outputs.len());
    if !ReedSolomonEncoder::supports(count, parity) {
        return Err(VolumeError::Parity { reason: format!("{parity} parity volumes for {count} volumes") });
    }
    let mut inputs = Vec::new();
    let mut longest = 0;
    for v in volumes {
        let f = File::open(v).map_err(io("read", v))?;
        longest = longest.max(f.metadata().map_err(io("read", v))?.len());
        inputs.push(f);
    }
    let shard = longest.next_multiple_of(2);
    let mut files = Vec::new();
    for (i, out) in outputs.iter().enumerate() {
        let mut f = File::create(out).map_err(io("create", out))?;
        let header = ParityHeader { set: set.clone(), count: count as u32, parity: parity as u32, index: i as u32 + 1 };
        let mut hasher = DigestWriter::new();
        f.write_all(&header.bytes()).map_err(io("write", out))?;
        hasher.update(&header.bytes());
        files.push((f, hasher));
    }
    let mut buf = vec![0u8; STRIPE as usize];
    let mut encoder = ReedSolomonEncoder::new(count, parity, 2).map_err(codec_error)?;
    // Bounded: `shard / STRIPE` stripes.
    for offset in (0..shard).step_by(STRIPE as usize) {
        let len = STRIPE.min(shard - offset) as usize;
        encoder.reset(count, parity, len).map_err(codec_error)?;
        for (f, path) in inputs.iter().zip(volumes) {
            read_padded(f, path, offset, &mut buf[..len])?;
            encoder.add_original_shard(&buf[..len]).map_err(codec_error)?;
        }
        let result = encoder.encode().map_err(codec_error)?;
        for ((f, hasher), (recovery, out)) in files.iter_mut().zip(result.recovery_iter().zip(outputs)) {
            f.write_all(recovery).map_err(io("write", out))?;
            hasher.update(recovery);
        }
    }
    let mut written = Vec::new();
    for ((f, hasher), out) in files.into_iter().zip(outputs) {
        f.sync_all().map_err(io("write", out))?;
        written.push((hasher.finish(), HEADER + shard));
    }
    Ok(written)
}

/// Rebuild the volumes numbered `missing` of a set of `count` from the volumes `present` (number, file) and the
/// parity files `parity` (header, file), into `dir` as `name(number)`. Returns the rebuilt files, by number.
pub fn rebuild(
    count: u32,
    present: &[(u32, PathBuf)],
    parity: &[(ParityHeader, PathBuf)],
    missing: &[u32],
    dir: &Path,
    name: impl Fn(u32) -> String,
) -> Result<Vec<(u32, PathBuf)>, VolumeError> {
    let total = parity.first().map_or(0, |(h, _)| h.parity) as usize;
    let mut shard = None;
    let mut sources = Vec::new();
    for (h, path) in parity {
        let f = File::open(path).map_err(io("read", path))?;
        let len = f.metadata().map_err(io("read", path))?.len().saturating_sub(HEADER);
        if *shard.get_or_insert(len) != len || h.parity as usize != total {
            return Err(VolumeError::Parity {
                reason: format!("{} does not match the other parity volumes", path.display()),
            });
        }
        sources.push((h.index as usize - 1, f, path));
    }
    let shard = shard.ok_or_else(|| VolumeError::Parity { reason: "no parity volume".into() })?;
    let originals: Vec<(usize, File, &PathBuf)> = present
        .iter()
        .map(|(n, p)| File::open(p).map(|f| (*n as usize - 1, f, p)).map_err(io("read", p)))
        .collect::<Result<_, _>>()?;
    let mut outputs = Vec::new();
    for n in missing {
        let path = dir.join(name(*n));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path);
        outputs.push((*n, file.map_err(io("create", &path))?, path));
    }
    let mut buf = vec![0u8; STRIPE as usize];
    let mut decoder = ReedSolomonDecoder::new(count as usize, total, 2).map_err(codec_error)?;
    for offset in (0..shard).step_by(STRIPE as usize) {
        let len = STRIPE.min(shard - offset) as usize;
        decoder.reset(count as usize, total, len).map_err(codec_error)?;
        for (index, f, path) in &originals {
            read_padded(f, path, offset, &mut buf[..len])?;
            decoder.add_original_shard(*index, &buf[..len]).map_err(codec_error)?;
        }
        for (index, f, path) in &sources {
            read_padded(f, path, HEADER + offset, &mut buf[..len])?;
            decoder.add_recovery_shard(*index, &buf[..len]).map_err(codec_error)?;
        }
        let result = decoder.decode().map_err(codec_error)?;
        for (n, f, path) in &mut outputs {
            let restored = result
                .restored_original(*n as usize - 1)
                .ok_or_else(|| VolumeError::Parity { reason: format!("volume {n} was not restored") })?;
            f.write_all(restored).map_err(io("write", path))?;
        }
    }
    let mut rebuilt = Vec::new();
    for (n, f, path) in outputs {
        let end = last_nonzero(&f, &path, shard)?;
        f.set_len(end).and_then(|()| f.sync_all()).map_err(io("write", &path))?;
        rebuilt.push((n, path));
    }
    Ok(rebuilt)
}

/// The length of `file` up to and including its last non-zero byte.
fn last_nonzero(file: &File, path: &Path, len: u64) -> Result<u64, VolumeError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start).map_err(io("read", path))?;
        if let Some(i) = chunk.iter().rposition(|b| *b != 0) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_lost_volumes_up_to_the_parity_count_are_rebuilt_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = 7u64;
        let mut volumes = Vec::new();
        // Lengths around the stripe, each ending in a non-zero byte as a seekable zstd file does.
        for (i, len) in [3 * STRIPE / 2 + 1, STRIPE - 3, 2 * STRIPE + 10].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (rng >> 33) as u8
                })
                .chain([0x8f])
                .collect();
            let path = dir.path().join(format!("v{}", i + 1));
            std::fs::write(&path, &bytes).unwrap();
            volumes.push(path);
        }
        let set = Digest::of(b"set");
        let outputs: Vec<PathBuf> = (1..=2).map(|i| dir.path().join(format!("p{i}"))).collect();
        let written = write(&set, &volumes, &outputs).unwrap();
        for ((digest, len), out) in written.iter().zip(&outputs) {
            let bytes = std::fs::read(out).unwrap();
            assert_eq!(Digest::of(&bytes), *digest);
            assert_eq!(bytes.len() as u64, *len);
            assert_eq!(ParityHeader::read(out).unwrap().set, set);
        }
        let parity: Vec<(ParityHeader, PathBuf)> =
            outputs.iter().map(|p| (ParityHeader::read(p).unwrap(), p.clone())).collect();
        let out = tempfile::tempdir().unwrap();
        let present = vec![(2, volumes[1].clone())];
        let rebuilt = rebuild(3, &present, &parity, &[1, 3], out.path(), |n| format!("r{n}")).unwrap();
        for (n, path) in rebuilt {
            assert_eq!(std::fs::read(path).unwrap(), std::fs::read(&volumes[n as usize - 1]).unwrap(), "volume {n}");
        }
        assert!(rebuild(3, &[], &parity[..1], &[1, 2, 3], out.path(), |n| format!("s{n}")).is_err());
        assert!(is_parity_name("x.parity01.bin") && !is_parity_name("x.part001.tar.zst"));
        assert_eq!(parity_path(Path::new("d/x.tar.zst"), 2, 3), Path::new("d/x.parity02.bin"));
    }
}
