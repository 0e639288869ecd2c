//! `train_bpe`: determinism, llama2.c layout, round trips, compression, speed, errors.
//! Uses TinyStories train.txt/valid.txt when present, else a generated TinyStories-like text.

use squish_core::Error;
use squish_core::shared::shared_file;
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer, train_bpe};
use std::time::Instant;

/// A TinyStories-like text from a fixed word list (deterministic).
fn generated_text(n_sentences: usize, seed: u64) -> String {
    const NAMES: [&str; 6] = ["Lily", "Ben", "Tom", "Sue", "Max", "Mia"];
    const VERBS: [&str; 8] = [
        "saw",
        "liked",
        "found",
        "wanted",
        "played with",
        "helped",
        "took",
        "made",
    ];
    const THINGS: [&str; 10] = [
        "a big dog",
        "the red ball",
        "a little cat",
        "her toy",
        "the tree",
        "a shiny car",
        "some cake",
        "the park",
        "a bird",
        "his mom",
    ];
    const ENDS: [&str; 5] = [
        ".",
        "!",
        ". They were happy.",
        ", and it was fun.",
        "\u{201d} she said.",
    ];
    let mut x = seed | 1;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    const SYLLABLES: [&str; 12] = [
        "ba", "ki", "lo", "mu", "ne", "ri", "so", "ta", "ve", "zu", "pi", "do",
    ];
    let mut out = String::from("Once upon a time, ");
    for i in 0..n_sentences {
        out.push_str(NAMES[next(NAMES.len())]);
        out.push(' ');
        out.push_str(VERBS[next(VERBS.len())]);
        out.push(' ');
        // A made-up word of 2-3 syllables gives the trainer many word types.
        for _ in 0..2 + next(2) {
            out.push_str(SYLLABLES[next(SYLLABLES.len())]);
        }
        out.push(' ');
        out.push_str(THINGS[next(THINGS.len())]);
        out.push_str(ENDS[next(ENDS.len())]);
        out.push_str(if i % 7 == 6 { "\n" } else { " " });
    }
    out
}

/// (training text, held-out text).
fn corpus() -> (String, String) {
    match (
        shared_file("tinystories/train.txt"),
        shared_file("tinystories/valid.txt"),
    ) {
        (Some(t), Some(v)) => {
            let train = std::fs::read_to_string(t).unwrap();
            let valid = std::fs::read_to_string(v).unwrap();
            let mut end = 200_000.min(valid.len());
            while !valid.is_char_boundary(end) {
                end -= 1;
            }
            (train, valid[..end].to_string())
        }
        _ => {
            eprintln!("NOTICE: TinyStories not found; using generated text");
            (generated_text(40_000, 1), generated_text(2_000, 2))
        }
    }
}

#[test]
fn trains_on_corpus_deterministically_and_compresses_held_out_text() {
    let (train, held_out) = corpus();
    let t0 = Instant::now();
    let tok = train_bpe(&train, 512).unwrap();
    let dt = t0.elapsed();
    eprintln!("trained 512-piece BPE on {} bytes in {dt:?}", train.len());
    assert!(dt.as_secs_f64() < 20.0, "training took {dt:?}");

    let again = train_bpe(&train, 512).unwrap();
    assert_eq!(tok.to_bytes(), again.to_bytes(), "two runs differ");

    // Layout: the llama2.c / SentencePiece convention.
    assert_eq!(tok.vocab_size(), 512);
    assert_eq!(tok.piece(0), "<unk>");
    assert_eq!(tok.piece(1), "\n<s>\n");
    assert_eq!(tok.piece(2), "\n</s>\n");
    for b in 0..=255u32 {
        assert_eq!(tok.piece(3 + b), format!("<0x{b:02X}>"));
    }
    assert!(
        tok.token_id(" ").is_some(),
        "the dummy-prefix space is a piece"
    );
    let first_merge = (259..512)
        .find(|&i| tok.score(i) == Some(0.0))
        .expect("merge of rank 0");
    for (rank, id) in (first_merge..512).enumerate() {
        assert_eq!(tok.score(id), Some(-(rank as f32)), "piece {id}");
        let p = tok.piece(id);
        assert!(
            p.chars().count() >= 2 && !p[1..].contains(' ') && !p.contains('\n'),
            "{p:?}"
        );
    }
    for id in 259..first_merge {
        assert_eq!(tok.piece(id).chars().count(), 1, "character piece {id}");
    }

    // Round trip of held-out text, with and without BOS.
    let ids = tok.encode(&held_out, true, true);
    assert_eq!(tok.decode(&ids), held_out);
    let ratio = (ids.len() - 2) as f64 / held_out.chars().count() as f64;
    eprintln!(
        "held-out: {} chars → {} tokens ({ratio:.3} tokens/char)",
        held_out.chars().count(),
        ids.len() - 2
    );
    assert!(ratio < 0.6, "{ratio:.3} tokens per char");

    // Merged pieces with a leading space encode to themselves when they are the whole text.
    let spaced: Vec<u32> = (first_merge..512)
        .filter(|&i| tok.piece(i).starts_with(' '))
        .collect();
    let selfish = spaced
        .iter()
        .filter(|&&i| tok.encode(&tok.piece(i)[1..], false, false) == [i])
        .count();
    assert!(
        selfish * 100 >= spaced.len() * 95,
        "{selfish} of {} space pieces encode to themselves",
        spaced.len()
    );

    // Saved and reloaded, it is the same tokenizer.
    let back = Llama2cTokenizer::from_bytes(&tok.to_bytes(), 512).unwrap();
    assert_eq!(back.encode(&held_out, true, false), ids[..ids.len() - 1]);
}

#[test]
fn small_generated_text_and_edge_cases() {
    let text = generated_text(3_000, 7);
    let a = train_bpe(&text, 300).unwrap();
    let b = train_bpe(&text, 300).unwrap();
    assert_eq!(a.to_bytes(), b.to_bytes());
    let held = generated_text(100, 99);
    assert_eq!(a.decode(&a.encode(&held, true, false)), held);
    // Characters unseen in training fall back to bytes and still round-trip.
    let odd = "Zebra 🦓 ünïcödé\n\n  two  spaces";
    assert_eq!(a.decode(&a.encode(odd, true, false)), odd);
    // The smallest vocabulary is just the special and byte pieces.
    let min = train_bpe("", 259).unwrap();
    assert_eq!(min.vocab_size(), 259);
    // Without a " " piece the dummy prefix is the byte token <0x20>, which decode (like
    // llama2.c) does not strip after BOS.
    let ids = min.encode("héllo", true, false);
    assert_eq!(
        ids,
        [
            1,
            3 + 0x20,
            3 + u32::from(b'h'),
            3 + 0xC3,
            3 + 0xA9,
            3 + u32::from(b'l'),
            3 + u32::from(b'l'),
            3 + u32::from(b'o')
        ]
    );
    assert_eq!(min.decode(&ids), " héllo");
}

#[test]
fn errors_name_the_numbers() {
    match train_bpe("hello", 100) {
        Err(Error::Invalid(m)) => assert!(m.contains("vocab_size 100 is below 259"), "{m}"),
        other => panic!("{other:?}"),
    }
    match train_bpe("ab ab", 400) {
        Err(Error::Invalid(m)) => assert!(m.contains("fewer than vocab_size 400"), "{m}"),
        other => panic!("{other:?}"),
    }
}
