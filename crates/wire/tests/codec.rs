//! The codec of wire protocol v1 (`docs/protocol.md`), black-box:
//!
//! - round trip: every request and response encodes, splits off a buffer and decodes to itself with its
//!   id; frames concatenated in one buffer and fed in chunks of any size split one by one; a buffer cut
//!   anywhere yields nothing until the frame is whole;
//! - robustness: arbitrary bytes, and valid frames with a byte flipped, truncated anywhere or with a
//!   count or length field forged, never panic; whatever does decode re-encodes to the same bytes
//!   (the encoding is canonical, so a decoder cannot be fooled into two readings of one frame);
//! - layout: the exact bytes of a few small frames, written out by hand, so that any change of the
//!   format fails here (and `docs/protocol.md` quotes them).
//!
//! Forged counts that would make the decoder allocate gigabytes are in `forged_counts.rs`, which
//! watches the allocator. Failing cases are saved to `codec.proptest-regressions` next to this file and
//! replayed first on every run; commit that file. `PROPTEST_CASES` raises the number of cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use ferry_wire::{
    DecodeError, Delivery, Header, MAX_FRAME, PublishRecord, Request, Response, decode_request,
    decode_response, encode_request, encode_response, kind, split_frame,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------------------

/// Strings: names, any printable Unicode (multi-byte included), empty, and (with `large`) long ones up
/// to the `u16` length limit, some ending exactly on it with a multi-byte character.
fn text(large: bool) -> BoxedStrategy<String> {
    let small = prop_oneof![
        4 => "[a-z0-9._-]{1,16}",
        4 => "\\PC{1,12}",
        1 => Just(String::new()),
    ];
    if !large {
        return small.boxed();
    }
    prop_oneof![
        12 => small,
        1 => (256usize..=usize::from(u16::MAX)).prop_map(|n| "x".repeat(n)),
        1 => Just(format!("a{}", "é".repeat(32_767))), // 65535 bytes
        1 => Just("🦀".repeat(16_383)),                // 65532 bytes
    ]
    .boxed()
}

fn non_empty_text() -> impl Strategy<Value = String> {
    text(true).prop_filter("an empty field is no field", |s| !s.is_empty())
}

/// Byte strings: empty, small, and (with `large`) over 64 KiB, so that `u32` lengths are needed.
fn blob(large: bool) -> BoxedStrategy<Bytes> {
    let small = prop_oneof![
        4 => vec(any::<u8>(), 1..48).prop_map(Bytes::from),
        1 => Just(Bytes::new()),
    ];
    if !large {
        return small.boxed();
    }
    prop_oneof![
        12 => small,
        1 => (any::<u8>(), 65_536usize..300_000).prop_map(|(b, n)| Bytes::from(vec![b; n])),
    ]
    .boxed()
}

fn headers(large: bool) -> impl Strategy<Value = Vec<Header>> {
    vec(
        (text(large), blob(large)).prop_map(|(key, value)| Header { key, value }),
        0..4,
    )
}

fn pairs() -> impl Strategy<Value = Vec<(u32, u64)>> {
    vec(any::<(u32, u64)>(), 0..8)
}

fn publish_record(large: bool) -> impl Strategy<Value = PublishRecord> {
    (
        proptest::option::of(blob(large)),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<i64>()),
        headers(large),
        blob(large),
    )
        .prop_map(|(key, partition, timestamp, headers, value)| PublishRecord {
            key,
            partition,
            timestamp,
            headers,
            value,
        })
}

fn delivery(large: bool) -> impl Strategy<Value = Delivery> {
    (
        (
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            any::<u32>(),
            any::<i64>(),
        ),
        proptest::option::of(blob(large)),
        headers(large),
        blob(large),
    )
        .prop_map(
            |((partition, offset, timestamp, deliveries, lease_expires_ms), key, headers, value)| Delivery {
                partition,
                offset,
                timestamp,
                deliveries,
                lease_expires_ms,
                key,
                headers,
                value,
            },
        )
}

