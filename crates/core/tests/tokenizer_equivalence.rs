//! The O(n log n) heap encoder equals a straightforward port of llama2.c `run.c` `encode()`
//! (the O(n²) rescan loop) on random vocabularies with ties, random texts, and real snippets.

use squish_core::shared::shared_file;
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer};

/// llama2.c `encode()`, ported line by line: a byte loop that groups UTF-8 continuation bytes
/// (at most 4), lookup or byte fallback, then the rescan-everything merge loop with a strict `>`
/// starting from `-1e10`.
fn llama2c_encode(tok: &Llama2cTokenizer, text: &str, bos: bool, eos: bool) -> Vec<u32> {
    let mut tokens = Vec::new();
    if bos {
        tokens.push(1);
    }
    if !text.is_empty() {
        tokens.push(tok.token_id(" ").unwrap_or(3 + 0x20));
    }
    let bytes = text.as_bytes();
    let mut buf: Vec<u8> = Vec::new();
    for (i, &c) in bytes.iter().enumerate() {
        if c & 0xC0 != 0x80 {
            buf.clear();
        }
        buf.push(c);
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        if next & 0xC0 == 0x80 && buf.len() < 4 {
            continue;
        }
        match std::str::from_utf8(&buf).ok().and_then(|s| tok.token_id(s)) {
            Some(id) => tokens.push(id),
            None => tokens.extend(buf.iter().map(|&b| u32::from(b) + 3)),
        }
        buf.clear();
    }
    loop {
        let mut best_score = -1e10f32;
        let mut best: Option<(usize, u32)> = None;
        for i in 0..tokens.len().saturating_sub(1) {
            let merged = format!("{}{}", tok.piece(tokens[i]), tok.piece(tokens[i + 1]));
            if let Some(id) = tok.token_id(&merged) {
                let score = tok.score(id).unwrap();
                if score > best_score {
                    best_score = score;
                    best = Some((i, id));
                }
            }
        }
        let Some((i, id)) = best else { break };
        tokens[i] = id;
        tokens.remove(i + 1);
    }
    if eos {
        tokens.push(2);
    }
    tokens
}

/// xorshift64*: deterministic test randomness without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn base_pieces() -> Vec<String> {
    let mut p = vec![
        "<unk>".to_string(),
        "\n<s>\n".to_string(),
        "\n</s>\n".to_string(),
    ];
    p.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    p
}

/// A random byte-fallback vocabulary over `alphabet` whose merged pieces are concatenations of
/// earlier pieces, with scores drawn from a tiny set so that ties, `-0.0` vs `0.0`, and scores at
/// or below llama2.c's `-1e10` cut-off all occur.
fn random_vocab(rng: &mut Rng, alphabet: &[char]) -> Llama2cTokenizer {
    const SCORES: [f32; 8] = [0.0, -0.0, -1.0, -1.0, -2.5, -3.0, -1e10, -2e10];
    let mut pieces = base_pieces();
    let mut scores = vec![0.0f32; pieces.len()];
    let mut units: Vec<String> = Vec::new();
    for &c in alphabet {
        // Leave some characters out so byte fallback happens (never the space: dummy prefix).
        if c == ' ' || rng.below(5) != 0 {
            units.push(c.to_string());
        }
    }
    for u in &units {
        pieces.push(u.clone());
        scores.push(SCORES[rng.below(SCORES.len())]);
    }
    let mut known: Vec<String> = units.clone();
    for _ in 0..(20 + rng.below(60)) {
        let a = known[rng.below(known.len())].clone();
        let b = known[rng.below(known.len())].clone();
        let m = format!("{a}{b}");
        if m.len() > 12 || pieces.contains(&m) {
            continue;
        }
        pieces.push(m.clone());
        scores.push(SCORES[rng.below(SCORES.len())]);
        known.push(m);
    }
    Llama2cTokenizer::from_pieces(pieces, scores).expect("random vocab is valid")
}

#[test]
fn heap_equals_llama2c_loop_on_random_vocabs_and_texts() {
    let alphabet = [
        'a', 'b', 'c', ' ', '\n', 'é', '☃', '<', '0', 'x', '>', '\0', '𝄞',
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0;
    for _ in 0..300 {
        let tok = random_vocab(&mut rng, &alphabet);
        for _ in 0..20 {
            let len = rng.below(80);
            let text: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let (bos, eos) = (rng.below(2) == 0, rng.below(2) == 0);
            let fast = tok.encode(&text, bos, eos);
            let slow = llama2c_encode(&tok, &text, bos, eos);
            assert_eq!(
                fast,
                slow,
                "text {text:?} bos {bos} eos {eos}\npieces {:?}",
                tok.pieces()
            );
            checked += 1;
        }
    }
    eprintln!("{checked} random (vocab, text) pairs agree");
}

/// Long runs of one character stress tie-breaking (every pair has the same score).
#[test]
fn heap_equals_llama2c_loop_on_repetitive_text() {
    let mut pieces = base_pieces();
    let extra = [
        "a", " ", "aa", "aaa", "aaaa", " a", " aa", "b", "ab", "ba", "bab",
    ];
    let mut scores = vec![0.0f32; pieces.len()];
    for (i, p) in extra.iter().enumerate() {
        pieces.push(p.to_string());
        scores.push(if i % 3 == 0 { -1.0 } else { -2.0 });
    }
    let tok = Llama2cTokenizer::from_pieces(pieces, scores).unwrap();
    for text in [
        "a",
        "aa",
        "aaaaaaa",
        &"a".repeat(101),
        &"ab".repeat(57),
        &"aab ".repeat(33),
    ] {
        assert_eq!(
            tok.encode(text, true, false),
            llama2c_encode(&tok, text, true, false),
            "{text:?}"
        );
    }
}

/// Random snippets of the real corpora with the real tok512 vocabulary.
#[test]
fn heap_equals_llama2c_loop_on_real_snippets() {
    let Some(tok_path) = shared_file("models/stories260K/tok512.bin") else {
        eprintln!("NOTICE: skipping: tok512.bin not found");
        return;
    };
    let tok = Llama2cTokenizer::from_file(tok_path, 512).unwrap();
    let mut rng = Rng(42);
    let mut checked = 0;
    for rel in ["tinystories/valid.txt", "tinystories/train.txt"] {
        let Some(p) = shared_file(rel) else { continue };
        let text = std::fs::read_to_string(p).unwrap();
        for i in 0..150 {
            let len = if i % 25 == 0 {
                3000
            } else {
                1 + rng.below(400)
            };
            let mut start = rng.below(text.len().saturating_sub(len).max(1));
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let s = &text[start..end];
            assert_eq!(
                tok.encode(s, true, false),
                llama2c_encode(&tok, s, true, false),
                "{s:?}"
            );
            checked += 1;
        }
    }
    eprintln!("{checked} real snippets agree");
}
