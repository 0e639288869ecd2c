//! The BPE merge algorithm of llama2.c `run.c` `encode()`, in O(n log n).
//!
//! llama2.c encodes text in two steps:
//!
//! 1. Initial tokens: optional BOS, then (if the text is non-empty) the dummy-prefix token for
//!    `" "`, then one token per UTF-8 codepoint when the codepoint is a vocabulary piece, else
//!    one byte-fallback token `byte + 3` per UTF-8 byte.
//! 2. Merging: repeatedly find the adjacent pair whose concatenated piece is in the vocabulary
//!    with the highest score (the leftmost pair on ties, because the scan uses a strict `>`
//!    starting from a best score of `-1e10`), replace it by the merged piece, until no pair
//!    merges. BOS takes part in the pair scan like any token; EOS is appended afterwards.
//!
//! llama2.c rescans the whole sequence after every merge: O(n²). [`encode`] keeps the tokens in
//! a doubly linked list (over an array indexed by original position) and the candidate pairs in
//! a binary heap ordered by (score descending, original position of the left token ascending).
//! Entries made stale by earlier merges are dropped when popped (lazy invalidation): an entry is
//! valid iff its left node is alive and it and its current successor hold the token ids the
//! entry was computed from; then the entry describes a pair that exists right now, with exactly
//! that score and left position. Since the list keeps the original order, "leftmost in the
//! current sequence" equals "smallest original position of the left token", so
//! the heap pops exactly the pair llama2.c's scan would pick, and the merge sequences are equal.
//!
//! Two deliberate, documented departures from the C code, both for inputs C cannot express:
//! a NUL character is encoded like any other character (C strings end at NUL), and when the
//! vocabulary lacks `" "` the dummy prefix falls back to the byte token of `0x20` (C would emit
//! id -1). Pieces are compared as whole byte strings (C's `strcmp` would stop at an embedded NUL).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash (rustc's hasher): much faster than SipHash on the short keys used here. Keys come
/// from the vocabulary, not from the text, so hash flooding is not a concern.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Every pair `(left, right)` of ids whose concatenated pieces form a piece, mapped to that
/// piece's id (the lowest id when a piece string occurs twice). Built by splitting each piece
/// at every byte position (including the empty split, which matters only if `""` is a piece),
/// so it costs O(total piece length) and holds exactly the pairs llama2.c's lookup would find.
pub fn pair_table(pieces: &[String]) -> FxHashMap<(u32, u32), u32> {
    let mut ids_of: FxHashMap<&[u8], Vec<u32>> = FxHashMap::default();
    for (id, p) in pieces.iter().enumerate() {
        ids_of.entry(p.as_bytes()).or_default().push(id as u32);
    }
    let mut table = FxHashMap::default();
    for (bytes, ids) in &ids_of {
        let merged = ids[0];
        for k in 0..=bytes.len() {
            let (Some(lefts), Some(rights)) = (ids_of.get(&bytes[..k]), ids_of.get(&bytes[k..]))
            else {
                continue;
            };
            for &l in lefts {
                for &r in rights {
                    table.insert((l, r), merged);
                }
            }
        }
    }
    table
}

/// llama2.c starts its best-score search at `-1e10` with a strict `>`: a merge whose score is
/// `<= MIN_MERGE_SCORE` never happens.
pub const MIN_MERGE_SCORE: f32 = -1e10;

/// What the merge loop needs from a vocabulary.
pub trait MergeVocab {
    /// The id of the piece equal to `bytes`, if any.
    fn lookup(&self, bytes: &[u8]) -> Option<u32>;
    /// The id of the piece equal to the concatenation of pieces `left` and `right`, if any.
    fn pair(&self, left: u32, right: u32) -> Option<u32>;
    /// The score of piece `id` (`id` is always a valid id).
    fn score(&self, id: u32) -> f32;
}

