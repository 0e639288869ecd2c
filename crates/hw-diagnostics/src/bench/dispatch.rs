//! Safe kernel selection. Each kernel handle can only be built by its `select` function, which
//! checks the CPU features at runtime, so calling the `#[target_feature]` function it wraps is
//! sound.

#[cfg(target_arch = "aarch64")]
use super::arm;
use super::portable;
#[cfg(target_arch = "x86_64")]
use super::x86;
use crate::SimdLevel;

#[cfg(target_arch = "x86_64")]
mod feat {
    pub fn avx2() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    pub fn f16c() -> bool {
        avx2() && is_x86_feature_detected!("f16c")
    }
    pub fn avxvnni() -> bool {
        avx2() && is_x86_feature_detected!("avxvnni")
    }
    pub fn avx512() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    }
    pub fn avx512vnni() -> bool {
        avx512() && is_x86_feature_detected!("avx512vnni")
    }
}

#[cfg(target_arch = "aarch64")]
fn neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imp {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

fn at_least(level: SimdLevel, want: SimdLevel) -> bool {
    want.within(level)
}

/// A verified kernel choice for one benchmark family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kernel {
    imp: Imp,
    name: &'static str,
    /// The SIMD level this kernel belongs to.
    pub level: SimdLevel,
}

impl Kernel {
    const PORTABLE: Kernel = Kernel {
        imp: Imp::Portable,
        name: "portable",
        level: SimdLevel::Scalar,
    };

