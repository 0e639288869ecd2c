//! Round-to-nearest symmetric quantization of a whole checkpoint — a helper for
//! benchmarks and tests that need a quantized model when no quantized checkpoint
//! exists (the real quantization stages live in `squish-quant`).

use half::f16;
use squish_core::Result;
use squish_core::checkpoint::{TensorData, WeightTensor, Weights};
use squish_core::quant::{QBits, QTensor};

/// True for the tensors the runtime multiplies by (2-D `*.weight` except conv taps).
fn is_matmul_weight(name: &str, t: &WeightTensor) -> bool {
    t.shape.len() == 2 && name.ends_with(".weight") && !name.ends_with("conv.weight")
}

/// Copy of `w` with every matmul weight quantized symmetric RTN (`scale = absmax /
/// qmax` per group of `group` columns, clamped to the row width; F16 scales).
pub fn rtn_quantize(w: &Weights, bits: QBits, group: usize) -> Result<Weights> {
    let (lo, qmax) = match bits {
        QBits::Int4 => (-8.0f32, 7.0f32),
        QBits::Int8 => (-127.0, 127.0),
    };
    let mut out = Weights::new();
    for (name, t) in w.iter() {
        if !is_matmul_weight(name, t) {
            out.insert(name.clone(), t.clone());
            continue;
        }
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let g = group.clamp(1, cols);
        let v = t.to_f32();
        let mut levels = vec![0i32; rows * cols];
        let mut scales = Vec::with_capacity(rows * cols.div_ceil(g));
        for r in 0..rows {
            for c0 in (0..cols).step_by(g) {
                let blk = &v[r * cols + c0..r * cols + (c0 + g).min(cols)];
                let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
                let s = f16::from_f32((amax / qmax).max(1e-8));
                for (j, x) in blk.iter().enumerate() {
                    levels[r * cols + c0 + j] = (x / s.to_f32()).round().clamp(lo, qmax) as i32;
                }
                scales.push(s);
            }
        }
        let q = QTensor::from_levels(bits, rows, cols, g, &levels, scales, None)?;
        out.insert(
            name.clone(),
            WeightTensor {
                shape: t.shape.clone(),
                data: TensorData::Quant(q),
            },
        );
    }
    Ok(out)
}