/// Every request variant; `large` lets strings and byte strings reach their limits.
fn request(large: bool) -> impl Strategy<Value = Request> {
    let t = move || text(large);
    prop_oneof![
        (any::<u16>(), t(), t()).prop_map(|(version, token, client)| Request::Hello {
            version,
            token,
            client
        }),
        (t(), vec(publish_record(large), 0..4))
            .prop_map(|(topic, records)| Request::Publish { topic, records }),
        (t(), t(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(group, topic, max_records, max_wait_ms, visibility_ms)| Request::Receive {
                group,
                topic,
                max_records,
                max_wait_ms,
                visibility_ms,
            }
        ),
        (t(), t(), pairs()).prop_map(|(group, topic, records)| Request::Ack {
            group,
            topic,
            records
        }),
        (t(), t(), pairs(), any::<u32>()).prop_map(|(group, topic, records, delay_ms)| Request::Nack {
            group,
            topic,
            records,
            delay_ms,
        }),
        (t(), t(), pairs(), any::<u32>()).prop_map(|(group, topic, records, visibility_ms)| {
            Request::Extend {
                group,
                topic,
                records,
                visibility_ms,
            }
        }),
    ]
}

/// Every response variant; an ERROR's field is none or non-empty (an empty one reads back as none).
fn response(large: bool) -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u16>(), text(large), any::<u32>()).prop_map(|(version, server, max_frame)| Response::Ready {
            version,
            server,
            max_frame
        }),
        pairs().prop_map(|offsets| Response::Published { offsets }),
        vec(delivery(large), 0..4).prop_map(|records| Response::Records { records }),
        Just(Response::Done),
        (
            any::<u16>(),
            text(large),
            text(large),
            proptest::option::of(non_empty_text())
        )
            .prop_map(|(status, code, message, field)| Response::Error {
                status,
                code,
                message,
                field,
            }),
    ]
}

/// A kind byte: mostly one this version knows (in either direction), sometimes any.
fn kind_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            kind::HELLO,
            kind::PUBLISH,
            kind::RECEIVE,
            kind::ACK,
            kind::NACK,
            kind::EXTEND,
            kind::READY,
            kind::PUBLISHED,
            kind::RECORDS,
            kind::DONE,
            kind::ERROR,
        ]),
        1 => any::<u8>(),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------

fn request_bytes(id: u32, request: &Request) -> BytesMut {
    let mut out = BytesMut::new();
    encode_request(id, request, &mut out);
    out
}

fn response_bytes(id: u32, response: &Response) -> BytesMut {
    let mut out = BytesMut::new();
    encode_response(id, response, &mut out);
    out
}

/// Splits the one whole frame `buf` holds, leaving it empty.
fn split_whole(mut buf: BytesMut) -> Bytes {
    let frame = split_frame(&mut buf).unwrap().expect("a whole frame");
    assert!(buf.is_empty(), "{} bytes left after the frame", buf.len());
    frame
}

