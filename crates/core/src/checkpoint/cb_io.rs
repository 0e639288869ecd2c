//! The stored parts of a codebook tensor `W` ([`crate::codebook`]): `W.qweight` U8
//! `[rows, ⌈cols·bits/8⌉]`, `W.scales` F16 `[rows, n_groups]`, `W.levels` F32 `[2^bits]`.

use std::collections::BTreeMap;

use half::f16;
use safetensors::Dtype;

use super::io::{Stored, f16_bytes, f32_bytes};
use crate::codebook::{CbTensor, check_bits, row_bytes};
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
    let parts = [
        (
            ".qweight",
            Dtype::U8,
            vec![c.rows, c.row_bytes()],
            c.codes.clone(),
        ),
        (
            ".scales",
            Dtype::F16,
            vec![c.rows, c.n_groups()],
            f16_bytes(&c.scales),
        ),
        (
            ".levels",
            Dtype::F32,
            vec![c.levels.len()],
            f32_bytes(&c.levels),
        ),
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

/// Reads and validates the codebook tensor `name` of `bits` bits, logical `shape` and `group`;
/// `fetch(part, dtype, shape)` returns a stored part's bytes after checking its dtype and shape
/// (so a forged `levels` shape or dtype is an error before anything is decoded).
pub(super) fn load(
    name: &str,
    bits: u32,
    shape: &[usize],
    group: usize,
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
    let sb = fetch(
        format!("{name}.scales"),
        Dtype::F16,
        &[rows, cols.div_ceil(group)],
    )?;
    let lb = fetch(format!("{name}.levels"), Dtype::F32, &[1 << bits])?;
    let c = CbTensor {
        bits,
        rows,
        cols,
        group,
        codes,
        scales: sb
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect(),
        levels: lb
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    };
    c.validate(name)?;
    Ok(c)
}
