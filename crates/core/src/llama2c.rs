//! Import of llama2.c legacy (v0) checkpoints: a 7 × i32 header, then float32 weights in
//! llama2.c order. A negative `vocab_size` means the classifier is stored separately.

use std::path::Path;

use crate::checkpoint::{WeightTensor, Weights};
use crate::config::LlamaConfig;
use crate::{Error, Result, fsutil};

/// Bytes of the legacy header.
pub const HEADER_BYTES: usize = 28;

/// Parses the header: `(config, float count the file must hold)`. Errors name the field.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<(LlamaConfig, usize)> {
    if bytes.len() < HEADER_BYTES {
        return Err(Error::format(
            path,
            format!(
                "file is {} bytes, shorter than the {HEADER_BYTES}-byte llama2.c header",
                bytes.len()
            ),
        ));
    }
    let h: Vec<i32> = bytes[..HEADER_BYTES]
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4")))
        .collect();
    let names = [
        "dim",
        "hidden_dim",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "vocab_size",
        "seq_len",
    ];
    for (i, (&v, name)) in h.iter().zip(names).enumerate() {
        let v = if i == 5 {
            v.unsigned_abs() as i64
        } else {
            v as i64
        };
        if !(1..=1 << 20).contains(&v) {
            return Err(Error::format(
                path,
                format!(
                    "header field {name} = {} is not a plausible size (1..=1048576); not a llama2.c v0 checkpoint?",
                    h[i]
                ),
            ));
        }
    }
    let cfg = LlamaConfig {
        dim: h[0] as usize,
        hidden_dim: h[1] as usize,
        n_layers: h[2] as usize,
        n_heads: h[3] as usize,
        n_kv_heads: h[4] as usize,
        vocab_size: h[5].unsigned_abs() as usize,
        seq_len: h[6] as usize,
        shared_classifier: h[5] > 0,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    cfg.validate()
        .map_err(|e| Error::format(path, e.to_string()))?;
    let n = expected_floats(&cfg).ok_or_else(|| {
        Error::format(
            path,
            format!(
                "header (dim {}, hidden {}, layers {}, vocab {}, seq_len {}) describes more weights than this machine can address",
                cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.vocab_size, cfg.seq_len
            ),
        )
    })?;
    Ok((cfg, n))
}

/// The number of f32 values a v0 file with this config holds after the header. Computed in
/// `u128` (a forged header's fields, each up to 2^20, multiply past `u64`); `None` when the count
/// or its byte size does not fit in `usize`.
pub fn expected_floats(c: &LlamaConfig) -> Option<usize> {
    let w = |x: usize| x as u128;
    let (d, h, l, v) = (w(c.dim), w(c.hidden_dim), w(c.n_layers), w(c.vocab_size));
    let kv_dim = d * w(c.n_kv_heads) / w(c.n_heads);
    let mut n = v * d // token embedding
        + l * d * 2 // rms_att, rms_ffn
        + l * d * d * 2 // wq, wo
        + l * kv_dim * d * 2 // wk, wv
        + l * h * d * 3 // w1, w2, w3
        + d // rms_final
        + w(c.seq_len) * w(c.head_size()); // freq_cis_real + freq_cis_imag (unused: RoPE is computed)
    if !c.shared_classifier {
        n += v * d;
    }
    // The byte size (`28 + 4 n`) must fit too.
    let bytes = n.checked_mul(4)?.checked_add(HEADER_BYTES as u128)?;
    usize::try_from(bytes).ok()?;
    usize::try_from(n).ok()
}

/// Reads a llama2.c v0 checkpoint into a config and [`Weights`] with squish's tensor names.
pub fn import(path: &Path) -> Result<(LlamaConfig, Weights)> {
    import_bytes(&fsutil::read(path)?, path)
}

