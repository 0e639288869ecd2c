//! llama2.c `tokenizer.bin`: reader, writer, and the [`Tokenizer`] implementation.
//!
//! Format (all little-endian): `i32 max_token_length`, then for each of the `vocab_size` tokens
//! `f32 score`, `i32 len`, `len` bytes of the piece. The file does not store `vocab_size`; it
//! comes from the model config. Pieces use a plain space where SentencePiece has `▁`; BOS and
//! EOS are stored as `"\n<s>\n"` and `"\n</s>\n"` by llama2.c's exporter.
//!
//! The reader is strict: a truncated file, a negative length, a length beyond the remaining
//! bytes or beyond `max_token_length`, a non-finite score, a piece that is not UTF-8, trailing
//! bytes, or byte-fallback ids 3..=258 that are not `<0x00>`…`<0xFF>` are each an
//! [`Error::Format`] naming the token and the numbers.

use std::path::Path;

use super::bpe::{self, FxHashMap, MergeVocab};
use super::{BOS_ID, BYTE_OFFSET, EOS_ID, Tokenizer};
use crate::{Error, Result};

/// Smallest vocabulary the llama2.c convention allows: `<unk>`, `<s>`, `</s>` and 256 bytes.
pub const MIN_VOCAB_SIZE: usize = BYTE_OFFSET as usize + 256;

/// A llama2.c byte-fallback BPE tokenizer (`tokenizer.bin`), encoding exactly like `run.c`.
#[derive(Debug, Clone)]
pub struct Llama2cTokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    max_token_length: u32,
    /// Piece bytes → id (the lowest id when a piece occurs twice).
    lookup: FxHashMap<Box<[u8]>, u32>,
    /// (left, right) → merged id, for every pair whose concatenation is a piece.
    pairs: FxHashMap<(u32, u32), u32>,
    /// For each id: the raw byte when the piece is `<0xNN>`.
    byte_value: Vec<Option<u8>>,
}

