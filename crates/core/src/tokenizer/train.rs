//! A deterministic byte-fallback BPE trainer producing a llama2.c tokenizer.
//!
//! The vocabulary follows the llama2.c / SentencePiece convention: id 0 `<unk>`, 1 `<s>`
//! (stored as `"\n<s>\n"` like llama2.c's exporter), 2 `</s>` (`"\n</s>\n"`), ids 3..=258 the
//! byte pieces `<0x00>`…`<0xFF>`, then the single characters seen at least twice (most frequent
//! first, at most half of the remaining slots; the space is always kept because `encode`
//! prepends it as the dummy prefix), then merged pieces in merge order with score
//! `-(merge rank)`, so [`Llama2cTokenizer`]'s `encode` (highest score first) replays the
//! training merges. Characters get scores below every merge, as in SentencePiece.
//!
//! Words are split SentencePiece-style on the text as `encode` sees it (`" " + text`): a space
//! starts a new word and belongs to it, and a newline is a word of its own, so no piece crosses
//! a word boundary or holds a space other than a leading one. Byte-fallback tokens are never
//! merged, pieces are at most [`MAX_PIECE_BYTES`] bytes, and a merge whose string is already a
//! piece is skipped.
//!
//! Deterministic: the most frequent pair wins, ties go to the lexicographically smallest
//! (left piece, right piece); hash maps are only used for lookups and sums, never iterated in a
//! way that reaches the result.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;

use super::bpe::FxHashMap;
use super::llama2c::MIN_VOCAB_SIZE;
use super::{BYTE_OFFSET, Llama2cTokenizer};
use crate::{Error, Result};

/// Longest merged piece, in bytes (SentencePiece's default `max_sentencepiece_length`).
pub const MAX_PIECE_BYTES: usize = 16;

/// A candidate merge in the max-heap: highest count first, then smallest (left, right) strings.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    count: u64,
    left_str: Rc<str>,
    right_str: Rc<str>,
    left: u32,
    right: u32,
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.count
            .cmp(&other.count)
            .then_with(|| other.left_str.cmp(&self.left_str))
            .then_with(|| other.right_str.cmp(&self.right_str))
    }
}

/// Splits `" " + text` into words: a space starts a word, a newline is a word by itself.
/// Returns (word, count) sorted by word.
fn count_words(text: &str) -> Vec<(String, u64)> {
    if text.is_empty() {
        return Vec::new();
    }
    // The first word is the dummy prefix " " + the text's first word.
    let first_end = text.find([' ', '\n']).unwrap_or(text.len());
    let rest = &text[first_end..];
    let mut counts: FxHashMap<&str, u64> = FxHashMap::default();
    let mut start = 0;
    for (i, c) in rest.char_indices() {
        if c == ' ' || c == '\n' {
            if i > start {
                *counts.entry(&rest[start..i]).or_insert(0) += 1;
            }
            start = i;
            if c == '\n' {
                *counts.entry("\n").or_insert(0) += 1;
                start = i + 1;
            }
        }
    }
    if rest.len() > start {
        *counts.entry(&rest[start..]).or_insert(0) += 1;
    }
    let mut words: Vec<(String, u64)> = counts
        .into_iter()
        .map(|(w, n)| (w.to_string(), n))
        .collect();
    words.push((format!(" {}", &text[..first_end]), 1));
    words.sort();
    // `dedup_by` passes (later, earlier): fold the later count into the kept earlier one.
    words.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            earlier.1 += later.1;
        }
        same
    });
    words
}

