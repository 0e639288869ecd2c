//! Round-to-nearest with min-max scales: the baseline every other method is measured against.

use squish_core::Result;
use squish_core::quant::QTensor;

use crate::calibration::TensorStats;
use crate::grid::{GroupParams, group_ranges, level, pack, params_for, sym_div};
use crate::spec::{QuantFormat, Quantizer};

/// Round-to-nearest (min-max range, F16-rounded scale, nearest code).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rtn;

impl Quantizer for Rtn {
    fn name(&self) -> &'static str {
        "rtn"
    }
    fn needs_stats(&self) -> bool {
        false
    }
    fn quantize(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        format: &QuantFormat,
        _stats: Option<&TensorStats>,
    ) -> Result<QTensor> {
        let group = format.group_for(cols)?;
        let ng = cols.div_ceil(group);
        let mut levels = vec![0i32; rows * cols]; // [rows, cols]
        let mut params = Vec::with_capacity(rows * ng); // [rows, n_groups]
        for (r, row) in w.chunks_exact(cols).enumerate() {
            for g in group_ranges(cols, group) {
                let p: GroupParams = params_for(&row[g.clone()], format, 1.0, sym_div(format))?;
                for c in g {
                    levels[r * cols + c] = level(row[c], &p, format);
                }
                params.push(p);
            }
        }
        pack(format, rows, cols, group, &levels, &params)
    }
}
