//! Stories, not a stream: how squish turns TinyStories files into model inputs.
//!
//! TinyStories' text files separate stories with a literal `<|endoftext|>` line. That string is
//! a file-format marker, not text: squish never tokenizes it.
//! - **Training and calibration** ([`story_tokens`]): every story is tokenized on its own with
//!   BOS first (as llama2.c pretokenizes TinyStories), and the stories are concatenated. A model
//!   trained on this learns to end a story by predicting BOS, and generation stops there.
//! - **Evaluation** ([`EvalText`]): the validation stories joined by blank lines, one trailing
//!   newline — a clean text that llama.cpp's `llama-perplexity -f FILE` scores the same way
//!   squish does (it strips that trailing newline; so does [`EvalText::scored`]). The raw file,
//!   separators included, stays available as [`EvalMode::Raw`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{STORY_SEPARATOR, read_stories, read_text};
use crate::tokenizer::{Llama2cTokenizer, Tokenizer};
use crate::{Error, Result, fsutil};

/// The stories of `stories` tokenized one by one, each with BOS first and without EOS, then
/// concatenated: the training (and QAT / recovery) token stream.
pub fn story_tokens(tok: &dyn Tokenizer, stories: &[String]) -> Vec<u32> {
    stories
        .iter()
        .flat_map(|s| tok.encode(s, true, false))
        .collect()
}

/// Trains the byte-fallback BPE tokenizer on `stories` alone (joined by newlines, which are
/// words of their own, so no piece spans two stories); the separator never reaches it.
pub fn train_story_tokenizer(stories: &[String], vocab_size: usize) -> Result<Llama2cTokenizer> {
    crate::tokenizer::train_bpe(&stories.join("\n"), vocab_size)
}

/// The leading stories whose text adds up to at most `limit` bytes (all of them with no limit;
/// at least one story when there is any, so a tiny limit still yields data).
pub fn stories_within(stories: &[String], limit: Option<usize>) -> &[String] {
    let Some(limit) = limit else {
        return stories;
    };
    let mut used = 0usize;
    let n = stories
        .iter()
        .take_while(|s| {
            used += s.len();
            used <= limit
        })
        .count();
    &stories[..n.max(1).min(stories.len())]
}

/// The evaluation text of `stories`: joined by one blank line, with one trailing newline.
pub fn join_stories(stories: &[String]) -> String {
    let mut text = stories.join("\n\n");
    text.push('\n');
    text
}

/// How an evaluation file becomes the text that is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalMode {
    /// The file's stories joined by blank lines, no separator strings (the default).
    #[default]
    Stories,
    /// The file as it is, `<|endoftext|>` lines included (the pre-stories protocol).
    Raw,
}

impl EvalMode {
    /// The mode's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            EvalMode::Stories => "stories",
            EvalMode::Raw => "raw",
        }
    }
}

/// The text a perplexity is measured on, with what identifies it in reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalText {
    /// The file the text came from.
    pub source: std::path::PathBuf,
    /// How the file was turned into the text.
    pub mode: EvalMode,
    /// Stories in the text (1 for a raw file without separators).
    pub stories: usize,
    /// The text as a file would hold it (ends with one newline for [`EvalMode::Stories`]).
    #[serde(skip)]
    pub text: String,
    /// Bytes of [`EvalText::text`].
    pub bytes: usize,
    /// sha256 of [`EvalText::text`]: the file `llama-perplexity -f` must read to agree.
    pub sha256: String,
    /// When a byte limit cut the text (smoke runs), the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<usize>,
}