/// `Some(NN)` when `piece` is exactly `<0xNN>` with two hex digits.
fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Little-endian reader over a byte slice that reports truncation with offsets.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::format(
                self.path,
                format!(
                    "truncated tokenizer.bin: {} needs {n} bytes at offset {}, but only {} of {} bytes remain",
                    what(),
                    self.pos,
                    self.remaining(),
                    self.bytes.len()
                ),
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn i32(&mut self, what: &dyn Fn() -> String) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self, what: &dyn Fn() -> String) -> Result<f32> {
        let b = self.take(4, what)?;
        Ok(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl Llama2cTokenizer {
    /// Reads a llama2.c `tokenizer.bin` holding `vocab_size` tokens (from the model config).
    pub fn from_file(path: impl AsRef<Path>, vocab_size: usize) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        Self::parse(&bytes, vocab_size, path)
    }

    /// Parses the bytes of a llama2.c `tokenizer.bin` holding `vocab_size` tokens. Errors name
    /// the file as `<bytes>`.
    pub fn from_bytes(bytes: &[u8], vocab_size: usize) -> Result<Self> {
        Self::parse(bytes, vocab_size, Path::new("<bytes>"))
    }

    fn parse(bytes: &[u8], vocab_size: usize, path: &Path) -> Result<Self> {
        if vocab_size < MIN_VOCAB_SIZE {
            return Err(Error::format(
                path,
                format!(
                    "vocab_size {vocab_size} is below {MIN_VOCAB_SIZE}: byte fallback needs <unk>, <s>, </s> and 256 byte pieces"
                ),
            ));
        }
        let mut r = Reader {
            bytes,
            pos: 0,
            path,
        };
        let max_len = r.i32(&|| "the max_token_length header".to_string())?;
        let max_token_length = u32::try_from(max_len).map_err(|_| {
            Error::format(
                path,
                format!("negative max_token_length {max_len} in the header"),
            )
        })?;
        // Every token takes at least 8 bytes: never reserve more than the file can hold.
        let capacity = vocab_size.min(r.remaining() / 8);
        let mut pieces = Vec::with_capacity(capacity);
        let mut scores = Vec::with_capacity(capacity);
        for i in 0..vocab_size {
            let score = r.f32(&|| format!("the score of token {i} of {vocab_size}"))?;
            let len = r.i32(&|| format!("the length of token {i} of {vocab_size}"))?;
            let len = usize::try_from(len).map_err(|_| {
                Error::format(
                    path,
                    format!("token {i} of {vocab_size}: negative length {len}"),
                )
            })?;
            if len > max_token_length as usize {
                return Err(Error::format(
                    path,
                    format!(
                        "token {i} of {vocab_size}: length {len} exceeds max_token_length {max_token_length}"
                    ),
                ));
            }
            let piece = r.take(len, &|| {
                format!("the {len}-byte piece of token {i} of {vocab_size}")
            })?;
            let piece = String::from_utf8(piece.to_vec()).map_err(|e| {
                Error::format(
                    path,
                    format!("token {i} of {vocab_size}: piece {piece:?} is not UTF-8 ({e})"),
                )
            })?;
            pieces.push(piece);
            scores.push(score);
        }
        if r.remaining() != 0 {
            return Err(Error::format(
                path,
                format!(
                    "{} trailing bytes after {vocab_size} tokens (file has {} bytes); does vocab_size match the model config?",
                    r.remaining(),
                    bytes.len()
                ),
            ));
        }
        Self::build(pieces, scores, max_token_length, path)
    }

    /// Builds a tokenizer from pieces and scores (ids are positions); `max_token_length` is the
    /// longest piece in bytes. Validated like a file: see the module docs.
    pub fn from_pieces(pieces: Vec<String>, scores: Vec<f32>) -> Result<Self> {
        let max_len = pieces.iter().map(String::len).max().unwrap_or(0);
        let max_token_length = u32::try_from(max_len).map_err(|_| {
            Error::invalid(format!(
                "longest piece has {max_len} bytes, beyond the i32 format"
            ))
        })?;
        if max_token_length > i32::MAX as u32 {
            return Err(Error::invalid(format!(
                "longest piece has {max_len} bytes, beyond the i32 format"
            )));
        }
        Self::build(pieces, scores, max_token_length, Path::new("<pieces>"))
    }

    fn build(
        pieces: Vec<String>,
        scores: Vec<f32>,
        max_token_length: u32,
        path: &Path,
    ) -> Result<Self> {
        if pieces.len() != scores.len() {
            return Err(Error::format(
                path,
                format!("{} pieces but {} scores", pieces.len(), scores.len()),
            ));
        }
        if pieces.len() < MIN_VOCAB_SIZE {
            return Err(Error::format(
                path,
                format!(
                    "{} pieces, below {MIN_VOCAB_SIZE}: byte fallback needs <unk>, <s>, </s> and 256 byte pieces",
                    pieces.len()
                ),
            ));
        }
        if u32::try_from(pieces.len()).is_err() {
            return Err(Error::format(
                path,
                format!("{} pieces exceed u32 ids", pieces.len()),
            ));
        }
        for (i, (piece, &score)) in pieces.iter().zip(&scores).enumerate() {
            if !score.is_finite() {
                return Err(Error::format(
                    path,
                    format!("token {i} ({piece:?}): non-finite score {score}"),
                ));
            }
            if piece.len() > max_token_length as usize {
                return Err(Error::format(
                    path,
                    format!(
                        "token {i}: length {} exceeds max_token_length {max_token_length}",
                        piece.len()
                    ),
                ));
            }
        }
        for b in 0..=255u8 {
            let id = (BYTE_OFFSET + u32::from(b)) as usize;
            if parse_byte_piece(&pieces[id]) != Some(b) {
                return Err(Error::format(
                    path,
                    format!(
                        "token {id} is {:?}, but byte fallback needs <0x{b:02X}> there (ids 3..=258 are the bytes)",
                        pieces[id]
                    ),
                ));
            }
        }
        let mut lookup = FxHashMap::default();
        for (i, piece) in pieces.iter().enumerate() {
            lookup.entry(piece.as_bytes().into()).or_insert(i as u32);
        }
        let byte_value = pieces.iter().map(|p| parse_byte_piece(p)).collect();
        let pairs = bpe::pair_table(&pieces);
        Ok(Self {
            pieces,
            scores,
            max_token_length,
            lookup,
            pairs,
            byte_value,
        })
    }

    /// The llama2.c `tokenizer.bin` bytes of this tokenizer (`from_bytes(&t.to_bytes(), n)`
    /// gives it back, and re-serializing a parsed file reproduces the file).
    pub fn to_bytes(&self) -> Vec<u8> {
        let total: usize = 4 + self.pieces.iter().map(|p| 8 + p.len()).sum::<usize>();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&self.max_token_length.to_le_bytes());
        for (piece, score) in self.pieces.iter().zip(&self.scores) {
            out.extend_from_slice(&score.to_le_bytes());
            // Lengths are bounded by max_token_length, which fits an i32 (checked on build).
            out.extend_from_slice(&(piece.len() as u32).to_le_bytes());
            out.extend_from_slice(piece.as_bytes());
        }
        out
    }

    /// Writes [`to_bytes`](Self::to_bytes) to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|e| Error::io("writing", path, e))
    }

    /// The `max_token_length` header: no piece is longer, in bytes.
    pub fn max_token_length(&self) -> u32 {
        self.max_token_length
    }

    /// The score of piece `id` (higher merges first), or `None` for an out-of-range id.
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// The id of the piece equal to `piece` (the lowest such id), if any.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.lookup.get(piece.as_bytes()).copied()
    }

    /// All pieces, indexed by id.
    pub fn pieces(&self) -> &[String] {
        &self.pieces
    }

    /// All scores, indexed by id.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }
}

impl MergeVocab for Llama2cTokenizer {
    fn lookup(&self, bytes: &[u8]) -> Option<u32> {
        self.lookup.get(bytes).copied()
    }
    fn pair(&self, left: u32, right: u32) -> Option<u32> {
        self.pairs.get(&(left, right)).copied()
    }
    fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }
}

impl Tokenizer for Llama2cTokenizer {
    fn vocab_size(&self) -> usize {
        self.pieces.len()
    }
    fn bos_id(&self) -> u32 {
        BOS_ID
    }
    fn eos_id(&self) -> u32 {
        EOS_ID
    }
    fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        bpe::encode(self, text, bos, eos)
    }
    fn decode_piece(&self, prev: u32, token: u32) -> Vec<u8> {
        let Some(piece) = self.pieces.get(token as usize) else {
            return Vec::new();
        };
        let piece = if prev == BOS_ID {
            piece.strip_prefix(' ').unwrap_or(piece)
        } else {
            piece
        };
        match self.byte_value[token as usize] {
            // A stripped byte piece is still a byte piece: `<0x..>` never starts with a space.
            Some(b) => vec![b],
            None => piece.as_bytes().to_vec(),
        }
    }
    fn piece(&self, id: u32) -> &str {
        self.pieces.get(id as usize).map_or("", String::as_str)
    }
}
