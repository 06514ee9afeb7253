use super::*;
use proptest::prelude::*;

fn decode_with(input: &[u8], opts: DataOptions) -> (Vec<u8>, DataProgress, Result<u64, DataError>) {
    let mut dec = DataDecoder::new(opts);
    let mut out = Vec::new();
    let p = dec.decode(input, &mut out);
    let r = dec.finish();
    (out, p, r)
}

fn normalize() -> DataOptions {
    DataOptions::default().bare_line_ending(BareLineEnding::Normalize)
}

#[test]
fn rfc5321_basics() {
    let (out, p, r) = decode_with(b"Hello\r\n..dotted\r\n.x\r\n.\r\n", DataOptions::default());
    assert_eq!(out, b"Hello\r\n.dotted\r\nx\r\n");
    assert!(p.done);
    assert_eq!(r, Ok(19));
}

#[test]
fn empty_message_right_after_354() {
    let (out, p, r) = decode_with(b".\r\nQUIT\r\n", DataOptions::default());
    assert!(out.is_empty());
    assert_eq!(
        p,
        DataProgress {
            consumed: 3,
            done: true
        }
    );
    assert_eq!(r, Ok(0));
}

#[test]
fn stops_at_terminator() {
    let input = b"a\r\n.\r\nRSET\r\n";
    let (_, p, _) = decode_with(input, DataOptions::default());
    assert_eq!(&input[p.consumed..], b"RSET\r\n");
    // Feeding more after done consumes nothing.
    let mut dec = DataDecoder::new(DataOptions::default());
    let mut out = Vec::new();
    dec.decode(b"a\r\n.\r\n", &mut out);
    assert_eq!(dec.decode(b"more", &mut out).consumed, 0);
}

#[test]
fn unterminated() {
    let (out, p, r) = decode_with(b"a\r\n.\r", DataOptions::default());
    assert_eq!(out, b"a\r\n");
    assert!(!p.done);
    assert_eq!(r, Err(DataError::Unterminated));
}