impl EvalText {
    /// Reads `path` (`.txt` with separators or `.json` `{"texts": […]}`) as `mode` says,
    /// keeping only the first `limit` bytes when set (cut on a character boundary).
    pub fn load(path: &Path, mode: EvalMode, limit: Option<usize>) -> Result<EvalText> {
        let (mut text, stories) = match mode {
            EvalMode::Stories => {
                let stories = read_stories(path)?;
                if stories.is_empty() {
                    return Err(Error::format(path, "no story in the evaluation file"));
                }
                (join_stories(&stories), stories.len())
            }
            EvalMode::Raw => {
                let text = read_text(path)?;
                let n = text.matches(STORY_SEPARATOR).count().max(1);
                (text, n)
            }
        };
        if let Some(limit) = limit {
            let mut cut = limit.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Ok(EvalText {
            source: path.to_path_buf(),
            mode,
            stories,
            bytes: text.len(),
            sha256: fsutil::sha256_hex(text.as_bytes()),
            text,
            limit_bytes: limit,
        })
    }

    /// The text that is tokenized and scored: llama.cpp's `-f` strips one trailing newline
    /// from the file (common/arg.cpp), and so does squish.
    pub fn scored(&self) -> &str {
        self.text.strip_suffix('\n').unwrap_or(&self.text)
    }

    /// The scored text tokenized with one BOS first (the `llama-cpp` protocol's input).
    pub fn tokens(&self, tok: &dyn Tokenizer) -> Vec<u32> {
        tok.encode(self.scored(), true, false)
    }

    /// Writes the text atomically to `path`, so llama.cpp can score the same bytes.
    pub fn write(&self, path: &Path) -> Result<()> {
        fsutil::atomic_write(path, self.text.as_bytes())
    }

    /// One line for logs and reports: source, mode, stories, bytes (and the limit that cut
    /// them), sha256.
    pub fn describe(&self) -> String {
        let limit = self
            .limit_bytes
            .map(|l| format!(", first {l} bytes"))
            .unwrap_or_default();
        format!(
            "{} ({} mode, {} stories, {} bytes{limit}, sha256 {})",
            self.source.display(),
            self.mode.name(),
            self.stories,
            self.bytes,
            self.sha256
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, body: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("squish-stories-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn evaluation_text_joins_stories_by_blank_lines() {
        let p = temp(
            "v.txt",
            "A cat sat.\nIt slept.\n<|endoftext|>\nA dog ran.\n<|endoftext|>\n",
        );
        let e = EvalText::load(&p, EvalMode::Stories, None).unwrap();
        assert_eq!(e.text, "A cat sat.\nIt slept.\n\nA dog ran.\n");
        assert_eq!(e.scored(), "A cat sat.\nIt slept.\n\nA dog ran.");
        assert_eq!(e.stories, 2);
        assert_eq!(e.sha256, fsutil::sha256_hex(e.text.as_bytes()));
        // Idempotent: the written file read again in stories mode is the same text.
        let q = temp("w.txt", "");
        e.write(&q).unwrap();
        let again = EvalText::load(&q, EvalMode::Stories, None).unwrap();
        assert_eq!(again.text, e.text);
        let raw = EvalText::load(&p, EvalMode::Raw, None).unwrap();
        assert!(raw.text.contains(STORY_SEPARATOR) && raw.stories == 2);
        let cut = EvalText::load(&p, EvalMode::Stories, Some(5)).unwrap();
        assert_eq!((cut.text.as_str(), cut.limit_bytes), ("A cat", Some(5)));
        let empty = temp("e.txt", "\n<|endoftext|>\n");
        assert!(
            EvalText::load(&empty, EvalMode::Stories, None)
                .unwrap_err()
                .to_string()
                .contains("no story")
        );
    }

    #[test]
    fn the_tokenizer_and_the_training_stream_never_see_the_separator() {
        let text = super::super::synth::corpus(300, 3);
        assert!(text.contains(STORY_SEPARATOR));
        let stories = super::super::split_stories(&text);
        let tok = train_story_tokenizer(&stories, 400).unwrap();
        for id in 0..tok.vocab_size() as u32 {
            let piece = tok.piece(id);
            assert!(
                !piece.contains("endoftext") && !piece.contains("<|"),
                "piece {id} = {piece:?}"
            );
        }
        let stream = story_tokens(&tok, &stories);
        let bos = tok.bos_id();
        assert_eq!(stream[0], bos);
        assert_eq!(stream.iter().filter(|&&t| t == bos).count(), stories.len());
        assert!(!tok.decode(&stream).contains("endoftext"));
    }

    #[test]
    fn stories_within_keeps_whole_leading_stories() {
        let s: Vec<String> = ["aaaa", "bbbb", "cccc"].map(String::from).into();
        assert_eq!(stories_within(&s, None).len(), 3);
        assert_eq!(stories_within(&s, Some(8)).len(), 2);
        assert_eq!(stories_within(&s, Some(9)).len(), 2);
        assert_eq!(stories_within(&s, Some(1)).len(), 1);
        assert!(stories_within(&[], Some(1)).is_empty());
    }
}
