//! The stored parts of a codebook tensor `W` ([`crate::codebook`]): `W.qweight` U8
//! `[rows, ⌈cols·bits/8⌉]`, then either `W.scales` F16 `[rows, n_groups]` and `W.levels` F32
//! `[2^bits]` ([`CbScales::F16`]) or `W.scales` U8 log8 codes `[rows, n_groups]` and `W.levels`
//! F16 `[2^bits]` ([`CbScales::Log8`]); the dtype of `W.scales` says which.

use std::collections::BTreeMap;

use half::f16;
use safetensors::Dtype;

use super::io::{Stored, f16_bytes, f32_bytes};
use crate::codebook::scales::{log8_index, log8_scale};
use crate::codebook::{CbScales, CbTensor, check_bits, row_bytes};
use crate::{Error, Result};

/// Reads one stored part `(name, dtype, shape)`, checking its dtype and shape.
pub(super) type FetchPart<'a> = dyn FnMut(String, Dtype, &[usize]) -> Result<Vec<u8>> + 'a;

/// Adds the parts of the codebook tensor `name` (logical `shape`) to `stored`, after validating it.
pub(super) fn store(
    name: &str,
    shape: &[usize],
    c: &CbTensor,
    stored: &mut BTreeMap<String, Stored>,
) -> Result<()> {
    c.validate(name)?;
    if shape != [c.rows, c.cols] {
        return Err(Error::tensor(
            name,
            format!(
                "logical shape {shape:?} but packed as [{}, {}]",
                c.rows, c.cols
            ),
        ));
    }
    let (scales, levels) = match c.scale_format {
        CbScales::F16 => (
            (Dtype::F16, f16_bytes(&c.scales)),
            (Dtype::F32, f32_bytes(&c.levels)),
        ),
        CbScales::Log8 => {
            // `validate` checked that every scale is on the grid and every level an F16 value.
            let codes = c
                .scales
                .iter()
                .map(|&s| log8_index(s).unwrap_or(0))
                .collect();
            let lv: Vec<f16> = c.levels.iter().map(|&l| f16::from_f32(l)).collect();
            ((Dtype::U8, codes), (Dtype::F16, f16_bytes(&lv)))
        }
    };
    let parts = [
        (
            ".qweight",
            Dtype::U8,
            vec![c.rows, c.row_bytes()],
            c.codes.clone(),
        ),
        (".scales", scales.0, vec![c.rows, c.n_groups()], scales.1),
        (".levels", levels.0, vec![c.levels.len()], levels.1),
    ];
    for (suffix, dtype, shape, bytes) in parts {
        stored.insert(
            format!("{name}{suffix}"),
            Stored {
                dtype,
                shape,
                bytes,
            },
        );
    }
    Ok(())
}

/// Reads and validates the codebook tensor `name` of `bits` bits, logical `shape` and `group`,
/// its scales stored as `format`; `fetch(part, dtype, shape)` returns a stored part's bytes after
/// checking its dtype and shape (so a forged `levels` shape or dtype is an error before anything
/// is decoded).
pub(super) fn load(
    name: &str,
    bits: u32,
    shape: &[usize],
    group: usize,
    format: CbScales,
    fetch: &mut FetchPart<'_>,
) -> Result<CbTensor> {
    check_bits(bits).map_err(|e| Error::tensor(name, e.to_string()))?;
    let [rows, cols] = shape[..] else {
        return Err(Error::tensor(
            name,
            format!("codebook tensors are 2-D, metadata shape {shape:?}"),
        ));
    };
    if group == 0 || group > cols {
        return Err(Error::tensor(
            name,
            format!("group {group} not in 1..={cols}"),
        ));
    }
    let codes = fetch(
        format!("{name}.qweight"),
        Dtype::U8,
        &[rows, row_bytes(bits, cols)],
    )?;
    let ng = cols.div_ceil(group);
    let f16s = |b: Vec<u8>| -> Vec<f16> {
        b.chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect()
    };
    let (scales, levels) = match format {
        CbScales::F16 => {
            let sb = fetch(format!("{name}.scales"), Dtype::F16, &[rows, ng])?;
            let lb = fetch(format!("{name}.levels"), Dtype::F32, &[1 << bits])?;
            let levels = lb
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (f16s(sb), levels)
        }
        CbScales::Log8 => {
            let sb = fetch(format!("{name}.scales"), Dtype::U8, &[rows, ng])?;
            let lb = fetch(format!("{name}.levels"), Dtype::F16, &[1 << bits])?;
            let levels = f16s(lb).iter().map(|l| l.to_f32()).collect();
            (sb.into_iter().map(log8_scale).collect(), levels)
        }
    };
    let c = CbTensor {
        bits,
        rows,
        cols,
        group,
        codes,
        scales,
        levels,
        scale_format: format,
    };
    c.validate(name)?;
    Ok(c)
}