/// Published SMTP smuggling vectors (SEC Consult 2023, Postfix and Sendmail advisories): none
/// may end the data, with either policy. The real terminator follows each.
#[test]
fn smuggling_vectors_never_terminate() {
    let vectors: &[&[u8]] = &[
        b"\n.\n",
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\r",
        b"\r.\r\n",
        b"\r.\n",
        b"\n.\r",
        b"\r\n.\r\r\n",
        b"\r\n\x00.\r\n",
        b"\n\n.\n\n",
        b"\r\r\n.\r\r\n",
    ];
    for v in vectors {
        let mut input = b"Subject: x\r\n\r\nbody".to_vec();
        input.extend_from_slice(v);
        input.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nSpoofed\r\n");
        let end = input.len();
        input.extend_from_slice(b".\r\nQUIT\r\n");
        for opts in [DataOptions::default(), normalize()] {
            let (out, p, r) = decode_with(&input, opts.clone());
            assert!(p.done, "{v:?}");
            assert_eq!(p.consumed, end + 3, "{v:?} ended early");
            let has_bare = v.windows(1).enumerate().any(|(i, w)| {
                (w[0] == b'\n' && (i == 0 || v[i - 1] != b'\r'))
                    || (w[0] == b'\r' && v.get(i + 1) != Some(&b'\n'))
            });
            if opts.bare_line_ending == BareLineEnding::Reject && has_bare {
                assert_eq!(r, Err(DataError::BareLineEnding), "{v:?}");
            } else {
                assert!(r.is_ok(), "{v:?}");
                assert!(out.windows(7).any(|w| w == b"Spoofed"), "{v:?}");
                // Normalised output has no bare line endings left.
                for (i, b) in out.iter().enumerate() {
                    if *b == b'\n' {
                        assert_eq!(out[i - 1], b'\r', "{v:?}");
                    }
                    if *b == b'\r' {
                        assert_eq!(out.get(i + 1), Some(&b'\n'), "{v:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn normalize_bare_endings() {
    let (out, p, r) = decode_with(b"a\nb\rc\r\n.\r\n", normalize());
    assert!(p.done);
    assert_eq!(out, b"a\r\nb\r\nc\r\n");
    assert_eq!(r, Ok(9));
    // `.` then bare LF keeps its dot; `..` then bare LF is unstuffed.
    let (out, _, _) = decode_with(b"x\r\n.\n..\ny\r\n.\r\n", normalize());
    assert_eq!(out, b"x\r\n.\r\n.\r\ny\r\n");
}

#[test]
fn after_bare_a_real_dot_line_is_content_then_real_end() {
    // `\n.\r\n` is content (the dot line follows a bare LF); the next `.\r\n` follows a real
    // CRLF and ends the data.
    let (out, p, r) = decode_with(b"a\n.\r\n.\r\n", normalize());
    assert!(p.done);
    assert_eq!(out, b"a\r\n.\r\n");
    assert_eq!(r, Ok(6));
}

#[test]
fn line_length_limit() {
    let mut line = vec![b'x'; 998];
    line.extend_from_slice(b"\r\n.\r\n");
    let (_, _, r) = decode_with(&line, DataOptions::default());
    assert_eq!(r, Ok(1000));
    let mut long = vec![b'x'; 999];
    long.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
    let (_, p, r) = decode_with(&long, DataOptions::default());
    assert_eq!(p.consumed, 1004);
    assert_eq!(r, Err(DataError::LineTooLong { max: 1000 }));
    assert_eq!(r.unwrap_err().reply().code().get(), 500);
    // A stuffed dot counts on the wire.
    let mut stuffed = vec![b'.'; 999];
    stuffed.extend_from_slice(b"\r\n.\r\n");
    let (_, _, r) = decode_with(&stuffed, DataOptions::default());
    assert!(r.is_err());
    let (_, _, r) = decode_with(&long, DataOptions::default().max_line(usize::MAX));
    assert!(r.is_ok());
}

#[test]
fn size_limit_drains_to_terminator() {
    let opts = DataOptions::default().max_size(Some(10));
    let mut dec = DataDecoder::new(opts);
    let mut out = Vec::new();
    let p = dec.decode(b"0123456789\r\nmore text\r\n", &mut out);
    assert!(!p.done);
    assert_eq!(dec.error(), Some(&DataError::TooBig { max: 10 }));
    let before = out.len();
    let p = dec.decode(b"still more\r\n.\r\nQUIT\r\n", &mut out);
    assert!(p.done);
    assert_eq!(p.consumed, 15);
    assert_eq!(out.len(), before, "nothing written after the error");
    let e = dec.finish().unwrap_err();
    assert_eq!(
        e.reply().to_string(),
        "552 5.3.4 message exceeds the maximum size of 10 octets\r\n"
    );
    let (_, _, r) = decode_with(
        b"0123456789\r\n.\r\n",
        DataOptions::default().max_size(Some(12)),
    );
    assert_eq!(r, Ok(12));
}

#[test]
fn bare_reject_reply() {
    let (_, p, r) = decode_with(b"a\nb\r\n.\r\n", DataOptions::default());
    assert!(p.done);
    let e = r.unwrap_err();
    assert_eq!(e.reply().code().get(), 550);
    assert_eq!(e.reply().enhanced().unwrap().to_string(), "5.6.11");
}

#[test]
fn encoder_basics() {
    assert_eq!(DataEncoder::encode_all(b""), b".\r\n");
    assert_eq!(DataEncoder::encode_all(b"a"), b"a\r\n.\r\n");
    assert_eq!(DataEncoder::encode_all(b"a\r\n"), b"a\r\n.\r\n");
    assert_eq!(DataEncoder::encode_all(b".\r\n"), b"..\r\n.\r\n");
    assert_eq!(DataEncoder::encode_all(b"a\n.\n"), b"a\r\n..\r\n.\r\n");
    assert_eq!(DataEncoder::encode_all(b"a\r"), b"a\r\n.\r\n");
    assert_eq!(DataEncoder::encode_all(b"\r\r\n"), b"\r\n\r\n.\r\n");
    let mut enc = DataEncoder::bdat();
    let mut out = Vec::new();
    enc.encode(b".a\nb", &mut out);
    enc.finish(&mut out);
    enc.finish(&mut out);
    assert_eq!(out, b".a\r\nb\r\n");
}

/// What `decode(encode(x))` must give: line endings normalised, a final CRLF if non-empty.
fn canonical(x: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < x.len() {
        match x[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if x.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(b'a'),
            3 => Just(b'.'),
            3 => Just(b'\r'),
            3 => Just(b'\n'),
            1 => any::<u8>(),
        ],
        0..200,
    )
}

/// Long runs of plain lines with the odd dot, bare CR or LF, empty line or long line: what
/// reaches the encoder's 64-byte fast path, with its edge cases, and the decoder's line
/// length limit on long lines.
fn mostly_plain_bytes() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        0usize..140,
        prop_oneof![
            8 => Just(&b""[..]),
            1 => Just(&b"."[..]),
            1 => Just(&b".."[..]),
            1 => Just(&b"\r"[..]),
            1 => Just(&b"\n"[..]),
            1 => Just(&b"\r\n.\r\n"[..]),
        ],
        prop_oneof![8 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..]), 1 => Just(&b"\r"[..])],
    );
    prop::collection::vec(line, 0..40).prop_map(|lines| {
        let mut out = Vec::new();
        for (len, special, end) in lines {
            // The special bytes land at the start, in the middle or at the end of a line.
            let at = len / 2;
            out.extend(std::iter::repeat_n(b'a', at));
            out.extend_from_slice(special);
            out.extend(std::iter::repeat_n(b'b', len - at));
            out.extend_from_slice(end);
        }
        out
    })
}

/// The encoder's output, one byte at a time by the definition: line endings normalised, a
/// final CRLF, dots stuffed (DATA) and the terminator.
fn encode_reference(msg: &[u8], stuff: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut line_start = true;
    for &b in &canonical(msg) {
        if stuff && line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if stuff {
        out.extend_from_slice(b".\r\n");
    }
    out
}

/// `msg` through `enc`, cut at `cuts` (taken modulo the length), then finished.
fn encode_chunks(mut enc: DataEncoder, msg: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (msg.len() + 1)).collect();
    bounds.push(msg.len());
    bounds.sort_unstable();
    let mut at = 0;
    for end in bounds {
        enc.encode(&msg[at..end], &mut wire);
        at = end;
    }
    enc.finish(&mut wire);
    wire
}

fn decode_chunks(
    input: &[u8],
    cuts: &[usize],
    opts: &DataOptions,
) -> (Vec<u8>, usize, bool, Result<u64, DataError>) {
    let mut dec = DataDecoder::new(opts.clone());
    let mut out = Vec::new();
    let mut at = 0;
    let mut consumed = 0;
    let mut done = false;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    for end in bounds {
        if end < at || done {
            continue;
        }
        let p = dec.decode(&input[at..end], &mut out);
        consumed += p.consumed;
        done = p.done;
        if !done {
            assert_eq!(p.consumed, end - at);
        }
        at = end;
    }
    let r = dec.finish();
    (if r.is_ok() { out } else { Vec::new() }, consumed, done, r)
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(msg in message_bytes(), cuts in prop::collection::vec(any::<usize>(), 0..5)) {
        let wire = encode_chunks(DataEncoder::new(), &msg, &cuts);
        prop_assert_eq!(&wire, &DataEncoder::encode_all(&msg));
        let (out, p, r) = decode_with(&wire, DataOptions::default().max_line(usize::MAX));
        prop_assert!(p.done);
        prop_assert_eq!(p.consumed, wire.len());
        prop_assert_eq!(r, Ok(out.len() as u64));
        prop_assert_eq!(out, canonical(&msg));
    }

    #[test]
    fn decoding_is_split_invariant(
        msg in message_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        normalize_policy in any::<bool>(),
        max_line in prop::sample::select(vec![5usize, 40, 1000]),
    ) {
        let mut input = msg;
        input.extend_from_slice(b"\r\n.\r\ntrailing");
        let opts = DataOptions::default()
            .max_line(max_line)
            .bare_line_ending(if normalize_policy { BareLineEnding::Normalize } else { BareLineEnding::Reject });
        let whole = decode_chunks(&input, &[], &opts);
        let split = decode_chunks(&input, &cuts, &opts);
        prop_assert_eq!(&whole, &split);
        // Byte at a time, too.
        let every: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(&whole, &decode_chunks(&input, &every, &opts));
        prop_assert!(whole.2, "the real terminator is always found");
    }

    #[test]
    fn long_plain_lines_decode_as_byte_at_a_time(
        msg in mostly_plain_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
        normalize_policy in any::<bool>(),
        max_line in prop::sample::select(vec![40usize, 66, 67, 100, 1000]),
    ) {
        let mut input = msg;
        input.extend_from_slice(b"\r\n.\r\ntrailing");
        let opts = DataOptions::default()
            .max_line(max_line)
            .bare_line_ending(if normalize_policy { BareLineEnding::Normalize } else { BareLineEnding::Reject });
        // One byte at a time: each line ending and limit check on its own.
        let every: Vec<usize> = (0..input.len()).collect();
        let reference = decode_chunks(&input, &every, &opts);
        prop_assert_eq!(&decode_chunks(&input, &[], &opts), &reference);
        prop_assert_eq!(&decode_chunks(&input, &cuts, &opts), &reference);
    }

    #[test]
    fn fast_path_encodes_by_the_definition(
        msg in mostly_plain_bytes(),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
        stuff in any::<bool>(),
    ) {
        let enc = if stuff { DataEncoder::new() } else { DataEncoder::bdat() };
        prop_assert_eq!(encode_chunks(enc, &msg, &cuts), encode_reference(&msg, stuff));
    }

    #[test]
    fn terminator_is_the_first_real_crlf_dot_crlf(msg in message_bytes()) {
        let mut input = msg;
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, p, _) = decode_with(&input, normalize());
        // The decoder stops exactly after the first "\r\n.\r\n" (or a leading ".\r\n").
        let with_start: Vec<u8> = [b"\r\n".as_slice(), &input].concat();
        let first = with_start.windows(5).position(|w| w == b"\r\n.\r\n").unwrap();
        prop_assert_eq!(p.consumed, first + 3);
    }
}
