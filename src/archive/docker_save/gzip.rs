//! Deterministic gzip on every core: the input is cut into fixed 1 MiB pieces, each deflated on its own (ending
//! on a byte boundary with a sync flush, the last one with the final block) with the 32 KiB of input before it
//! as its dictionary, and the pieces are written in order behind one gzip header, then the CRC-32 and length of
//! the whole. That is one valid gzip member, as pigz writes it. The output depends only on the input and the
//! level, never on the number of threads, and a layer compresses at N times the speed of one core.

use std::io::{self, Read, Write};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Bytes of input deflated on their own.
const PIECE: usize = 1 << 20;
/// deflate's window: what a piece may refer back to in the input before it.
const WINDOW: usize = 32 * 1024;
/// The header: magic, deflate, no flags, mtime 0, no extra flags, OS "unknown" (nothing about this machine).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// gzip everything `input` yields into `out` at `level`, deflating up to `threads` pieces at once. Holds at most
/// `threads + 1` pieces and their output in memory.
pub fn gzip(input: &mut dyn Read, out: &mut dyn Write, level: u32, threads: usize) -> io::Result<()> {
    let threads = threads.max(1);
    out.write_all(&HEADER)?;
    let mut crc = crc32fast::Hasher::new();
    let mut len: u64 = 0;
    let mut next = read_piece(input)?;
    // The end of the input deflated so far: the next piece's dictionary.
    let mut before: Vec<u8> = Vec::new();
    loop {
        let mut batch = Vec::with_capacity(threads);
        while batch.len() < threads && !next.is_empty() {
            batch.push(std::mem::replace(&mut next, read_piece(input)?));
        }
        let end = next.is_empty();
        for piece in &batch {
            crc.update(piece);
            len += piece.len() as u64;
        }
        if batch.is_empty() {
            // Empty input: one final empty block.
            out.write_all(&deflate(&[], &[], true, level))?;
            break;
        }
        let last = batch.len() - 1;
        let dictionary = |i: usize| -> &[u8] {
            let prev: &[u8] = if i == 0 { &before } else { &batch[i - 1] };
            &prev[prev.len().saturating_sub(WINDOW)..]
        };
        let deflated: Vec<Vec<u8>> = if batch.len() == 1 {
            vec![deflate(&batch[0], dictionary(0), end, level)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .iter()
                    .enumerate()
                    .map(|(i, piece)| {
                        let dict = dictionary(i);
                        s.spawn(move || deflate(piece, dict, end && i == last, level))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().expect("a deflate thread panicked")).collect()
            })
        };
        for d in &deflated {
            out.write_all(d)?;
        }
        if end {
            break;
        }
        before = batch.pop().expect("the batch has pieces");
    }
    out.write_all(&crc.finalize().to_le_bytes())?;
    out.write_all(&(len as u32).to_le_bytes())?;
    Ok(())
}

/// Up to `PIECE` bytes; empty at the end of the input.
fn read_piece(input: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut piece = vec![0u8; PIECE];
    let n = crate::archive::reader::read_up_to(input, &mut piece)?;
    piece.truncate(n);
    Ok(piece)
}

/// One piece as raw deflate, primed with `dictionary` (the input just before it): ending with a sync flush
/// (byte-aligned, so the next piece's blocks follow), or with the final block when it is the last.
fn deflate(piece: &[u8], dictionary: &[u8], last: bool, level: u32) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary).expect("a dictionary set before any input");
    }
    let mut out = Vec::with_capacity(piece.len() / 2 + 1024);
    let flush = if last { FlushCompress::Finish } else { FlushCompress::Sync };
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = c.total_in() as usize;
        let status = c.compress_vec(&piece[consumed..], &mut out, flush).expect("deflate of a buffer in memory");
        let all_in = c.total_in() as usize == piece.len();
        // A sync flush is complete once it returns with output space to spare; a finish, at the stream's end.
        let done = if last { status == Status::StreamEnd } else { all_in && out.len() < out.capacity() };
        if done {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).expect("valid gzip");
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut rng = 0x9e3779b97f4a7c15u64;
        (0..len)
            .map(|i| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // Half text-like, half noise: both compressible and not.
                if (i / 4096) % 2 == 0 { b"layer tar bytes "[i % 16] } else { rng as u8 }
            })
            .collect()
    }

    #[test]
    fn output_decompresses_to_the_input_and_does_not_depend_on_threads() {
        for len in [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 12345] {
            let input = sample(len);
            let mut one = Vec::new();
            gzip(&mut &input[..], &mut one, 6, 1).unwrap();
            assert_eq!(gunzip(&one), input, "len {len}");
            for threads in [2, 3, 8] {
                let mut many = Vec::new();
                gzip(&mut &input[..], &mut many, 6, threads).unwrap();
                assert_eq!(many, one, "len {len}, {threads} threads");
            }
        }
    }
}
