//! Quick min-of-N timing of matvec per format and path (less noisy than
//! criterion's mean on a shared machine). Usage: `cargo run --release --example perf [out in]`.

use half::f16;
use squish_kernels::*;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (out, inp) = if args.len() == 2 {
        (args[0], args[1])
    } else {
        (768, 256)
    };
    let mut seed = 0x2545_F491u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let wf: Vec<f32> = (0..out * inp)
        .map(|_| (rnd() % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let wh: Vec<f16> = wf.iter().map(|v| f16::from_f32(*v)).collect();
    let ng = inp.div_ceil(32);
    let scales = vec![f16::from_f32(0.01); out * ng];
    let q8: Vec<u8> = (0..out * inp)
        .map(|_| ((rnd() % 255) as i32 - 127) as i8 as u8)
        .collect();
    let q4: Vec<u8> = (0..out * inp.div_ceil(2)).map(|_| rnd() as u8).collect();
    let mk = |format, qweight: &[u8]| {
        let parts = QuantParts {
            format,
            out,
            inp,
            group: 32,
            qweight,
            scales: &scales,
            zeros: None,
        };
        PackedWeight::from_quant(parts).unwrap()
    };
    let ws = [
        (
            "f32",
            PackedWeight::from_f32(out, inp, &wf).unwrap(),
            Activations::F32,
        ),
        (
            "f16",
            PackedWeight::from_f16(out, inp, &wh).unwrap(),
            Activations::F32,
        ),
        (
            "int8 f32act",
            mk(QuantFormat::Int8Sym, &q8),
            Activations::F32,
        ),
        (
            "int8 i8act",
            mk(QuantFormat::Int8Sym, &q8),
            Activations::Int8,
        ),
        (
            "int4 f32act",
            mk(QuantFormat::Int4Sym, &q4),
            Activations::F32,
        ),
        (
            "int4 i8act",
            mk(QuantFormat::Int4Sym, &q4),
            Activations::Int8,
        ),
    ];
    let x: Vec<f32> = (0..inp).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0f32; out];
    println!("matvec {out}x{inp}: min time over 2000 calls, GFLOP/s = 2*out*in/t");
    for (name, w, act) in &ws {
        let mut s = Scratch::for_weight(w, 1);
        for l in squish_kernels::dispatch::supported() {
            let opts = MatOpts {
                act: *act,
                level: Some(l),
                ..MatOpts::default()
            };
            let mut best = f64::MAX;
            for _ in 0..2000 {
                let t0 = Instant::now();
                w.matmul_opts(&x, 1, &mut y, &mut s, &opts).unwrap();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            let gf = 2.0 * (out * inp) as f64 / best / 1e9;
            println!(
                "{name:12} {:7} {:8.2} us {gf:7.2} GFLOP/s",
                l.as_str(),
                best * 1e6
            );
        }
    }
}
