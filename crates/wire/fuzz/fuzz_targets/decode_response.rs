//! Any bytes as a response frame (the bytes after the length prefix): decoding never panics, and a frame
//! that decodes re-encodes to the very same bytes and decodes again to the same response.
#![no_main]

use bytes::{Bytes, BytesMut};
use ferry_wire::{decode_response, encode_response, split_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((id, response)) = decode_response(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut buf = BytesMut::new();
    encode_response(id, &response, &mut buf);
    assert_eq!(&buf[4..], data, "{response:?} re-encodes to other bytes");
    let frame = split_frame(&mut buf)
        .expect("a valid length")
        .expect("a whole frame");
    assert_eq!(decode_response(frame), Ok((id, response)));
});
