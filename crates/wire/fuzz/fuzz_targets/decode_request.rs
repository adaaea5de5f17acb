//! Any bytes as a request frame (the bytes after the length prefix): decoding never panics, and a frame
//! that decodes re-encodes to the very same bytes and decodes again to the same request.
#![no_main]

use bytes::{Bytes, BytesMut};
use ferry_wire::{decode_request, encode_request, split_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((id, request)) = decode_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut buf = BytesMut::new();
    encode_request(id, &request, &mut buf);
    assert_eq!(&buf[4..], data, "{request:?} re-encodes to other bytes");
    let frame = split_frame(&mut buf)
        .expect("a valid length")
        .expect("a whole frame");
    assert_eq!(decode_request(frame), Ok((id, request)));
});
