//! A frame whose record count claims 2^32 - 1 records (or just one more than its bytes could hold) is
//! refused at once, in frames of every size up to `MAX_FRAME`: the decoder never reserves room for
//! records the frame cannot hold.
//!
//! The decoding runs under an allocator capped a few MiB above what was allocated before it: reserving
//! room for the forged count would be gigabytes, over the cap, and abort this test binary with
//! "memory allocation of N bytes failed". The cap is process-wide, so this file holds one test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cap::Cap;
use ferry_wire::{DecodeError, MAX_FRAME, decode_request, decode_response, kind};

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// What decoding one forged frame may allocate: its names, never its records.
const HEADROOM: usize = 8 * 1024 * 1024;

/// Smallest encoded size of one item of each count (what the decoder divides the rest of the frame by).
const PUBLISH_RECORD: usize = 7;
const PAIR: usize = 12;
const DELIVERY: usize = 39;

/// A frame of `kind`: `fields`, a `u32` count, then `rest` zero bytes.
fn frame(kind: u8, fields: &[u8], count: u32, rest: usize) -> Bytes {
    let head = 5 + fields.len() + 4;
    // Zeroed by the allocator: `resize` would write 16 MiB byte by byte in a debug build.
    let mut frame = vec![0; head + rest];
    frame[..5].copy_from_slice(&[kind, 0, 0, 0, 1]);
    frame[5..head - 4].copy_from_slice(fields);
    frame[head - 4..head].copy_from_slice(&count.to_be_bytes());
    Bytes::from(frame)
}

#[test]
fn forged_counts_are_refused_without_allocating() {
    let names = b"\x00\x05group\x00\x06orders";
    // (kind, fields before the count, smallest item, is a request)
    let shapes: [(u8, &[u8], usize, bool); 6] = [
        (kind::PUBLISH, b"\x00\x06orders", PUBLISH_RECORD, true),
        (kind::ACK, names, PAIR, true),
        (kind::NACK, names, PAIR, true),
        (kind::EXTEND, names, PAIR, true),
        (kind::PUBLISHED, b"", PAIR, false),
        (kind::RECORDS, b"", DELIVERY, false),
    ];
    let mut decoding = Duration::ZERO;
    let mut decoded = 0;
    for (kind, fields, item, is_request) in shapes {
        let room = MAX_FRAME - 5 - fields.len() - 4;
        for rest in [0, 1, 100, 64 * 1024, room] {
            // More items than `rest` bytes can hold: the most a count can say, and just one too many.
            let over = u32::try_from(rest / item + 1).unwrap();
            for count in [u32::MAX, u32::MAX / 7 + 1, 0x8000_0000, over] {
                let frame = frame(kind, fields, count, rest);
                let baseline = ALLOCATOR.allocated();
                ALLOCATOR.set_limit(baseline + HEADROOM).unwrap();
                let started = Instant::now();
                let result = if is_request {
                    decode_request(frame).map(|_| ())
                } else {
                    decode_response(frame).map(|_| ())
                };
                decoding += started.elapsed();
                ALLOCATOR.set_limit(usize::MAX).unwrap();
                assert_eq!(
                    result,
                    Err(DecodeError::Truncated { field: "records" }),
                    "kind {kind:#04x}, count {count}, {rest} bytes after it"
                );
                decoded += 1;
            }
        }
    }
    assert_eq!(decoded, 6 * 5 * 4);
    // Each is refused before a single record is read; a generous bound for a loaded debug build, that
    // fails if decoding ever walks the forged count.
    assert!(decoding < Duration::from_secs(5), "decoding took {decoding:?}");
}
