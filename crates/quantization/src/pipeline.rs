//! Whole-checkpoint quantization: which tensors, AWQ, the per-tensor method, the report.

use std::collections::BTreeMap;

use half::f16;
use serde::{Deserialize, Serialize};
use squish_core::checkpoint::{self, Checkpoint, Provenance, TensorData, WeightTensor};
use squish_core::quant::QBits;
use squish_core::{Error, Result, fsutil};

use crate::awq::{AwqConfig, apply_awq};
use crate::calibration::Calibration;
use crate::codebook::CodebookSpec;
use crate::report::{KeptTensor, QuantReport, TableRow, TensorReport};
use crate::spec::{Method, QuantFormat, QuantSpec};

/// Storage of the tensors that are not quantized (norm gains, SSM `A_log`/`D`/conv/dt bias …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmallFormat {
    /// Keep F32 (default).
    #[default]
    F32,
    /// Convert to F16.
    F16,
}

/// Whole-checkpoint quantization settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantConfig {
    /// Target format.
    pub format: QuantFormat,
    /// Per-tensor method.
    pub method: Method,
    /// AWQ scaling before quantization (needs calibration).
    #[serde(default)]
    pub awq: Option<AwqConfig>,
    /// Quantize the embedding / classifier (`tok_embeddings.weight`, `output.weight`).
    #[serde(default = "default_true")]
    pub quantize_embedding: bool,
    /// Storage of the unquantized small tensors.
    #[serde(default)]
    pub small: SmallFormat,
    /// Names (substring match) of linear weights to leave unquantized.
    #[serde(default)]
    pub keep: Vec<String>,
    /// A codebook per tensor ([`crate::codebook`], 2, 3 or 4 bits, learned or uniform levels)
    /// with `format`'s group instead of `format`'s integer grid (`format.bits` and `asym` are then
    /// unused); methods `rtn` (nearest level) or `gptq` (error feedback onto the levels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codebook: Option<CodebookSpec>,
}

fn default_true() -> bool {
    true
}

impl QuantConfig {
    /// Settings with the given format and method and the defaults otherwise.
    pub fn new(format: QuantFormat, method: Method) -> Self {
        QuantConfig {
            format,
            method,
            awq: None,
            quantize_embedding: true,
            small: SmallFormat::F32,
            keep: Vec::new(),
            codebook: None,
        }
    }
}

/// True for the 2-D linear weights of the Llama and SsmMoe families (and the embedding /
/// classifier), the tensors the stage quantizes; norms, conv taps, `A_log`, `D`, biases are not.
pub fn is_linear_weight(name: &str) -> bool {
    const LINEAR: [&str; 7] = [
        ".attention.w",
        ".feed_forward.w",
        "_proj.weight",
        ".router.weight",
        ".experts.",
        "output.weight",
        "tok_embeddings.weight",
    ];
    name.ends_with(".weight") && LINEAR.iter().any(|p| name.contains(p)) && !name.contains("conv")
}

fn is_embedding(name: &str) -> bool {
    name == "tok_embeddings.weight" || name == "output.weight"
}