/// llama2.c's initial token sequence (step 1 above): BOS if asked, the dummy prefix when `text`
/// is non-empty, then codepoint pieces or byte-fallback tokens (`byte + 3`).
pub fn initial_tokens<V: MergeVocab + ?Sized>(vocab: &V, text: &str, bos: bool) -> Vec<u32> {
    let mut tokens = Vec::with_capacity(text.len() + 2);
    if bos {
        tokens.push(super::BOS_ID);
    }
    if !text.is_empty() {
        let dummy = vocab
            .lookup(b" ")
            .unwrap_or(super::BYTE_OFFSET + u32::from(b' '));
        tokens.push(dummy);
    }
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        match vocab.lookup(bytes) {
            Some(id) => tokens.push(id),
            None => tokens.extend(bytes.iter().map(|&b| super::BYTE_OFFSET + u32::from(b))),
        }
    }
    tokens
}

/// Encodes `text` exactly as llama2.c `run.c` `encode()` does (see the module docs), in
/// O(n log n). `vocab` must hold ids `BOS_ID`, `EOS_ID` and the byte-fallback ids `3..=258`.
pub fn encode<V: MergeVocab + ?Sized>(vocab: &V, text: &str, bos: bool, eos: bool) -> Vec<u32> {
    let mut tokens = initial_tokens(vocab, text, bos);
    merge(vocab, &mut tokens);
    if eos {
        tokens.push(super::EOS_ID);
    }
    tokens
}

const NONE: usize = usize::MAX;

/// Maps a finite score to a `u32` with the same order, `-0.0` and `0.0` alike (as C's `>`).
#[inline]
fn score_key(score: f32) -> u32 {
    let bits = (score + 0.0).to_bits(); // -0.0 + 0.0 == +0.0
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// A candidate merge of the node `left` with its successor. The successor's index is not
/// stored: the entry is valid whenever `left` is alive and it and its current successor hold
/// `left_token` and `right_token`, because then that pair exists now, with this very score and
/// left position, whatever happened before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    score: u32,
    left: usize,
    left_token: u32,
    right_token: u32,
    merged: u32,
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// Max-heap order: higher score first, then the smaller (leftmost) position.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// One token of the linked list; `token == DEAD` once merged into its left neighbour.
#[derive(Debug, Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    token: u32,
}

const DEAD: u32 = u32::MAX;

/// The merge step: rewrites `tokens` in place to llama2.c's final sequence (see module docs).
pub fn merge<V: MergeVocab + ?Sized>(vocab: &V, tokens: &mut Vec<u32>) {
    let n = tokens.len();
    if n < 2 {
        return;
    }
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| Node {
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == n { NONE } else { i + 1 },
            token: tokens[i],
        })
        .collect();
    let candidate = |left: usize, left_token: u32, right_token: u32| {
        let merged = vocab.pair(left_token, right_token)?;
        let score = vocab.score(merged);
        (score > MIN_MERGE_SCORE).then(|| Candidate {
            score: score_key(score),
            left,
            left_token,
            right_token,
            merged,
        })
    };
    let mut heap: BinaryHeap<Candidate> = (0..n - 1)
        .filter_map(|i| candidate(i, tokens[i], tokens[i + 1]))
        .collect();

    while let Some(c) = heap.pop() {
        let left = nodes[c.left];
        if left.token != c.left_token || left.next == NONE {
            continue;
        }
        let right = nodes[left.next];
        if right.token != c.right_token {
            continue;
        }
        nodes[left.next].token = DEAD;
        nodes[c.left].token = c.merged;
        nodes[c.left].next = right.next;
        if right.next != NONE {
            nodes[right.next].prev = c.left;
            if let Some(nc) = candidate(c.left, c.merged, nodes[right.next].token) {
                heap.push(nc);
            }
        }
        if left.prev != NONE
            && let Some(nc) = candidate(left.prev, nodes[left.prev].token, c.merged)
        {
            heap.push(nc);
        }
    }

    tokens.clear();
    let mut i = 0;
    while i != NONE {
        tokens.push(nodes[i].token);
        i = nodes[i].next;
    }
}
