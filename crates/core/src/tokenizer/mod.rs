//! Tokenizers: the [`Tokenizer`] trait and the llama2.c `tokenizer.bin` format.
//!
//! - [`Llama2cTokenizer`] (module [`llama2c`]): reads and writes llama2.c's `tokenizer.bin`
//!   (SentencePiece-style byte-fallback BPE, `<unk>`=0, `<s>`=1, `</s>`=2, bytes at 3..=258).
//! - [`bpe`]: the merge algorithm. Its output is exactly that of llama2.c `run.c`'s `encode()`,
//!   in O(n log n) instead of O(n²), so whole corpora can be encoded.
//! - [`train`]: [`train_bpe`], a deterministic byte-fallback BPE trainer whose output is a
//!   [`Llama2cTokenizer`] that `encode` reproduces.

pub mod bpe;
pub mod llama2c;
pub mod train;

pub use llama2c::Llama2cTokenizer;
pub use train::train_bpe;

/// Id of the beginning-of-sequence token `<s>` in the llama2.c / SentencePiece convention.
pub const BOS_ID: u32 = 1;
/// Id of the end-of-sequence token `</s>` in the llama2.c / SentencePiece convention.
pub const EOS_ID: u32 = 2;
/// Id of the unknown token `<unk>` in the llama2.c / SentencePiece convention.
pub const UNK_ID: u32 = 0;
/// Id of the byte piece `<0x00>`; byte `b` falls back to id `BYTE_OFFSET + b`.
pub const BYTE_OFFSET: u32 = 3;

/// A text ⇄ token-id mapping. Implementations are immutable after construction and may be
/// shared between threads.
///
/// Decoding follows llama2.c: [`decode_piece`](Tokenizer::decode_piece) strips the leading space
/// of a piece that follows BOS and turns `<0xNN>` byte pieces into the raw byte.
pub trait Tokenizer: Send + Sync {
    /// Number of token ids (`0..vocab_size`).
    fn vocab_size(&self) -> usize;

    /// Id of the beginning-of-sequence token.
    fn bos_id(&self) -> u32;

    /// Id of the end-of-sequence token.
    fn eos_id(&self) -> u32;

    /// Encodes `text`, optionally prepending BOS and appending EOS. Never fails: characters
    /// missing from the vocabulary fall back to their UTF-8 bytes.
    fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32>;

    /// The bytes that `token` stands for when it follows `prev` (llama2.c `decode`): the leading
    /// space is stripped when `prev` is BOS, and a `<0xNN>` piece becomes the single byte `NN`.
    /// An out-of-range `token` yields no bytes.
    fn decode_piece(&self, prev: u32, token: u32) -> Vec<u8>;

    /// The piece string of `id` as stored in the vocabulary (`""` for an out-of-range id).
    fn piece(&self, id: u32) -> &str;

    /// Decodes `tokens` to text: the concatenated [`decode_piece`](Tokenizer::decode_piece)
    /// bytes (each token with its predecessor in `tokens` as `prev`; the first token has no
    /// predecessor, so its leading space stays), read as lossy UTF-8. BOS and EOS produce no
    /// text, so `decode(&encode(text, true, _)) == text` for a vocabulary with a dummy prefix.
    fn decode(&self, tokens: &[u32]) -> String {
        let (bos, eos) = (self.bos_id(), self.eos_id());
        let mut bytes = Vec::with_capacity(tokens.len() * 4);
        let mut prev = u32::MAX;
        for &token in tokens {
            if token != bos && token != eos {
                bytes.extend_from_slice(&self.decode_piece(prev, token));
            }
            prev = token;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
