//! Feasibility probe for formats squish does not pack (INT3, INT2): fake-quantizes every 2-D
//! linear weight of an F32 checkpoint (embedding included) to `bits` symmetric levels with F16
//! group scales chosen by a per-group clipping search (least squared error), and writes an F32
//! checkpoint to evaluate with `cargo xtask eval`. It only measures what such a format would cost
//! in quality; nothing here is a deliverable checkpoint.
//!
//! ```text
//! cargo build --release --workspace --examples
//! target/release/examples/lowbit_probe IN.safetensors OUT_DIR BITS GROUP [BITS GROUP …]
//! cargo xtask eval --checkpoint OUT_DIR/int3_g32.safetensors --data valid.txt
//! ```

use std::path::Path;

use half::f16;
use squish_core::checkpoint::{self, TensorData};

/// Fake-quantizes one group in place: the clip ratio in {1.0, 0.98, …, 0.5} with the least error.
fn fake_quant_group(v: &mut [f32], qmax: f32) {
    let amax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if amax == 0.0 {
        return;
    }
    let grid = |clip: f32| -> (f32, f64) {
        let s = f16::from_f32(clip * amax / qmax).to_f32().max(1e-8);
        let err = v
            .iter()
            .map(|&x| {
                let q = (x / s).round().clamp(-qmax - 1.0, qmax) * s;
                ((x - q) as f64).powi(2)
            })
            .sum();
        (s, err)
    };
    let (s, _) = (0..26)
        .map(|i| grid(1.0 - 0.02 * i as f32))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("26 candidates");
    v.iter_mut()
        .for_each(|x| *x = (*x / s).round().clamp(-qmax - 1.0, qmax) * s);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 || !args.len().is_multiple_of(2) {
        return Err("usage: lowbit_probe IN OUT_DIR BITS GROUP [BITS GROUP …]".into());
    }
    let base = checkpoint::load(Path::new(&args[0]))?;
    let out_dir = Path::new(&args[1]);
    std::fs::create_dir_all(out_dir)?;
    let params = base.weights.param_count();
    for pair in args[2..].chunks(2) {
        let (bits, group): (u32, usize) = (pair[0].parse()?, pair[1].parse()?);
        if !(2..=8).contains(&bits) || group == 0 {
            return Err(format!("bits {bits} / group {group} out of range").into());
        }
        let qmax = ((1u32 << (bits - 1)) - 1) as f32;
        let mut ckpt = base.clone();
        let mut quantized = 0usize;
        let mut groups = 0usize;
        let names: Vec<String> = ckpt.weights.iter().map(|(n, _)| n.clone()).collect();
        for name in names {
            if !name.ends_with(".weight") || name.contains("norm") {
                continue;
            }
            let t = ckpt.weights.get_mut(&name)?;
            let (TensorData::F32(w), &[_, cols]) = (&mut t.data, &t.shape[..]) else {
                continue;
            };
            for row in w.chunks_exact_mut(cols) {
                for g in row.chunks_mut(group) {
                    fake_quant_group(g, qmax);
                    groups += 1;
                }
            }
            quantized += w.len();
        }
        // What a packed file would hold: codes + one F16 scale per group (no header, no norms).
        let payload_bits = quantized as f64 * bits as f64 + groups as f64 * 16.0;
        let path = out_dir.join(format!("int{bits}_g{group}.safetensors"));
        checkpoint::save(&ckpt, &path)?;
        println!(
            "{}: {quantized} of {params} parameters at {bits} bits, {groups} groups; packed \
             payload {:.3} bits/param (plus header and norms)",
            path.display(),
            payload_bits / params as f64
        );
    }
    Ok(())
}