/// Where to cut a buffer of `len` bytes: everywhere when it is small, else both ends and a spread.
fn cuts(len: usize) -> Vec<usize> {
    if len <= 2048 {
        return (0..len).collect();
    }
    let mut cuts: Vec<usize> = (0..64)
        .chain(len - 64..len)
        .chain((0..len).step_by(len / 128))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Whatever decodes must re-encode to the very bytes it came from: the encoding is canonical.
fn assert_request_canonical(frame: &[u8]) {
    if let Ok((id, request)) = decode_request(Bytes::copy_from_slice(frame)) {
        let again = request_bytes(id, &request);
        assert_eq!(&again[4..], frame, "{request:?} re-encodes to other bytes");
    }
}

fn assert_response_canonical(frame: &[u8]) {
    if let Ok((id, response)) = decode_response(Bytes::copy_from_slice(frame)) {
        let again = response_bytes(id, &response);
        assert_eq!(&again[4..], frame, "{response:?} re-encodes to other bytes");
    }
}

/// Feeds `stream` to `split_frame` in chunks of the given sizes (cycled), as a socket reader would, and
/// returns the frames in order; nothing may be left over.
fn split_stream(stream: &[u8], chunks: &[usize]) -> Vec<Bytes> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut at = 0;
    for size in chunks.iter().cycle() {
        if at == stream.len() {
            break;
        }
        let end = (at + size).min(stream.len());
        buf.extend_from_slice(&stream[at..end]);
        at = end;
        while let Some(frame) = split_frame(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    frames
}

/// Every proper prefix of a frame (length prefix included) is not yet a frame and is left as it is;
/// the rest completes it. Every proper prefix of the bytes after the length prefix, with a prefix that
/// says so, is an error: no frame is a truncation of another.
fn assert_cuts(whole: &[u8], decode: impl Fn(Bytes) -> bool) {
    for cut in cuts(whole.len()) {
        let mut buf = BytesMut::from(&whole[..cut]);
        assert_eq!(split_frame(&mut buf), Ok(None), "cut at {cut} of {}", whole.len());
        assert_eq!(&buf[..], &whole[..cut]);
        buf.extend_from_slice(&whole[cut..]);
        assert_eq!(&split_whole(buf)[..], &whole[4..]);

        if cut >= 4 {
            let body = Bytes::copy_from_slice(&whole[4..cut]);
            assert!(
                !decode(body),
                "a frame truncated to {} of {} bytes decoded",
                cut - 4,
                whole.len() - 4
            );
        }
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn requests_round_trip(id in any::<u32>(), request in request(true)) {
        let buf = request_bytes(id, &request);
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, buf.len() - 4);
        let frame = split_whole(buf);
        prop_assert_eq!(frame[0], request.kind());
        prop_assert_eq!(decode_response(frame.clone()), Err(DecodeError::Kind(request.kind())));
        prop_assert_eq!(decode_request(frame), Ok((id, request)));
    }

    #[test]
    fn responses_round_trip(id in any::<u32>(), response in response(true)) {
        let buf = response_bytes(id, &response);
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, buf.len() - 4);
        let frame = split_whole(buf);
        prop_assert_eq!(frame[0], response.kind());
        prop_assert_eq!(decode_request(frame.clone()), Err(DecodeError::Kind(response.kind())));
        prop_assert_eq!(decode_response(frame), Ok((id, response)));
    }

    /// Pipelined frames in one stream, read in chunks of any size: each splits off whole, in order.
    #[test]
    fn concatenated_frames_split_one_by_one(
        requests in vec((any::<u32>(), request(true)), 1..6),
        responses in vec((any::<u32>(), response(true)), 1..6),
        chunks in vec(prop_oneof![1usize..16, 16usize..4096, 4096usize..(1 << 20)], 1..8),
    ) {
        let mut stream = BytesMut::new();
        for (id, request) in &requests {
            encode_request(*id, request, &mut stream);
        }
        let frames = split_stream(&stream, &chunks);
        prop_assert_eq!(frames.len(), requests.len());
        for (frame, expected) in frames.into_iter().zip(requests) {
            prop_assert_eq!(decode_request(frame).unwrap(), expected);
        }

        let mut stream = BytesMut::new();
        for (id, response) in &responses {
            encode_response(*id, response, &mut stream);
        }
        let frames = split_stream(&stream, &chunks);
        prop_assert_eq!(frames.len(), responses.len());
        for (frame, expected) in frames.into_iter().zip(responses) {
            prop_assert_eq!(decode_response(frame).unwrap(), expected);
        }
    }

    #[test]
    fn a_cut_request_is_no_frame_yet(id in any::<u32>(), request in request(false)) {
        assert_cuts(&request_bytes(id, &request), |b| decode_request(b).is_ok());
    }

    #[test]
    fn a_cut_response_is_no_frame_yet(id in any::<u32>(), response in response(false)) {
        assert_cuts(&response_bytes(id, &response), |b| decode_response(b).is_ok());
    }
}

/// A string over the `u16` limit is cut at a character boundary, and an empty ERROR field reads back as
/// none: the only two values that do not round-trip, both documented.
#[test]
fn what_does_not_round_trip() {
    let long = "é".repeat(40_000); // 80000 bytes; byte 65535 is inside an `é`
    let hello = Request::Hello {
        version: 1,
        token: String::new(),
        client: long.clone(),
    };
    let (_, decoded) = decode_request(split_whole(request_bytes(1, &hello))).unwrap();
    let Request::Hello { client, .. } = decoded else {
        panic!("not a HELLO: {decoded:?}");
    };
    assert_eq!(client.len(), 65_534);
    assert!(long.starts_with(&client));

    let error = Response::Error {
        status: 500,
        code: "internal".into(),
        message: String::new(),
        field: Some(String::new()),
    };
    let (_, decoded) = decode_response(split_whole(response_bytes(1, &error))).unwrap();
    assert_eq!(
        decoded,
        Response::Error {
            status: 500,
            code: "internal".into(),
            message: String::new(),
            field: None,
        }
    );
}

// ---------------------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Any bytes after a length prefix: an error or a frame that re-encodes to them.
    #[test]
    fn arbitrary_frames_never_panic(
        kind in kind_byte(),
        id in any::<u32>(),
        body in prop_oneof![vec(any::<u8>(), 0..64), vec(any::<u8>(), 0..2048)],
    ) {
        let mut frame = vec![kind];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&body);
        assert_request_canonical(&frame);
        assert_response_canonical(&frame);
        // And without the header, or part of it.
        for n in 0..5.min(frame.len()) {
            prop_assert!(decode_request(Bytes::copy_from_slice(&frame[..n])).is_err());
            prop_assert!(decode_response(Bytes::copy_from_slice(&frame[..n])).is_err());
        }
    }

    /// Any stream: frames split off it decode or fail, an out-of-range length prefix is an error that
    /// leaves the buffer as it was.
    #[test]
    fn arbitrary_streams_never_panic(
        stream in prop_oneof![
            vec(any::<u8>(), 0..512),
            // Plausible prefixes: small lengths, so that frames do split off.
            vec((0u32..600, vec(any::<u8>(), 0..600)), 0..4).prop_map(|parts| {
                parts
                    .into_iter()
                    .flat_map(|(len, body)| len.to_be_bytes().into_iter().chain(body))
                    .collect::<Vec<u8>>()
            }),
        ],
    ) {
        let mut buf = BytesMut::from(&stream[..]);
        loop {
            let before = buf.clone();
            match split_frame(&mut buf) {
                Ok(Some(frame)) => {
                    prop_assert_eq!(before.len() - buf.len(), frame.len() + 4);
                    assert_request_canonical(&frame);
                    assert_response_canonical(&frame);
                }
                Ok(None) => {
                    prop_assert_eq!(&buf[..], &before[..]);
                    break;
                }
                Err(DecodeError::Length { len }) => {
                    prop_assert!(!(5..=MAX_FRAME).contains(&len));
                    prop_assert_eq!(len, u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize);
                    prop_assert_eq!(&buf[..], &before[..]);
                    break;
                }
                Err(other) => prop_assert!(false, "split_frame failed with {other:?}"),
            }
        }
    }

    /// A valid frame with one byte flipped anywhere, its length prefix included.
    #[test]
    fn a_flipped_byte_never_panics(
        id in any::<u32>(),
        request in request(false),
        response in response(false),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        for (mut buf, is_request) in [(request_bytes(id, &request), true), (response_bytes(id, &response), false)] {
            let i = at.index(buf.len());
            buf[i] ^= mask;
            // A changed prefix may make the frame shorter (bytes left over), longer (not whole yet) or
            // out of range: any of those, never a panic.
            if let Ok(Some(frame)) = split_frame(&mut buf) {
                if is_request {
                    assert_request_canonical(&frame);
                } else {
                    assert_response_canonical(&frame);
                }
            }
        }
    }

    /// A valid frame with a `u16` or `u32` anywhere after the length prefix replaced by a value that
    /// a count or length field could be forged to.
    #[test]
    fn a_forged_field_never_panics(
        id in any::<u32>(),
        request in request(false),
        response in response(false),
        at in any::<Index>(),
        wide in any::<bool>(),
        value in prop_oneof![
            Just(u32::MAX),
            Just(u32::MAX / 7 + 1),
            Just(0x8000_0000),
            Just(0x7FFF_FFFF),
            Just(u32::from(u16::MAX)),
            Just(0),
            Just(1),
            0u32..1024,
            any::<u32>(),
        ],
    ) {
        for (buf, is_request) in [(request_bytes(id, &request), true), (response_bytes(id, &response), false)] {
            let mut frame = buf[4..].to_vec();
            let width = if wide { 4 } else { 2 };
            if frame.len() < width {
                continue;
            }
            let i = at.index(frame.len() - width + 1);
            if wide {
                frame[i..i + 4].copy_from_slice(&value.to_be_bytes());
            } else {
                frame[i..i + 2].copy_from_slice(&(value as u16).to_be_bytes());
            }
            if is_request {
                assert_request_canonical(&frame);
            } else {
                assert_response_canonical(&frame);
            }
        }
    }
}

