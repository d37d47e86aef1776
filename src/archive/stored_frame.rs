//! A zstd frame of raw (stored) blocks, for frames of already-compressed layers.
//!
//! zstd at any level finds nothing to gain in gzip or zstd layers and stores their blocks raw anyway, but
//! only after looking for matches in every byte and copying it to its output. Most of an archive is such
//! layers, so the writer emits those frames itself: the same kind of frame zstd would have produced (raw
//! blocks, the content size, the XXH64 content checksum), written from the frame buffer without a copy. Any
//! zstd decoder reads them, and `zstd -t` checks their checksum like any other frame's.
//!
//! Layout (RFC 8878): magic `FD 2F B5 28`; frame header descriptor `0xA4` (single segment, 4-byte content size,
//! content checksum); the content size (u32 LE); blocks of at most 128 KiB, each a 3-byte little-endian header
//! `size << 3 | type (0 = raw) << 1 | last`, then the bytes; the low 32 bits of XXH64(content, seed 0), LE.

use std::io::{self, IoSlice, Write};

const MAGIC: u32 = 0xFD2F_B528;
/// Single_Segment_flag (0x20) | Content_Checksum_flag (0x04) | Frame_Content_Size_flag = 2, a 4-byte size (0x80).
const DESCRIPTOR: u8 = 0xA4;
/// The largest block zstd allows.
const BLOCK_MAX: usize = 128 << 10;
const HEADER_LEN: usize = 4 + 1 + 4;

/// The frame's length for `content_len` bytes of content.
pub fn frame_len(content_len: usize) -> usize {
    HEADER_LEN + content_len.div_ceil(BLOCK_MAX).max(1) * 3 + content_len + 4
}

/// The frame's content checksum: computed apart, so that it can run on a compression thread.
pub fn checksum(content: &[u8]) -> u32 {
    xxhash_rust::xxh64::xxh64(content, 0) as u32
}

/// Write `content` as one stored frame, with `checksum` from `checksum(content)`. One vectored write per call
/// where the writer takes it whole: the content is never copied here.
pub fn write(out: &mut impl Write, content: &[u8], checksum: u32) -> io::Result<()> {
    assert!(content.len() <= u32::MAX as usize, "frames are small");
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4] = DESCRIPTOR;
    header[5..].copy_from_slice(&(content.len() as u32).to_le_bytes());
    let blocks: Vec<&[u8]> = if content.is_empty() { vec![&[][..]] } else { content.chunks(BLOCK_MAX).collect() };
    let block_headers: Vec<[u8; 3]> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let last = u32::from(i + 1 == blocks.len());
            let h = (b.len() as u32) << 3 | last;
            [h as u8, (h >> 8) as u8, (h >> 16) as u8]
        })
        .collect();
    let trailer = checksum.to_le_bytes();
    let mut slices = Vec::with_capacity(2 + 2 * blocks.len());
    slices.push(IoSlice::new(&header));
    for (h, b) in block_headers.iter().zip(&blocks) {
        slices.push(IoSlice::new(h));
        slices.push(IoSlice::new(b));
    }
    slices.push(IoSlice::new(&trailer));
    write_all_vectored(out, &mut slices)
}

/// `Write::write_all_vectored`, which is not stable yet.
fn write_all_vectored(out: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "failed to write a whole frame")),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, content, checksum(content)).unwrap();
        assert_eq!(out.len(), frame_len(content.len()));
        out
    }

    #[test]
    fn any_zstd_decoder_reads_a_stored_frame_back() {
        for len in [0, 1, BLOCK_MAX - 1, BLOCK_MAX, BLOCK_MAX + 1, 8 * BLOCK_MAX, 8 * BLOCK_MAX + 77] {
            let content: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            let frame = stored(&content);
            assert_eq!(zstd::decode_all(&frame[..]).unwrap(), content, "{len} bytes");
        }
    }

    #[test]
    fn a_changed_byte_fails_the_content_checksum() {
        let content = vec![0x5au8; 3 * BLOCK_MAX];
        let mut frame = stored(&content);
        let middle = frame.len() / 2;
        frame[middle] ^= 1;
        let err = zstd::decode_all(&frame[..]).unwrap_err();
        assert!(err.to_string().to_lowercase().contains("checksum"), "{err}");
    }
}