/// Trains a byte-fallback BPE with `vocab_size` pieces on `text` (see the module docs).
///
/// Errors when `vocab_size` is below 259 (the special and byte pieces) or when the text is too
/// small to yield `vocab_size` pieces (the message gives how many it can yield).
pub fn train_bpe(text: &str, vocab_size: usize) -> Result<Llama2cTokenizer> {
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(Error::invalid(format!(
            "train_bpe: vocab_size {vocab_size} is below {MIN_VOCAB_SIZE} (<unk>, <s>, </s> and 256 bytes)"
        )));
    }
    let words = count_words(text);
    let budget = vocab_size - MIN_VOCAB_SIZE;

    // Characters: frequency over all words, kept when seen twice, most frequent first.
    let mut char_counts: FxHashMap<char, u64> = FxHashMap::default();
    for (w, n) in &words {
        for c in w.chars() {
            *char_counts.entry(c).or_insert(0) += n;
        }
    }
    let mut chars: Vec<(char, u64)> = char_counts.into_iter().collect();
    chars.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let max_chars = budget / 2;
    let kept: Vec<char> = chars
        .iter()
        .filter(|(c, n)| *c == ' ' || *n >= 2)
        .enumerate()
        .filter(|(i, (c, _))| *i < max_chars || *c == ' ')
        .map(|(_, (c, _))| *c)
        .take(budget)
        .collect();

    let mut pieces: Vec<String> = vec!["<unk>".into(), "\n<s>\n".into(), "\n</s>\n".into()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let mut ids: FxHashMap<String, u32> = FxHashMap::default();
    for (i, p) in pieces.iter().enumerate() {
        ids.insert(p.clone(), i as u32);
    }
    for c in &kept {
        ids.insert(c.to_string(), pieces.len() as u32);
        pieces.push(c.to_string());
    }
    let n_chars = kept.len();
    let mut strs: Vec<Rc<str>> = pieces.iter().map(|p| Rc::from(p.as_str())).collect();

    // Words as symbol sequences: character ids, or byte-fallback ids for other characters.
    let mut symbols: Vec<Vec<u32>> = words
        .iter()
        .map(|(w, _)| {
            let mut s = Vec::with_capacity(w.len());
            let mut buf = [0u8; 4];
            for c in w.chars() {
                let enc = c.encode_utf8(&mut buf);
                match ids.get(&*enc) {
                    Some(&id) => s.push(id),
                    None => s.extend(enc.bytes().map(|b| BYTE_OFFSET + u32::from(b))),
                }
            }
            s
        })
        .collect();
    let word_counts: Vec<u64> = words.iter().map(|(_, n)| *n).collect();

    let mergeable = |id: u32| id >= MIN_VOCAB_SIZE as u32;
    // Pairs that may never merge (too long, or their string is already a piece).
    let mut banned: FxHashMap<(u32, u32), ()> = FxHashMap::default();
    let mut pair_counts: FxHashMap<(u32, u32), u64> = FxHashMap::default();
    let mut where_: FxHashMap<(u32, u32), Vec<u32>> = FxHashMap::default();
    for (wi, s) in symbols.iter().enumerate() {
        for p in s.windows(2) {
            if mergeable(p[0]) && mergeable(p[1]) {
                *pair_counts.entry((p[0], p[1])).or_insert(0) += word_counts[wi];
                where_.entry((p[0], p[1])).or_default().push(wi as u32);
            }
        }
    }
    let entry = |strs: &[Rc<str>], (l, r): (u32, u32), count: u64| Entry {
        count,
        left_str: strs[l as usize].clone(),
        right_str: strs[r as usize].clone(),
        left: l,
        right: r,
    };
    let mut heap: BinaryHeap<Entry> = pair_counts
        .iter()
        .map(|(&pair, &n)| entry(&strs, pair, n))
        .collect();

    let mut merge_ids: Vec<u32> = Vec::new();
    while pieces.len() < vocab_size {
        let Some(e) = heap.pop() else { break };
        let pair = (e.left, e.right);
        if pair_counts.get(&pair).copied() != Some(e.count) || e.count == 0 {
            continue; // stale
        }
        let merged = format!("{}{}", strs[e.left as usize], strs[e.right as usize]);
        if merged.len() > MAX_PIECE_BYTES || ids.contains_key(&merged) {
            pair_counts.remove(&pair);
            banned.insert(pair, ());
            continue;
        }
        let new_id = pieces.len() as u32;
        ids.insert(merged.clone(), new_id);
        strs.push(Rc::from(merged.as_str()));
        pieces.push(merged);
        merge_ids.push(new_id);

        let mut affected = where_.remove(&pair).unwrap_or_default();
        affected.sort_unstable();
        affected.dedup();
        let mut changed: Vec<(u32, u32)> = Vec::new();
        for wi in affected {
            let (s, n) = (&mut symbols[wi as usize], word_counts[wi as usize]);
            if !s.windows(2).any(|p| (p[0], p[1]) == pair) {
                continue;
            }
            for p in s.windows(2) {
                if let Some(c) = pair_counts.get_mut(&(p[0], p[1])) {
                    *c = c.saturating_sub(n);
                    changed.push((p[0], p[1]));
                }
            }
            let mut out = Vec::with_capacity(s.len());
            let mut i = 0;
            while i < s.len() {
                if i + 1 < s.len() && (s[i], s[i + 1]) == pair {
                    out.push(new_id);
                    i += 2;
                } else {
                    out.push(s[i]);
                    i += 1;
                }
            }
            *s = out;
            for p in s.windows(2) {
                let key = (p[0], p[1]);
                if mergeable(p[0]) && mergeable(p[1]) && !banned.contains_key(&key) {
                    *pair_counts.entry(key).or_insert(0) += n;
                    changed.push(key);
                    if p.contains(&new_id) {
                        where_.entry(key).or_default().push(wi);
                    }
                }
            }
        }
        pair_counts.remove(&pair);
        changed.sort_unstable();
        changed.dedup();
        for key in changed {
            match pair_counts.get(&key).copied() {
                Some(0) => {
                    pair_counts.remove(&key);
                }
                Some(n) if key != pair => heap.push(entry(&strs, key, n)),
                _ => {}
            }
        }
    }
    if pieces.len() < vocab_size {
        return Err(Error::invalid(format!(
            "train_bpe: the text yields only {} pieces ({} characters, {} merges), fewer than vocab_size {vocab_size}",
            pieces.len(),
            n_chars,
            merge_ids.len()
        )));
    }

    let n_merges = merge_ids.len();
    let mut scores = vec![0.0f32; MIN_VOCAB_SIZE];
    scores.extend((0..n_chars).map(|i| -((n_merges + i) as f32)));
    scores.extend((0..n_merges).map(|rank| -(rank as f32)));
    Llama2cTokenizer::from_pieces(pieces, scores)
}