/// Each count and length field forged to its maximum in an otherwise small frame: a `Truncated` error
/// naming the field (the allocation bound is checked in `forged_counts.rs`).
#[test]
fn maximal_counts_and_lengths_are_truncation_errors() {
    let header = |kind: u8| vec![kind, 0, 0, 0, 9];
    let cases: Vec<(Vec<u8>, bool, &str)> = vec![
        (
            [header(kind::HELLO), vec![0, 1, 0xFF, 0xFF, b'x']].concat(),
            true,
            "token",
        ),
        (
            [header(kind::PUBLISH), b"\x00\x01t\xFF\xFF\xFF\xFF".to_vec()].concat(),
            true,
            "records",
        ),
        (
            // One record with a key of 4 GiB - 1 (and 2 bytes more, so that one record could fit).
            [
                header(kind::PUBLISH),
                b"\x00\x01t\x00\x00\x00\x01\x01\xFF\xFF\xFF\xFF\x00\x00".to_vec(),
            ]
            .concat(),
            true,
            "key",
        ),
        (
            // One record with 65535 headers and 7 bytes to hold them.
            [
                header(kind::PUBLISH),
                b"\x00\x01t\x00\x00\x00\x01\x00\xFF\xFF\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            ]
            .concat(),
            true,
            "headers",
        ),
        (
            // One record, no headers, a value of 4 GiB - 1.
            [
                header(kind::PUBLISH),
                b"\x00\x01t\x00\x00\x00\x01\x00\x00\x00\xFF\xFF\xFF\xFF".to_vec(),
            ]
            .concat(),
            true,
            "value",
        ),
        (
            [header(kind::ACK), b"\x00\x01g\x00\x01t\xFF\xFF\xFF\xFF".to_vec()].concat(),
            true,
            "records",
        ),
        (
            [
                header(kind::NACK),
                b"\x00\x01g\x00\x01t\xFF\xFF\xFF\xFF\x00\x00\x00\x00".to_vec(),
            ]
            .concat(),
            true,
            "records",
        ),
        (
            [
                header(kind::EXTEND),
                b"\x00\x01g\x00\x01t\xFF\xFF\xFF\xFF\x00\x00\x00\x01".to_vec(),
            ]
            .concat(),
            true,
            "records",
        ),
        (
            [header(kind::PUBLISHED), b"\xFF\xFF\xFF\xFF".to_vec()].concat(),
            false,
            "records",
        ),
        (
            [header(kind::RECORDS), b"\xFF\xFF\xFF\xFF".to_vec(), vec![0; 64]].concat(),
            false,
            "records",
        ),
        (
            [header(kind::ERROR), b"\x01\x94\xFF\xFF".to_vec()].concat(),
            false,
            "code",
        ),
    ];
    for (frame, is_request, field) in cases {
        let frame = Bytes::from(frame);
        let result = if is_request {
            decode_request(frame.clone()).map(|_| ())
        } else {
            decode_response(frame.clone()).map(|_| ())
        };
        assert_eq!(result, Err(DecodeError::Truncated { field }), "{frame:02x?}");
    }
}

#[test]
fn bad_flags_and_trailing_bytes_are_errors() {
    // A PUBLISH record with flag bit 3 set.
    let frame =
        Bytes::from_static(b"\x02\x00\x00\x00\x01\x00\x01t\x00\x00\x00\x01\x08\x00\x00\x00\x00\x00\x00");
    assert_eq!(
        decode_request(frame),
        Err(DecodeError::Flags {
            field: "record flags",
            flags: 0x08
        })
    );
    // A DONE with a byte after it.
    let frame = Bytes::from_static(b"\x84\x00\x00\x00\x01\x00");
    assert_eq!(
        decode_response(frame),
        Err(DecodeError::Trailing {
            kind: kind::DONE,
            count: 1
        })
    );
    // A topic that is not UTF-8.
    let frame = Bytes::from_static(b"\x02\x00\x00\x00\x01\x00\x01\xFF\x00\x00\x00\x00");
    assert_eq!(decode_request(frame), Err(DecodeError::Utf8 { field: "topic" }));
}

#[test]
fn lengths_out_of_range_are_errors() {
    for len in [0u32, 4, MAX_FRAME as u32 + 1, u32::MAX] {
        let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
        assert_eq!(
            split_frame(&mut buf),
            Err(DecodeError::Length { len: len as usize })
        );
        assert_eq!(buf.len(), 4, "the buffer is left as it was");
    }
    for len in [5u32, MAX_FRAME as u32] {
        let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
        assert_eq!(split_frame(&mut buf), Ok(None));
    }
    assert_eq!(decode_request(Bytes::new()), Err(DecodeError::Length { len: 0 }));
    let big = Bytes::from(vec![kind::DONE; MAX_FRAME + 1]);
    assert_eq!(
        decode_response(big),
        Err(DecodeError::Length { len: MAX_FRAME + 1 })
    );
}

// ---------------------------------------------------------------------------------------------------------
// Layout: these bytes are the specification (`docs/protocol.md` quotes them). A change here is a new
// protocol version, not a fix.
// ---------------------------------------------------------------------------------------------------------

fn assert_request_layout(id: u32, request: &Request, expected: &[&[u8]]) {
    let expected = expected.concat();
    assert_eq!(request_bytes(id, request).to_vec(), expected, "{request:?}");
    assert_eq!(
        decode_request(Bytes::from(expected).split_off(4)),
        Ok((id, request.clone()))
    );
}

fn assert_response_layout(id: u32, response: &Response, expected: &[&[u8]]) {
    let expected = expected.concat();
    assert_eq!(response_bytes(id, response).to_vec(), expected, "{response:?}");
    assert_eq!(
        decode_response(Bytes::from(expected).split_off(4)),
        Ok((id, response.clone()))
    );
}

#[test]
fn hello_layout() {
    let hello = Request::Hello {
        version: 1,
        token: "s3cret".into(),
        client: "ferry/0.1".into(),
    };
    assert_request_layout(
        1,
        &hello,
        &[
            b"\x00\x00\x00\x1a",  // length: 26 bytes follow
            b"\x01",              // kind: HELLO
            b"\x00\x00\x00\x01",  // id: 1
            b"\x00\x01",          // version: 1
            b"\x00\x06s3cret",    // token
            b"\x00\x09ferry/0.1", // client
        ],
    );
}

#[test]
fn ready_layout() {
    let ready = Response::Ready {
        version: 1,
        server: "ferry/0.1.0".into(),
        max_frame: MAX_FRAME as u32,
    };
    assert_response_layout(
        1,
        &ready,
        &[
            b"\x00\x00\x00\x18",    // length: 24
            b"\x81",                // kind: READY
            b"\x00\x00\x00\x01",    // id: 1
            b"\x00\x01",            // version: 1
            b"\x00\x0bferry/0.1.0", // server
            b"\x01\x01\x00\x00",    // max_frame: 16842752 (16 MiB + 64 KiB)
        ],
    );
}

#[test]
fn publish_layout() {
    let publish = Request::Publish {
        topic: "orders".into(),
        records: vec![
            PublishRecord {
                key: Some(Bytes::from_static(b"k1")),
                partition: Some(3),
                timestamp: Some(1_700_000_000_000),
                headers: vec![Header {
                    key: "h".into(),
                    value: Bytes::from_static(b"v"),
                }],
                value: Bytes::from_static(b"hi"),
            },
            PublishRecord::default(),
        ],
    };
    assert_request_layout(
        7,
        &publish,
        &[
            b"\x00\x00\x00\x3b",                 // length: 59
            b"\x02",                             // kind: PUBLISH
            b"\x00\x00\x00\x07",                 // id: 7
            b"\x00\x06orders",                   // topic
            b"\x00\x00\x00\x02",                 // records: 2
            b"\x07",                             // [0] flags: key | partition | timestamp
            b"\x00\x00\x00\x02k1",               // [0] key
            b"\x00\x00\x00\x03",                 // [0] partition: 3
            b"\x00\x00\x01\x8b\xcf\xe5\x68\x00", // [0] timestamp: 1700000000000
            b"\x00\x01",                         // [0] headers: 1
            b"\x00\x01h",                        // [0] header name
            b"\x00\x00\x00\x01v",                // [0] header value
            b"\x00\x00\x00\x02hi",               // [0] value
            b"\x00",                             // [1] flags: none
            b"\x00\x00",                         // [1] headers: 0
            b"\x00\x00\x00\x00",                 // [1] value: empty
        ],
    );
}

#[test]
fn published_layout() {
    let published = Response::Published {
        offsets: vec![(3, 42), (0, 17)],
    };
    assert_response_layout(
        7,
        &published,
        &[
            b"\x00\x00\x00\x21",                 // length: 33
            b"\x82",                             // kind: PUBLISHED
            b"\x00\x00\x00\x07",                 // id: 7
            b"\x00\x00\x00\x02",                 // offsets: 2
            b"\x00\x00\x00\x03",                 // [0] partition: 3
            b"\x00\x00\x00\x00\x00\x00\x00\x2a", // [0] offset: 42
            b"\x00\x00\x00\x00",                 // [1] partition: 0
            b"\x00\x00\x00\x00\x00\x00\x00\x11", // [1] offset: 17
        ],
    );
}

#[test]
fn error_layout() {
    let error = Response::Error {
        status: 404,
        code: "topic_not_found".into(),
        message: "no such topic".into(),
        field: Some("topic".into()),
    };
    assert_response_layout(
        7,
        &error,
        &[
            b"\x00\x00\x00\x2e",        // length: 46
            b"\xff",                    // kind: ERROR
            b"\x00\x00\x00\x07",        // id: 7
            b"\x01\x94",                // status: 404
            b"\x00\x0ftopic_not_found", // code
            b"\x00\x0dno such topic",   // message
            b"\x00\x05topic",           // field
        ],
    );
}
