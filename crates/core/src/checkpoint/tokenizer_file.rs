//! The tokenizer file beside a checkpoint, named by its content: `tokenizer-<sha8>.bin`. Two
//! checkpoints with different tokenizers in one directory each keep their own file; a write
//! never replaces a file of the same name with different bytes. Checkpoints written before
//! content naming reference `tokenizer.bin` in their `squish.tokenizer` metadata and still read.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

use super::{Checkpoint, TokenizerRef};
use crate::tokenizer::Llama2cTokenizer;
use crate::{Error, Result, fsutil};

/// The name older checkpoints gave their tokenizer (still read through their metadata).
pub const LEGACY_TOKENIZER_FILE: &str = "tokenizer.bin";

/// `tokenizer-<first 8 hex digits of sha256>.bin` for a tokenizer with these bytes.
pub fn tokenizer_file_name(sha256_hex: &str) -> String {
    format!("tokenizer-{}.bin", &sha256_hex[..8.min(sha256_hex.len())])
}

fn dir_of(ckpt_path: &Path) -> &Path {
    ckpt_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes tokenizer `bytes` of `kind` beside the checkpoint `ckpt_path` under their content
/// name (atomically) and returns the reference to store in the checkpoint. A file of that name
/// with the same bytes is kept as it is; one with other bytes is an error, never overwritten.
pub fn write_tokenizer(bytes: &[u8], kind: &str, ckpt_path: &Path) -> Result<TokenizerRef> {
    let sha256 = fsutil::sha256_hex(bytes);
    let file = tokenizer_file_name(&sha256);
    let dest = dir_of(ckpt_path).join(&file);
    match std::fs::read(&dest) {
        Ok(existing) if existing == bytes => {}
        Ok(_) => {
            return Err(Error::invalid(format!(
                "{} exists with other contents than the tokenizer (sha256 {sha256}) to write there; not overwriting it",
                dest.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fsutil::atomic_write(&dest, bytes)?,
        Err(e) => return Err(Error::io("reading", &dest, e)),
    }
    Ok(TokenizerRef {
        file,
        kind: kind.into(),
        sha256,
    })
}

/// The tokenizer file `tref` names, beside the checkpoint `ckpt_path`. The name must be a plain
/// file name (no directory part), so a checkpoint cannot point outside its directory.
pub fn tokenizer_path(ckpt_path: &Path, tref: &TokenizerRef) -> Result<PathBuf> {
    let name = Path::new(&tref.file);
    let plain = name.file_name().is_some_and(|n| n == name.as_os_str()) && tref.file != "..";
    if !plain {
        return Err(Error::format(
            ckpt_path,
            format!(
                "squish.tokenizer names `{}`, not a file name beside the checkpoint",
                tref.file
            ),
        ));
    }
    Ok(dir_of(ckpt_path).join(name))
}

/// Reads the tokenizer `tref` names beside `ckpt_path` and checks its sha256.
pub fn read_tokenizer(ckpt_path: &Path, tref: &TokenizerRef) -> Result<(PathBuf, Vec<u8>)> {
    let path = tokenizer_path(ckpt_path, tref)?;
    let bytes = fsutil::read(&path)?;
    let sha = fsutil::sha256_hex(&bytes);
    if sha != tref.sha256 {
        return Err(Error::format(
            &path,
            format!(
                "tokenizer has sha256 {sha}, the checkpoint {} expects {}",
                ckpt_path.display(),
                tref.sha256
            ),
        ));
    }
    Ok((path, bytes))
}

/// The tokenizer of the checkpoint `ckpt` loaded from `ckpt_path`: the file its
/// `squish.tokenizer` names (sha256 checked), read with the model's vocabulary size.
pub fn load_tokenizer(ckpt_path: &Path, ckpt: &Checkpoint) -> Result<Llama2cTokenizer> {
    let tref = ckpt.tokenizer.as_ref().ok_or_else(|| {
        Error::format(
            ckpt_path,
            "the checkpoint names no tokenizer (metadata squish.tokenizer)",
        )
    })?;
    let (path, bytes) = read_tokenizer(ckpt_path, tref)?;
    Llama2cTokenizer::from_bytes(&bytes, ckpt.config.vocab_size()).map_err(|e| match e {
        Error::Format { message, .. } => Error::format(&path, message),
        other => other,
    })
}

/// The tokenizer file the checkpoint at `ckpt_path` names (from its header only), if any.
pub fn tokenizer_file_of(ckpt_path: &Path) -> Result<Option<PathBuf>> {
    let bytes = fsutil::read(ckpt_path)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(ckpt_path, format!("invalid safetensors header: {e}")))?;
    let Some(v) = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("squish.tokenizer"))
    else {
        return Ok(None);
    };
    let tref: TokenizerRef = serde_json::from_str(v)
        .map_err(|e| Error::format(ckpt_path, format!("squish.tokenizer: {e}")))?;
    tokenizer_path(ckpt_path, &tref).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("squish-tokfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn content_named_and_never_clobbered() {
        let dir = tmp("clobber");
        let a = write_tokenizer(b"tokenizer A", "llama2c", &dir.join("a.safetensors")).unwrap();
        let b = write_tokenizer(b"tokenizer B", "llama2c", &dir.join("b.safetensors")).unwrap();
        assert_ne!(a.file, b.file);
        assert!(a.file.starts_with("tokenizer-") && a.file.len() == "tokenizer-12345678.bin".len());
        // The same bytes again: kept, same reference.
        let a2 = write_tokenizer(b"tokenizer A", "llama2c", &dir.join("c.safetensors")).unwrap();
        assert_eq!(a, a2);
        let (_, bytes) = read_tokenizer(&dir.join("a.safetensors"), &a).unwrap();
        assert_eq!(bytes, b"tokenizer A");
        // A file of A's name with other bytes is refused, and left alone.
        std::fs::write(dir.join(&a.file), b"changed").unwrap();
        let err = write_tokenizer(b"tokenizer A", "llama2c", &dir.join("d.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&a.file) && err.contains("not overwriting"),
            "{err}"
        );
        assert_eq!(std::fs::read(dir.join(&a.file)).unwrap(), b"changed");
        let err = read_tokenizer(&dir.join("a.safetensors"), &a)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_outside_the_directory_are_refused() {
        let r = |file: &str| TokenizerRef {
            file: file.into(),
            kind: "llama2c".into(),
            sha256: String::new(),
        };
        let ck = Path::new("out/model.safetensors");
        assert_eq!(
            tokenizer_path(ck, &r(LEGACY_TOKENIZER_FILE)).unwrap(),
            Path::new("out/tokenizer.bin")
        );
        for bad in ["../x.bin", "/etc/passwd", "a/b.bin", "..", ""] {
            assert!(tokenizer_path(ck, &r(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            tokenizer_path(Path::new("m.safetensors"), &r("t.bin")).unwrap(),
            Path::new("./t.bin")
        );
    }
}
