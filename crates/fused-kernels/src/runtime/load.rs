//! Checkpoint tensors → kernel weights: shape checks, repacking of every storage
//! format (F32 / F16 / INT8 / INT4, symmetric or asymmetric, 2/3/4-bit codebook) and row-wise
//! concatenation of matrices that share an input (Q/K/V).

use squish_core::checkpoint::{TensorData, WeightTensor, Weights};
use squish_core::quant::{QBits, QTensor};
use squish_core::{Error, Result};

use crate::pack::{PackedWeight, QuantFormat, QuantParts};

/// Maps a kernel error to a core error naming the tensor.
pub(crate) fn kerr(name: &str, e: crate::KernelError) -> Error {
    Error::tensor(name, e.to_string())
}

/// The tensor `name`, checking its shape.
pub(crate) fn tensor<'w>(w: &'w Weights, name: &str, shape: &[usize]) -> Result<&'w WeightTensor> {
    let t = w.get(name)?;
    if t.shape != shape {
        return Err(Error::tensor(
            name,
            format!("shape {:?}, expected {shape:?}", t.shape),
        ));
    }
    Ok(t)
}

/// First dimension of `name`.
pub(crate) fn dim0(w: &Weights, name: &str) -> Result<usize> {
    w.get(name)?
        .shape
        .first()
        .copied()
        .ok_or_else(|| Error::tensor(name, "empty shape"))
}

/// A small tensor (norm gains, conv taps, biases, `A_log`, `D`) as F32, any storage format.
pub(crate) fn vector(w: &Weights, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    Ok(tensor(w, name, shape)?.to_f32())
}

fn quant_format(q: &QTensor) -> QuantFormat {
    match (q.bits, q.zeros.is_some()) {
        (QBits::Int8, false) => QuantFormat::Int8Sym,
        (QBits::Int8, true) => QuantFormat::Int8Asym,
        (QBits::Int4, false) => QuantFormat::Int4Sym,
        (QBits::Int4, true) => QuantFormat::Int4Asym,
    }
}

/// A 2-D weight `[rows, cols]` repacked for the kernels.
pub(crate) fn matrix(w: &Weights, name: &str, rows: usize, cols: usize) -> Result<PackedWeight> {
    let t = tensor(w, name, &[rows, cols])?;
    pack(t, rows, cols).map_err(|e| kerr(name, e))
}

fn pack(t: &WeightTensor, rows: usize, cols: usize) -> crate::Result<PackedWeight> {
    match &t.data {
        TensorData::F32(v) => PackedWeight::from_f32(rows, cols, v),
        TensorData::F16(v) => PackedWeight::from_f16(rows, cols, v),
        TensorData::Quant(q) => {
            if q.rows != rows || q.cols != cols {
                return Err(crate::KernelError::Shape(format!(
                    "packed [{}, {}] vs logical [{rows}, {cols}]",
                    q.rows, q.cols
                )));
            }
            PackedWeight::from_quant(QuantParts {
                format: quant_format(q),
                out: rows,
                inp: cols,
                group: q.group,
                qweight: &q.qweight,
                scales: &q.scales,
                zeros: q.zeros.as_deref(),
            })
        }
        TensorData::Codebook(c) => {
            if c.rows != rows || c.cols != cols {
                return Err(crate::KernelError::Shape(format!(
                    "packed [{}, {}] vs logical [{rows}, {cols}]",
                    c.rows, c.cols
                )));
            }
            PackedWeight::from_codebook(crate::CodebookParts {
                bits: c.bits,
                out: rows,
                inp: cols,
                group: c.group,
                codes: &c.codes,
                scales: &c.scales,
                levels: &c.levels,
            })
        }
    }
}

/// Matrices sharing one input, computed as one GEMM over their stacked rows
/// when their storage formats allow it.
#[derive(Debug, Clone)]
pub(crate) enum Stacked {
    /// One weight `[Σ rows, cols]`.
    Fused(PackedWeight),
    /// Formats differ (mixed-precision checkpoint): one weight per part.
    Split(Vec<PackedWeight>),
}