/// Parses the bytes of a llama2.c v0 checkpoint (see [`import`]); errors name `path`. The file
/// size must equal what the header describes before any weight is copied, so a forged header
/// cannot make it allocate more than the file holds.
pub fn import_bytes(bytes: &[u8], path: &Path) -> Result<(LlamaConfig, Weights)> {
    let (cfg, n_floats) = parse_header(bytes, path)?;
    // Cannot overflow: `expected_floats` checked that `28 + 4 n` fits in usize.
    let want = HEADER_BYTES + 4 * n_floats;
    if bytes.len() != want {
        return Err(Error::format(
            path,
            format!(
                "file is {} bytes but its header (dim {}, hidden {}, layers {}, heads {}/{}, vocab {}{}, seq_len {}) needs {want} = 28 + 4 × {n_floats}",
                bytes.len(),
                cfg.dim,
                cfg.hidden_dim,
                cfg.n_layers,
                cfg.n_heads,
                cfg.n_kv_heads,
                cfg.vocab_size,
                if cfg.shared_classifier {
                    " shared"
                } else {
                    " separate classifier"
                },
                cfg.seq_len
            ),
        ));
    }
    let floats: Vec<f32> = bytes[HEADER_BYTES..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
        .collect();
    if let Some(i) = floats.iter().position(|x| !x.is_finite()) {
        return Err(Error::format(
            path,
            format!("non-finite weight {} at float index {i}", floats[i]),
        ));
    }
    let mut cursor = Cursor {
        data: &floats,
        pos: 0,
    };
    let (d, h, l) = (cfg.dim, cfg.hidden_dim, cfg.n_layers);
    let kv = d * cfg.n_kv_heads / cfg.n_heads;
    let mut w = Weights::new();
    w.insert(
        "tok_embeddings.weight",
        cursor.take(vec![cfg.vocab_size, d])?,
    );
    // llama2.c stores each kind for all layers contiguously: [layers, out, in].
    let per_layer =
        |cursor: &mut Cursor, w: &mut Weights, key: &str, shape: Vec<usize>| -> Result<()> {
            for i in 0..l {
                w.insert(format!("layers.{i}.{key}"), cursor.take(shape.clone())?);
            }
            Ok(())
        };
    per_layer(&mut cursor, &mut w, "attention_norm.weight", vec![d])?;
    per_layer(&mut cursor, &mut w, "attention.wq.weight", vec![d, d])?;
    per_layer(&mut cursor, &mut w, "attention.wk.weight", vec![kv, d])?;
    per_layer(&mut cursor, &mut w, "attention.wv.weight", vec![kv, d])?;
    per_layer(&mut cursor, &mut w, "attention.wo.weight", vec![d, d])?;
    per_layer(&mut cursor, &mut w, "ffn_norm.weight", vec![d])?;
    per_layer(&mut cursor, &mut w, "feed_forward.w1.weight", vec![h, d])?;
    per_layer(&mut cursor, &mut w, "feed_forward.w2.weight", vec![d, h])?;
    per_layer(&mut cursor, &mut w, "feed_forward.w3.weight", vec![h, d])?;
    w.insert("norm.weight", cursor.take(vec![d])?);
    cursor.skip(cfg.seq_len * cfg.head_size());
    if !cfg.shared_classifier {
        w.insert("output.weight", cursor.take(vec![cfg.vocab_size, d])?);
    }
    Ok((cfg, w))
}

struct Cursor<'a> {
    data: &'a [f32],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, shape: Vec<usize>) -> Result<WeightTensor> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::invalid("llama2.c tensor shape overflows"))?;
        let slice = self
            .pos
            .checked_add(n)
            .and_then(|end| self.data.get(self.pos..end))
            .ok_or_else(|| Error::invalid("llama2.c weights end early"))?;
        self.pos += n;
        WeightTensor::f32(shape, slice.to_vec())
    }
    fn skip(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: [i32; 7]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn stories260k_header_needs_exactly_its_file_size() {
        let (cfg, n) = parse_header(&header([64, 172, 5, 8, 4, 512, 512]), Path::new("x")).unwrap();
        assert!(cfg.shared_classifier);
        assert_eq!(28 + 4 * n, 1_056_540);
    }

    #[test]
    fn size_mismatch_is_reported_with_numbers() {
        let dir = std::env::temp_dir().join(format!("squish-l2c-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("short.bin");
        let mut b = header([8, 16, 1, 2, 2, -10, 4]);
        b.extend(std::iter::repeat_n(0u8, 40));
        std::fs::write(&p, &b).unwrap();
        let err = import(&p).unwrap_err().to_string();
        assert!(
            err.contains("68 bytes") && err.contains("separate classifier"),
            "{err}"
        );
        std::fs::write(&p, &header([8, 16, 1, 2, 2, 10, 4])[..20]).unwrap();
        assert!(import(&p).unwrap_err().to_string().contains("shorter than"));
        std::fs::write(&p, header([8, 16, -1, 2, 2, 10, 4])).unwrap();
        assert!(import(&p).unwrap_err().to_string().contains("n_layers"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn forged_header_sizes_are_errors() {
        // Fields at their 2^20 limit (heads halved to keep the head size even): 28 + 4 · Σ sizes
        // ≈ 2^65 bytes, past usize.
        let max = 1 << 20;
        let h = header([max, max, max, max / 2, max / 2, -max, max]);
        let err = parse_header(&h, Path::new("forged.bin"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("forged.bin") && err.contains("more weights"),
            "{err}"
        );
        assert!(import_bytes(&h, Path::new("forged.bin")).is_err());
        // Large but addressable: the size check refuses it before anything is allocated.
        let h = header([4096, 4096, 64, 32, 32, 32000, 4096]);
        let err = import_bytes(&h, Path::new("big.bin"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("28 bytes but its header"), "{err}");
    }
}
