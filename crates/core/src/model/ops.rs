//! Small tensor helpers shared by the model families.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use crate::checkpoint::Weights;
use crate::{Error, Result};

/// A 1-D parameter from the F32 values of `name` in `w`, checking its shape.
pub fn param1(w: &Weights, name: &str, len: usize, device: &Device) -> Result<Param<Tensor<1>>> {
    let v = w.f32_with_shape(name, &[len])?;
    Ok(Param::from_tensor(Tensor::from_data(
        TensorData::new(v, [len]),
        device,
    )))
}

/// A 2-D parameter `[rows, cols]` from `name` in `w` (dequantized if stored quantized).
pub fn param2(
    w: &Weights,
    name: &str,
    rows: usize,
    cols: usize,
    device: &Device,
) -> Result<Param<Tensor<2>>> {
    let v = w.f32_with_shape(name, &[rows, cols])?;
    Ok(Param::from_tensor(Tensor::from_data(
        TensorData::new(v, [rows, cols]),
        device,
    )))
}

/// Stores the value of parameter `p` as an F32 tensor `name` in `w`.
pub fn put_param<const D: usize>(
    w: &mut Weights,
    name: impl Into<String>,
    p: &Param<Tensor<D>>,
) -> Result<()> {
    let t = p.val();
    let dims = t.dims().to_vec();
    w.insert(
        name,
        crate::checkpoint::WeightTensor::f32(dims, tensor_to_vec(t)?)?,
    );
    Ok(())
}

/// The values of a float tensor as a `Vec<f32>`.
pub fn tensor_to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::invalid(format!("reading tensor values: {e:?}")))
}

/// `x · Wᵀ` for `x [batch, seq, in]` and `W [out, in]` → `[batch, seq, out]`.
pub fn linear(x: Tensor<3>, w: &Param<Tensor<2>>) -> Tensor<3> {
    let [b, t, i] = x.dims();
    let wt = w.val().transpose(); // [in, out]
    let out = wt.dims()[1];
    x.reshape([b * t, i]).matmul(wt).reshape([b, t, out])
}

/// RMSNorm over the last dim: `x / sqrt(mean(x²) + eps) · g`, x `[batch, seq, d]`.
pub fn rms_norm(x: Tensor<3>, g: &Param<Tensor<1>>, eps: f32) -> Tensor<3> {
    let [_, _, d] = x.dims();
    let ms = x.clone().powf_scalar(2.0).mean_dim(2); // [batch, seq, 1]
    let inv = (ms + eps).sqrt().recip(); // [batch, seq, 1]
    x * inv * g.val().reshape([1, 1, d])
}

/// Token ids `[batch, seq]` → embedding rows `[batch, seq, d]`.
pub fn embed(table: &Param<Tensor<2>>, tokens: &[Vec<u32>], device: &Device) -> Result<Tensor<3>> {
    let b = tokens.len();
    let t = tokens.first().map_or(0, Vec::len);
    if b == 0 || t == 0 || tokens.iter().any(|r| r.len() != t) {
        return Err(Error::invalid(
            "token batch must be non-empty and rectangular",
        ));
    }
    let [vocab, d] = table.val().dims();
    let flat: Vec<i64> = tokens.iter().flatten().map(|&x| x as i64).collect();
    if let Some(bad) = flat.iter().find(|&&x| x as usize >= vocab) {
        return Err(Error::invalid(format!(
            "token id {bad} outside vocabulary of {vocab}"
        )));
    }
    let idx = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(flat, [b * t]), device); // [batch*seq]
    Ok(table.val().select(0, idx).reshape([b, t, d])) // [batch, seq, d]
}
