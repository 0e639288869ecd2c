//! The llama2.c `tokenizer.bin` reader rejects damaged files with clear `Error::Format`s (never
//! a panic), and the writer round-trips.

use squish_core::Error;
use squish_core::shared::shared_file;
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer};

fn base_pieces() -> Vec<String> {
    let mut p = vec![
        "<unk>".to_string(),
        "\n<s>\n".to_string(),
        "\n</s>\n".to_string(),
    ];
    p.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    p
}

/// A small valid vocabulary: the 259 base pieces, then " ", "a", "b", " a", "ab", " ab".
fn small() -> Llama2cTokenizer {
    let mut pieces = base_pieces();
    let mut scores = vec![0.0; pieces.len()];
    for (p, s) in [
        (" ", -10.0),
        ("a", -11.0),
        ("b", -12.0),
        (" a", -1.0),
        ("ab", -2.0),
        (" ab", -3.0),
    ] {
        pieces.push(p.to_string());
        scores.push(s);
    }
    Llama2cTokenizer::from_pieces(pieces, scores).unwrap()
}

/// Serializes (max_token_length, [(score, len, bytes)]) without any validation.
fn raw(max_len: i32, tokens: &[(f32, i32, &[u8])]) -> Vec<u8> {
    let mut out = max_len.to_le_bytes().to_vec();
    for (score, len, bytes) in tokens {
        out.extend_from_slice(&score.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

fn format_message(r: squish_core::Result<Llama2cTokenizer>) -> String {
    match r {
        Err(Error::Format { message, .. }) => message,
        Err(e) => panic!("expected Error::Format, got {e:?}"),
        Ok(_) => panic!("expected an error, got a tokenizer"),
    }
}

/// Offset of token `i`'s record in `small().to_bytes()`.
fn record_offset(tok: &Llama2cTokenizer, i: usize) -> usize {
    4 + tok.pieces()[..i].iter().map(|p| 8 + p.len()).sum::<usize>()
}

#[test]
fn roundtrip_to_bytes_from_bytes() {
    let tok = small();
    let n = tok.vocab_size();
    assert_eq!(n, 265);
    assert_eq!(tok.max_token_length(), 6);
    let bytes = tok.to_bytes();
    let back = Llama2cTokenizer::from_bytes(&bytes, n).unwrap();
    assert_eq!(back.pieces(), tok.pieces());
    assert_eq!(back.scores(), tok.scores());
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(
        back.encode(" ab ab", true, true),
        tok.encode(" ab ab", true, true)
    );
}

#[test]
fn small_vocab_encode_decode() {
    let tok = small();
    let (sp, a, ab, sp_a, sp_ab) = (259, 260, 263, 262, 264);
    let _ = sp_a;
    // " " + "ab": " a" (-1) merges before "ab" (-2), then " a"+"b" → " ab".
    assert_eq!(tok.encode("ab", false, false), vec![sp_ab]);
    assert_eq!(tok.encode("ab", true, true), vec![1, sp_ab, 2]);
    // "ba": " b" is no piece; "b"+"a" neither.
    assert_eq!(tok.encode("ba", false, false), vec![sp, 261, a]);
    // "c" is not in the vocabulary: byte fallback 0x63 + 3.
    assert_eq!(tok.encode("c", false, false), vec![sp, 0x63 + 3]);
    assert_eq!(tok.decode(&[1, sp_ab, ab, 2]), "abab");
    assert_eq!(tok.decode(&[sp_ab, ab]), " abab");
    // Out-of-range ids are ignored, never a panic.
    assert_eq!(tok.decode(&[1, 10_000, sp_ab]), " ab");
}

#[test]
fn truncated_files_are_rejected_at_every_length() {
    let tok = small();
    let bytes = tok.to_bytes();
    for cut in 0..bytes.len() {
        let msg = format_message(Llama2cTokenizer::from_bytes(
            &bytes[..cut],
            tok.vocab_size(),
        ));
        assert!(msg.contains("truncated"), "cut {cut}: {msg}");
    }
    let msg = format_message(Llama2cTokenizer::from_bytes(&bytes[..2], 265));
    assert!(
        msg.contains("max_token_length header needs 4 bytes at offset 0, but only 2 of 2"),
        "{msg}"
    );
    let cut = record_offset(&tok, 100) + 6;
    let msg = format_message(Llama2cTokenizer::from_bytes(&bytes[..cut], 265));
    assert!(msg.contains("length of token 100 of 265"), "{msg}");
}

#[test]
fn real_file_truncations_and_wrong_vocab_size() {
    let Some(path) = shared_file("models/stories260K/tok512.bin") else {
        eprintln!("NOTICE: skipping: tok512.bin not found");
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    for cut in (0..bytes.len()).step_by(7) {
        assert!(
            Llama2cTokenizer::from_bytes(&bytes[..cut], 512).is_err(),
            "cut {cut}"
        );
    }
    let msg = format_message(Llama2cTokenizer::from_bytes(&bytes, 511));
    assert!(msg.contains("trailing bytes after 511 tokens"), "{msg}");
    let msg = format_message(Llama2cTokenizer::from_bytes(&bytes, 513));
    assert!(msg.contains("token 512 of 513"), "{msg}");
}

#[test]
fn forged_lengths_are_rejected() {
    let tok = small();
    let good = tok.to_bytes();
    let n = tok.vocab_size();
    let len_at = |i: usize| record_offset(&tok, i) + 4;

    // Negative length.
    let mut b = good.clone();
    b[len_at(7)..len_at(7) + 4].copy_from_slice(&(-5i32).to_le_bytes());
    let msg = format_message(Llama2cTokenizer::from_bytes(&b, n));
    assert!(msg.contains("token 7 of 265: negative length -5"), "{msg}");

    // Longer than max_token_length (6).
    let mut b = good.clone();
    b[len_at(7)..len_at(7) + 4].copy_from_slice(&7i32.to_le_bytes());
    let msg = format_message(Llama2cTokenizer::from_bytes(&b, n));
    assert!(
        msg.contains("token 7 of 265: length 7 exceeds max_token_length 6"),
        "{msg}"
    );

    // Huge length with a forged huge max_token_length: bounded by the remaining bytes.
    let mut b = good.clone();
    b[0..4].copy_from_slice(&i32::MAX.to_le_bytes());
    b[len_at(264)..len_at(264) + 4].copy_from_slice(&i32::MAX.to_le_bytes());
    let msg = format_message(Llama2cTokenizer::from_bytes(&b, n));
    assert!(
        msg.contains("2147483647-byte piece of token 264 of 265"),
        "{msg}"
    );
    assert!(msg.contains("only 3 of"), "{msg}");

    // Negative max_token_length.
    let mut b = good.clone();
    b[0..4].copy_from_slice(&(-1i32).to_le_bytes());
    let msg = format_message(Llama2cTokenizer::from_bytes(&b, n));
    assert!(msg.contains("negative max_token_length -1"), "{msg}");

    // A vocab_size far larger than the file: rejected before allocating.
    let msg = format_message(Llama2cTokenizer::from_bytes(&good, usize::MAX / 2));
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn bad_scores_pieces_and_vocab_sizes_are_rejected() {
    let tok = small();
    let good = tok.to_bytes();
    let n = tok.vocab_size();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut b = good.clone();
        let at = record_offset(&tok, 261);
        b[at..at + 4].copy_from_slice(&bad.to_le_bytes());
        let msg = format_message(Llama2cTokenizer::from_bytes(&b, n));
        assert!(
            msg.contains("token 261") && msg.contains("non-finite score"),
            "{msg}"
        );
    }
    // Invalid UTF-8 in a piece.
    let mut b = good.clone();
    let at = record_offset(&tok, 260) + 8;
    b[at] = 0xFF;
    let msg = format_message(Llama2cTokenizer::from_bytes(&b, n));
    assert!(
        msg.contains("token 260 of 265") && msg.contains("not UTF-8"),
        "{msg}"
    );
    // A byte-fallback slot holding something else.
    let b = raw(
        6,
        &base_pieces()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    0.0,
                    p.len() as i32,
                    if i == 3 + 0x41 {
                        &b"<0x4A>"[..]
                    } else {
                        p.as_bytes()
                    },
                )
            })
            .collect::<Vec<_>>(),
    );
    let msg = format_message(Llama2cTokenizer::from_bytes(&b, 259));
    assert!(
        msg.contains("token 68 is \"<0x4A>\"") && msg.contains("<0x41>"),
        "{msg}"
    );
    // vocab_size below the 259 the convention needs.
    let msg = format_message(Llama2cTokenizer::from_bytes(&good, 10));
    assert!(msg.contains("vocab_size 10 is below 259"), "{msg}");
    // from_pieces validates too.
    assert!(Llama2cTokenizer::from_pieces(vec!["a".into()], vec![0.0]).is_err());
    assert!(Llama2cTokenizer::from_pieces(base_pieces(), vec![0.0; 3]).is_err());
    let mut scores = vec![0.0; 259];
    scores[5] = f32::NAN;
    assert!(Llama2cTokenizer::from_pieces(base_pieces(), scores).is_err());
}

#[test]
fn missing_file_is_an_io_error() {
    let err = Llama2cTokenizer::from_file("/nonexistent/tokenizer.bin", 512).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.bin"),
        "{err}"
    );
}

#[test]
fn tokenizer_is_object_safe_and_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Llama2cTokenizer>();
    let tok: Box<dyn Tokenizer> = Box::new(small());
    assert_eq!(tok.bos_id(), 1);
    assert_eq!(tok.eos_id(), 2);
    assert_eq!(tok.vocab_size(), 265);
    assert_eq!(tok.piece(262), " a");
}