/// Quantizes every selected tensor of `ckpt` (see [`QuantConfig`]; a row narrower than the group
/// gets one group per row, [`QuantFormat::fitted`]); `calib` is required by GPTQ and AWQ and, when
/// given, weights the MSE search and yields the layer-output errors.
/// Returns the new checkpoint (provenance stage `int4_native` / `int8`, parent sha256 of the
/// input's serialized bytes) and the report (its table row is filled by
/// [`QuantReport::finish_row`] once the file is written).
pub fn quantize_checkpoint(
    ckpt: &Checkpoint,
    cfg: &QuantConfig,
    calib: Option<&Calibration>,
) -> Result<(Checkpoint, QuantReport)> {
    if let Some((name, _)) = ckpt.weights.iter().find(|(_, t)| t.is_quantized()) {
        return Err(Error::tensor(
            name,
            "already quantized: quantize the F32 checkpoint instead",
        ));
    }
    if let Some(cb) = cfg.codebook {
        squish_core::codebook::check_bits(cb.bits)?;
        if !matches!(cfg.method, Method::Rtn | Method::Gptq(_)) || cfg.awq.is_some() {
            return Err(Error::invalid(format!(
                "codebook quantization runs with method rtn or gptq and without AWQ, not {}{}",
                cfg.method.name(),
                if cfg.awq.is_some() { "+awq" } else { "" }
            )));
        }
    }
    let quantizer = cfg.method.quantizer();
    if (quantizer.needs_stats() || cfg.awq.is_some()) && calib.is_none() {
        return Err(Error::invalid(format!(
            "method {}{} needs calibration statistics",
            cfg.method.name(),
            if cfg.awq.is_some() { " with AWQ" } else { "" }
        )));
    }
    let parent_sha = fsutil::sha256_hex(&checkpoint::to_bytes(ckpt)?);
    let mut work = ckpt.clone();
    let mut stats = calib.cloned();
    let awq_sites = match (&cfg.awq, stats.as_mut()) {
        (Some(a), Some(s)) => apply_awq(&mut work, s, &cfg.format, a)?,
        _ => Vec::new(),
    };
    let mut out = work.clone();
    let (mut tensors, mut kept) = (Vec::new(), Vec::new());
    for (name, t) in work.weights.iter() {
        let selected = t.shape.len() == 2
            && is_linear_weight(name)
            && (cfg.quantize_embedding || !is_embedding(name))
            && !cfg.keep.iter().any(|k| name.contains(k.as_str()));
        if !selected {
            let nt = match (&t.data, cfg.small) {
                (TensorData::F32(v), SmallFormat::F16) => WeightTensor {
                    shape: t.shape.clone(),
                    data: TensorData::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
                },
                _ => t.clone(),
            };
            kept.push(KeptTensor {
                name: name.clone(),
                shape: nt.shape.clone(),
                format: nt.format_name().into(),
                bytes: nt.storage_bytes(),
            });
            out.weights.insert(name.clone(), nt);
            continue;
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let st = stats.as_ref().and_then(|s| s.get(name));
        // A row narrower than the group gets one group per row (`QuantFormat::fitted`).
        let spec = QuantSpec {
            format: cfg.format.fitted(cols),
            method: cfg.method.clone(),
        };
        let w = t.to_f32(); // [rows, cols]
        let (data, format, group, bytes) = match cfg.codebook {
            None => {
                let q = crate::quantize_tensor(&w, rows, cols, &spec, st)
                    .map_err(|e| Error::tensor(name, e.to_string()))?;
                let f = if q.bits == QBits::Int4 { "q4" } else { "q8" };
                let (g, b) = (q.group, q.storage_bytes());
                (TensorData::Quant(q), f.to_string(), g, b)
            }
            Some(cb) => {
                let group = spec.format.group_for(cols)?;
                let gptq = match &cfg.method {
                    Method::Gptq(g) => Some(g),
                    _ => None,
                };
                let c = crate::codebook::quantize_codebook(&w, rows, cols, cb, group, st, gptq)
                    .map_err(|e| Error::tensor(name, e.to_string()))?;
                let b = c.storage_bytes();
                (TensorData::Codebook(c), format!("cb{}", cb.bits), group, b)
            }
        };
        let nt = WeightTensor {
            shape: vec![rows, cols],
            data,
        };
        let deq = nt.to_f32(); // [rows, cols]
        // Without AWQ `w` is the original weight. With AWQ it is `W·diag(s)` and `st` the statistics
        // of the rescaled inputs `X·diag(1/s)`, so the output error is exactly that of the
        // effective weight `Q·diag(1/s)` against the original; the weight error is in scaled space.
        tensors.push(TensorReport::measure(
            name, rows, cols, &w, &deq, &format, group, bytes, st,
        ));
        out.weights.insert(name.clone(), nt);
    }
    let method = format!(
        "{}{}{}",
        cfg.method.name(),
        if cfg.awq.is_some() { "+awq" } else { "" },
        match cfg.codebook {
            Some(CodebookSpec { learned: true, .. }) => "+codebook",
            Some(CodebookSpec { learned: false, .. }) => "+uniform-codebook",
            None => "",
        }
    );
    let stage = match (cfg.codebook, cfg.format.bits) {
        (Some(_), _) => "codebook",
        (None, QBits::Int4) => "int4_native",
        (None, QBits::Int8) => "int8",
    };
    let bits = cfg.codebook.map_or(cfg.format.bits_u32(), |c| c.bits);
    // The full configuration is hashed, not stored: the header counts toward bits/param.
    let config_json = serde_json::to_vec(cfg).map_err(|e| Error::invalid(e.to_string()))?;
    let details = BTreeMap::from([
        ("method".to_string(), method.clone()),
        ("bits".to_string(), bits.to_string()),
        (
            "group".to_string(),
            cfg.format
                .group
                .map_or("row".to_string(), |g| g.to_string()),
        ),
        ("asym".to_string(), cfg.format.asym.to_string()),
        (
            "calib_tokens".to_string(),
            calib.map_or(0, |c| c.tokens).to_string(),
        ),
    ]);
    out.provenance = Provenance {
        stage: stage.into(),
        parent_sha256: Some(parent_sha),
        config_hash: Some(fsutil::sha256_hex(&config_json)),
        tool: format!("squish-quant {}", env!("CARGO_PKG_VERSION")),
        details,
    };
    let parameters = ckpt.weights.param_count();
    out.metrics = BTreeMap::from([("parameters".to_string(), parameters as f64)]);
    let tensor_bytes = out.weights.storage_bytes();
    let kept_bytes: usize = kept.iter().map(|k| k.bytes).sum();
    let report = QuantReport {
        method,
        bits,
        group: cfg.format.group,
        asym: cfg.format.asym,
        parameters,
        tensor_bytes,
        kept_bytes,
        kept_share: kept_bytes as f64 / tensor_bytes.max(1) as f64,
        calib_windows: calib.map_or(0, |c| c.windows),
        calib_tokens: calib.map_or(0, |c| c.tokens),
        tensors,
        kept,
        awq: awq_sites,
        row: TableRow::default(),
        qat: None,
    };
    Ok((out, report))
}
