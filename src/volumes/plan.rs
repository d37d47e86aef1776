//! Which blob goes on which volume, from sizes alone.
//!
//! Volumes are filled in order, blobs in the order given (image by image, so an image's blobs sit together and
//! a lost volume costs few images). A blob that does not fit what is left of a volume is cut: its first piece
//! fills the volume to a 1 MiB boundary of the blob's bytes, the rest continues on the next volumes. The set
//! therefore has as few volumes as the size allows, and each boundary between volumes cuts at most one blob.
//!
//! A volume's size is bounded before it is written: the writer compresses 1 MiB of tar per zstd frame, and zstd
//! stores a block raw when compressing would grow it, so a frame is at most its input plus a frame header (14
//! bytes), a 3-byte header per 128 KiB block, a checksum (4) and its seek-table entry (8). `compressed_bound`
//! rounds that up to 64 bytes a frame, plus 64 for the seek table's frame, and the plan keeps every volume's tar
//! within what that bound lets fit.

use crate::oci::digest::Digest;

/// Pieces are cut at multiples of this many bytes of the blob.
pub const PIECE_ALIGN: u64 = 1 << 20;
const FRAME: u64 = 1 << 20;
const FRAME_OVERHEAD: u64 = 64;
const TABLE_OVERHEAD: u64 = 64;
const BLOCK: u64 = 512;

/// The most a volume whose tar stream is `tar_len` bytes can take on disk.
pub fn compressed_bound(tar_len: u64) -> u64 {
    tar_len + tar_len.div_ceil(FRAME) * FRAME_OVERHEAD + TABLE_OVERHEAD
}

/// The longest tar stream whose volume cannot exceed `size` bytes.
pub fn tar_capacity(size: u64) -> u64 {
    let room = size.saturating_sub(TABLE_OVERHEAD);
    let mut t = (room as u128 * FRAME as u128 / (FRAME + FRAME_OVERHEAD) as u128) as u64;
    // The estimate is within a frame's overhead; step down to the exact answer.
    while t > 0 && compressed_bound(t) > size {
        t -= 1.max((compressed_bound(t) - size).min(FRAME_OVERHEAD));
    }
    t
}

/// The tar bytes of a file of `size` bytes: its header and its data padded to 512.
pub fn entry_len(size: u64) -> u64 {
    BLOCK + size.next_multiple_of(BLOCK)
}

/// What one volume holds besides what every volume carries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    /// Whole blobs.
    pub blobs: Vec<Digest>,
    /// Pieces of blobs that span volumes.
    pub pieces: Vec<PiecePlan>,
}

/// A run of a blob's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiecePlan {
    pub blob: Digest,
    pub offset: u64,
    pub size: u64,
}

/// Fill volumes whose tar streams may each be `capacity` bytes, of which `fixed` go to what every volume
/// carries (metadata, manifests, directories, the end-of-archive blocks). `None` when not even one 1 MiB piece
/// fits beside the fixed part.
pub fn plan(blobs: &[(Digest, u64)], capacity: u64, fixed: u64) -> Option<Vec<VolumePlan>> {
    let room = capacity.checked_sub(fixed)?;
    if room < BLOCK + PIECE_ALIGN {
        return None;
    }
    let mut volumes = vec![VolumePlan::default()];
    let mut free = room;
    for (digest, size) in blobs {
        let whole = entry_len(*size);
        if whole <= free {
            volumes.last_mut().expect("one at least").blobs.push(digest.clone());
            free -= whole;
            continue;
        }
        // Not worth a piece: the blob starts the next volume.
        if free < BLOCK + PIECE_ALIGN && whole <= room {
            volumes.push(VolumePlan { blobs: vec![digest.clone()], pieces: Vec::new() });
            free = room - whole;
            continue;
        }
        let mut offset = 0;
        // Each turn places at least 1 MiB or opens a volume with room for that much, so this ends.
        while offset < *size {
            if free < BLOCK + PIECE_ALIGN {
                volumes.push(VolumePlan::default());
                free = room;
            }
            let left = size - offset;
            let take = if entry_len(left) <= free { left } else { (free - BLOCK) / PIECE_ALIGN * PIECE_ALIGN };
            volumes.last_mut().expect("one at least").pieces.push(PiecePlan {
                blob: digest.clone(),
                offset,
                size: take,
            });
            free -= entry_len(take);
            offset += take;
        }
    }
    Some(volumes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn capacity_is_the_largest_tar_within_the_bound() {
        for size in [3 << 20, 700 << 20, 4_700_000_000, (5 << 20) + 12345] {
            let t = tar_capacity(size);
            assert!(compressed_bound(t) <= size);
            assert!(compressed_bound(t + 1) > size || t + 1 > size);
        }
    }

    #[test]
    fn blobs_fill_volumes_in_order_and_large_ones_span_at_mebibyte_boundaries() {
        let mib = 1u64 << 20;
        let blobs = vec![(d(1), mib / 2), (d(2), 5 * mib + 7), (d(3), 1000)];
        let capacity = 2 * mib + 8192;
        let volumes = plan(&blobs, capacity, 4096).unwrap();
        let mut seen: std::collections::BTreeMap<Digest, u64> = Default::default();
        for v in &volumes {
            let used: u64 = v.blobs.iter().map(|b| entry_len(blobs.iter().find(|x| &x.0 == b).unwrap().1)).sum::<u64>()
                + v.pieces.iter().map(|p| entry_len(p.size)).sum::<u64>();
            assert!(used + 4096 <= capacity, "{used}");
            for b in &v.blobs {
                *seen.entry(b.clone()).or_default() += blobs.iter().find(|x| &x.0 == b).unwrap().1;
            }
            for p in &v.pieces {
                assert_eq!(p.offset % PIECE_ALIGN, 0);
                assert_eq!(*seen.get(&p.blob).unwrap_or(&0), p.offset, "pieces are in order");
                *seen.entry(p.blob.clone()).or_default() += p.size;
            }
        }
        for (digest, size) in &blobs {
            assert_eq!(seen[digest], *size, "{digest} placed whole once");
        }
        assert_eq!(volumes.len(), 3);
        assert!(plan(&blobs, capacity, capacity - mib).is_none());
    }
}