impl Stacked {
    /// Every packed weight (for scratch sizing and summaries).
    pub fn weights(&self) -> Vec<&PackedWeight> {
        match self {
            Stacked::Fused(w) => vec![w],
            Stacked::Split(ws) => ws.iter().collect(),
        }
    }
}

/// Stacks `names` (each `[rows_i, cols]`) row-wise: F32/F16 when all parts have that
/// format, quantized when all share bits, group and symmetry; otherwise [`Stacked::Split`].
pub(crate) fn stacked(w: &Weights, parts: &[(String, usize)], cols: usize) -> Result<Stacked> {
    let ts: Vec<&WeightTensor> = parts
        .iter()
        .map(|(n, r)| tensor(w, n, &[*r, cols]))
        .collect::<Result<_>>()?;
    let rows: usize = parts.iter().map(|p| p.1).sum();
    let label = parts
        .iter()
        .map(|p| p.0.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let fused = match ts.iter().map(|t| &t.data).collect::<Vec<_>>().as_slice() {
        all if all.iter().all(|d| matches!(d, TensorData::F32(_))) => {
            let v: Vec<f32> = ts.iter().flat_map(|t| t.to_f32()).collect();
            Some(PackedWeight::from_f32(rows, cols, &v))
        }
        all if all.iter().all(|d| matches!(d, TensorData::F16(_))) => {
            let v: Vec<half::f16> = all
                .iter()
                .flat_map(|d| match d {
                    TensorData::F16(v) => v.clone(),
                    _ => unreachable!(),
                })
                .collect();
            Some(PackedWeight::from_f16(rows, cols, &v))
        }
        all => {
            let qs: Option<Vec<&QTensor>> = all
                .iter()
                .map(|d| match d {
                    TensorData::Quant(q) => Some(q),
                    _ => None,
                })
                .collect();
            match qs {
                Some(qs)
                    if qs.iter().all(|q| {
                        q.bits == qs[0].bits
                            && q.group == qs[0].group
                            && q.zeros.is_some() == qs[0].zeros.is_some()
                            && q.cols == cols
                    }) =>
                {
                    let qweight: Vec<u8> = qs.iter().flat_map(|q| q.qweight.clone()).collect();
                    let scales: Vec<half::f16> = qs.iter().flat_map(|q| q.scales.clone()).collect();
                    let zeros: Option<Vec<u8>> = qs[0].zeros.is_some().then(|| {
                        qs.iter()
                            .flat_map(|q| q.zeros.clone().unwrap_or_default())
                            .collect()
                    });
                    Some(PackedWeight::from_quant(QuantParts {
                        format: quant_format(qs[0]),
                        out: rows,
                        inp: cols,
                        group: qs[0].group,
                        qweight: &qweight,
                        scales: &scales,
                        zeros: zeros.as_deref(),
                    }))
                }
                _ => None,
            }
        }
    };
    match fused {
        Some(r) => Ok(Stacked::Fused(r.map_err(|e| kerr(&label, e))?)),
        None => {
            let ws = parts
                .iter()
                .zip(&ts)
                .map(|((n, r), t)| pack(t, *r, cols).map_err(|e| kerr(n, e)))
                .collect::<Result<_>>()?;
            Ok(Stacked::Split(ws))
        }
    }
}

/// `"f32×12 q4×35, 0.13 MB"`: tensor count per storage format and payload size.
pub(crate) fn format_summary(w: &Weights) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for (_, t) in w.iter() {
        let f = t.format_name();
        match counts.iter_mut().find(|c| c.0 == f) {
            Some(c) => c.1 += 1,
            None => counts.push((f, 1)),
        }
    }
    counts.sort();
    let parts: Vec<String> = counts.iter().map(|(f, n)| format!("{f}×{n}")).collect();
    format!(
        "{}, {:.3} MB",
        parts.join(" "),
        w.storage_bytes() as f64 / 1e6
    )
}