    /// Human-readable kernel name (instruction sequence).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// FP32 multiply-add peak kernel for `level`.
    pub fn fp32(level: SimdLevel) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if at_least(level, SimdLevel::Avx512) && feat::avx512() {
                return Kernel::new(Imp::Avx512, "avx512f vfmadd (16x zmm)", SimdLevel::Avx512);
            }
            if at_least(level, SimdLevel::Avx2) && feat::avx2() {
                return Kernel::new(Imp::Avx2, "avx2 vfmadd (12x ymm)", SimdLevel::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if at_least(level, SimdLevel::Neon) && neon() {
            return Kernel::new(Imp::Neon, "neon fmla (16x q)", SimdLevel::Neon);
        }
        let _ = level;
        Kernel {
            name: "portable mul+add (16 accumulators)",
            ..Kernel::PORTABLE
        }
    }

    /// FP16-weight dot-product kernel for `level`.
    pub fn fp16(level: SimdLevel) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if at_least(level, SimdLevel::Avx512) && feat::avx512() {
                return Kernel::new(Imp::Avx512, "avx512f vcvtph2ps+vfmadd", SimdLevel::Avx512);
            }
            if at_least(level, SimdLevel::Avx2) && feat::f16c() {
                return Kernel::new(Imp::Avx2, "f16c vcvtph2ps+avx2 vfmadd", SimdLevel::Avx2);
            }
        }
        let _ = level;
        Kernel {
            name: "portable f16->f32 convert + mul/add",
            ..Kernel::PORTABLE
        }
    }

    /// INT8 (u8 x i8 -> i32) dot-product kernel for `level`.
    pub fn int8(level: SimdLevel) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if at_least(level, SimdLevel::Avx512Vnni) && feat::avx512vnni() {
                return Kernel::new(
                    Imp::Avx512Vnni,
                    "avx512vnni vpdpbusd zmm",
                    SimdLevel::Avx512Vnni,
                );
            }
            if at_least(level, SimdLevel::Avx512) && feat::avx512() {
                return Kernel::new(
                    Imp::Avx512,
                    "avx512bw vpmaddubsw+vpmaddwd zmm",
                    SimdLevel::Avx512,
                );
            }
            if at_least(level, SimdLevel::Avx2) && feat::avxvnni() {
                return Kernel::new(Imp::AvxVnni, "avx-vnni vpdpbusd ymm", SimdLevel::Avx2);
            }
            if at_least(level, SimdLevel::Avx2) && feat::avx2() {
                return Kernel::new(Imp::Avx2, "avx2 vpmaddubsw+vpmaddwd ymm", SimdLevel::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if at_least(level, SimdLevel::Neon) && neon() {
            return Kernel::new(Imp::Neon, "neon smull+sadalp", SimdLevel::Neon);
        }
        let _ = level;
        Kernel {
            name: "portable i32 multiply-add",
            ..Kernel::PORTABLE
        }
    }

    /// f32 matvec kernel for `level`.
    pub fn matvec(level: SimdLevel) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if at_least(level, SimdLevel::Avx512) && feat::avx512() {
                return Kernel::new(Imp::Avx512, "avx512f 4-row fma", SimdLevel::Avx512);
            }
            if at_least(level, SimdLevel::Avx2) && feat::avx2() {
                return Kernel::new(Imp::Avx2, "avx2 4-row fma", SimdLevel::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if at_least(level, SimdLevel::Neon) && neon() {
            return Kernel::new(Imp::Neon, "neon 4-row fmla", SimdLevel::Neon);
        }
        let _ = level;
        Kernel {
            name: "portable dot (8 partial sums)",
            ..Kernel::PORTABLE
        }
    }

    #[allow(dead_code)] // unused on architectures without SIMD kernels
    fn new(imp: Imp, name: &'static str, level: SimdLevel) -> Kernel {
        Kernel { imp, name, level }
    }

    /// Flops per repetition of [`Kernel::run_fp32`].
    pub fn fp32_flops_per_rep(&self) -> u64 {
        match self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512 | Imp::Avx512Vnni => x86::AVX512_FMA_ACCUMULATORS as u64 * 16 * 2,
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2 | Imp::AvxVnni => x86::AVX2_FMA_ACCUMULATORS as u64 * 8 * 2,
            #[cfg(target_arch = "aarch64")]
            Imp::Neon => arm::NEON_FMA_ACCUMULATORS as u64 * 4 * 2,
            Imp::Portable => portable::FMA_FLOPS_PER_REP,
        }
    }

    /// Runs the FP32 peak loop (`fp32_flops_per_rep() * reps` flops).
    pub fn run_fp32(&self, reps: u64, a: f32, b: f32) -> f32 {
        match self.imp {
            // SAFETY: built by `Kernel::fp32` only after checking avx512f/bw/vl.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512 | Imp::Avx512Vnni => unsafe { x86::fma_peak_avx512(reps, a, b) },
            // SAFETY: built by `Kernel::fp32` only after checking avx2 and fma.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2 | Imp::AvxVnni => unsafe { x86::fma_peak_avx2(reps, a, b) },
            // SAFETY: built by `Kernel::fp32` only after detecting neon.
            #[cfg(target_arch = "aarch64")]
            Imp::Neon => unsafe { arm::fma_peak_neon(reps, a, b) },
            Imp::Portable => portable::fma_peak(reps, a, b),
        }
    }

    /// f16-weight x f32 dot product (2 flops per element).
    pub fn run_fp16(&self, w: &[u16], x: &[f32]) -> f32 {
        match self.imp {
            // SAFETY: built by `Kernel::fp16` only after checking avx512f.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512 | Imp::Avx512Vnni => unsafe { x86::dot_f16_avx512(w, x) },
            // SAFETY: built by `Kernel::fp16` only after checking avx2, fma and f16c.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2 | Imp::AvxVnni => unsafe { x86::dot_f16_avx2(w, x) },
            _ => portable::dot_f16(w, x),
        }
    }

    /// Ops (2 per byte pair) per repetition of [`Kernel::run_int8_peak`].
    pub fn int8_peak_ops_per_rep(&self) -> u64 {
        let (acc, bytes) = self.int8_peak_shape();
        (acc * bytes * 2) as u64
    }

    /// (accumulators, byte pairs per accumulator per repetition) of the INT8 peak loop.
    pub fn int8_peak_shape(&self) -> (usize, usize) {
        match self.imp {
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512 | Imp::Avx512Vnni => (x86::INT8_PEAK_ACC_ZMM, 64),
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2 | Imp::AvxVnni => (x86::INT8_PEAK_ACC_YMM, 32),
            _ => (portable::INT8_PEAK_ACCUMULATORS, 1),
        }
    }

    /// Register-resident INT8 peak loop of an [`Kernel::int8`] kernel (no loads: comparable
    /// to [`Kernel::run_fp32`]); `int8_peak_ops_per_rep() * reps` ops.
    pub fn run_int8_peak(&self, reps: u64, a: u8, b: i8) -> i32 {
        match self.imp {
            // SAFETY: built by `Kernel::int8` only after checking avx512f/bw/vl + avx512vnni.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512Vnni => unsafe { x86::int8_peak_avx512vnni(reps, a, b) },
            // SAFETY: built by `Kernel::int8` only after checking avx512f/bw/vl.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512 => unsafe { x86::int8_peak_avx512bw(reps, a, b) },
            // SAFETY: built by `Kernel::int8` only after checking avx2, fma and avxvnni.
            #[cfg(target_arch = "x86_64")]
            Imp::AvxVnni => unsafe { x86::int8_peak_avxvnni(reps, a, b) },
            // SAFETY: built by `Kernel::int8` only after checking avx2 and fma.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2 => unsafe { x86::int8_peak_avx2(reps, a, b) },
            // NEON has no register-resident INT8 peak kernel here: the portable loop.
            _ => portable::int8_peak(reps, a, b),
        }
    }

    /// u8 x i8 dot product (2 ops per byte pair). Activations must be <= 127.
    pub fn run_int8(&self, a: &[u8], w: &[i8]) -> i32 {
        match self.imp {
            // SAFETY: built by `Kernel::int8` only after checking avx512f/bw/vl + avx512vnni.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512Vnni => unsafe { x86::dot_u8i8_avx512vnni(a, w) },
            // SAFETY: built by `Kernel::int8` only after checking avx512f/bw/vl.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512 => unsafe { x86::dot_u8i8_avx512bw(a, w) },
            // SAFETY: built by `Kernel::int8` only after checking avx2, fma and avxvnni.
            #[cfg(target_arch = "x86_64")]
            Imp::AvxVnni => unsafe { x86::dot_u8i8_avxvnni(a, w) },
            // SAFETY: built by `Kernel::int8` only after checking avx2 and fma.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2 => unsafe { x86::dot_u8i8_avx2(a, w) },
            // SAFETY: built by `Kernel::int8` only after detecting neon.
            #[cfg(target_arch = "aarch64")]
            Imp::Neon => unsafe { arm::dot_u8i8_neon(a, w) },
            Imp::Portable => portable::dot_u8i8(a, w),
        }
    }

    /// Row-major f32 matvec (`2 * rows * cols` flops).
    pub fn run_matvec(&self, w: &[f32], x: &[f32], y: &mut [f32], rows: usize, cols: usize) {
        match self.imp {
            // SAFETY: built by `Kernel::matvec` only after checking avx512f/bw/vl.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx512 | Imp::Avx512Vnni => unsafe { x86::matvec_avx512(w, x, y, rows, cols) },
            // SAFETY: built by `Kernel::matvec` only after checking avx2 and fma.
            #[cfg(target_arch = "x86_64")]
            Imp::Avx2 | Imp::AvxVnni => unsafe { x86::matvec_avx2(w, x, y, rows, cols) },
            // SAFETY: built by `Kernel::matvec` only after detecting neon.
            #[cfg(target_arch = "aarch64")]
            Imp::Neon => unsafe { arm::matvec_neon(w, x, y, rows, cols) },
            Imp::Portable => portable::matvec(w, x, y, rows, cols),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{detected_simd_level, supported_levels};

    fn data(n: usize) -> (Vec<u8>, Vec<i8>, Vec<f32>, Vec<u16>) {
        let a = (0..n).map(|i| ((i * 37 + 11) % 128) as u8).collect();
        let w = (0..n).map(|i| ((i * 91 + 5) % 256) as u8 as i8).collect();
        let x = (0..n)
            .map(|i| ((i * 13) % 17) as f32 * 0.125 - 1.0)
            .collect();
        let h = (0..n)
            .map(|i| portable::f32_to_f16_approx(((i * 7) % 23) as f32 * 0.25 - 2.5))
            .collect();
        (a, w, x, h)
    }

    /// Every kernel available on this machine agrees with the portable reference,
    /// including lengths that exercise the tails.
    #[test]
    fn simd_kernels_match_reference() {
        for level in supported_levels(detected_simd_level()) {
            for n in [0usize, 1, 31, 64, 300, 4096 + 77] {
                let (a, w, x, h) = data(n);
                let k = Kernel::int8(level);
                assert_eq!(
                    k.run_int8(&a, &w),
                    portable::dot_u8i8(&a, &w),
                    "{k:?} n={n}"
                );
                let k = Kernel::fp16(level);
                let (got, want) = (k.run_fp16(&h, &x), portable::dot_f16(&h, &x));
                assert!(
                    (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                    "{k:?} {got} {want}"
                );
            }
            for (rows, cols) in [(1, 1), (13, 37), (172, 64), (5, 16), (8, 100)] {
                let (_, _, w, _) = data(rows * cols);
                let (_, _, x, _) = data(cols);
                let (mut y, mut r) = (vec![0.0; rows], vec![0.0; rows]);
                Kernel::matvec(level).run_matvec(&w, &x, &mut y, rows, cols);
                portable::matvec(&w, &x, &mut r, rows, cols);
                for (g, e) in y.iter().zip(&r) {
                    assert!((g - e).abs() <= 1e-3 * (1.0 + e.abs()), "{level} {g} {e}");
                }
            }
            // The INT8 peak loops compute exact sums (a wraps past 255 within 300 reps).
            let k = Kernel::int8(level);
            let (acc, bytes) = k.int8_peak_shape();
            for (reps, a, b) in [(300u64, 3u8, 5i8), (7, 250, -9)] {
                let want = portable::int8_peak_expected(reps, a, b, acc, bytes);
                assert_eq!(k.run_int8_peak(reps, a, b), want, "{k:?} {reps} {a} {b}");
            }
            let k = Kernel::fp32(level);
            let v = k.run_fp32(1000, 0.999, 0.001);
            assert!(v.is_finite() && v > 0.0);
            assert!(k.fp32_flops_per_rep() >= 32);
        }
    }

    #[test]
    fn scalar_level_selects_portable() {
        for k in [
            Kernel::fp32(SimdLevel::Scalar),
            Kernel::fp16(SimdLevel::Scalar),
            Kernel::int8(SimdLevel::Scalar),
            Kernel::matvec(SimdLevel::Scalar),
        ] {
            assert_eq!(k.level, SimdLevel::Scalar);
            assert!(k.name().starts_with("portable"));
        }
    }
}
