//! The integer building blocks of the row-interleaved INT4 kernels (`super::q4il`): splitting a
//! 32-byte load of nibbles (and, for codebook weights, decoding them through a 16-byte table in
//! registers with `vpshufb`), and the exact per-row integer sums — `vpdpbusd` with VNNI, i16
//! `vpmaddubsw` sums widened once per chunk without.

use std::arch::x86_64::*;

/// The nibble → code tables of a LUT weight (`q.lut`), each 16 bytes in both 128-bit lanes:
/// the codes themselves (for `vpdpbusd`) and their low / high nibbles (for `vpmaddubsw`, whose
/// i16 pair sums would saturate on 8-bit codes).
#[derive(Clone, Copy)]
pub(super) struct Tables {
    u: __m256i,
    lo: __m256i,
    hi: __m256i,
}

impl Tables {
    /// The registers for `lut` (zero tables when `None`; they are then never read).
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(super) unsafe fn new(lut: Option<[u8; 16]>) -> Tables {
        let t = lut.unwrap_or([0; 16]);
        let split = |f: fn(u8) -> u8| -> [u8; 16] { std::array::from_fn(|k| f(t[k])) };
        let (lo, hi) = (split(|u| u & 0xF), split(|u| u >> 4));
        // SAFETY: AVX2 (this function's contract); each array holds 16 bytes.
        unsafe {
            let bc = |a: &[u8; 16]| {
                _mm256_broadcastsi128_si256(_mm_loadu_si128(a.as_ptr() as *const __m128i))
            };
            Tables {
                u: bc(&t),
                lo: bc(&lo),
                hi: bc(&hi),
            }
        }
    }
}

/// The weight operands of one 32-byte load (8 rows × 8 elements, low and high nibble halves):
/// INT4: the nibbles; LUT with VNNI: their 8-bit codes; LUT without: the codes' low nibbles
/// in `lo`/`hi` and high nibbles in `lo_h`/`hi_h` (`u = 16·high + low`).
#[derive(Clone, Copy)]
pub(super) struct WOps {
    lo: __m256i,
    hi: __m256i,
    lo_h: __m256i,
    hi_h: __m256i,
}

/// Splits (and, when `L`, decodes through the tables) 32 code bytes. `P` (with `L` and `V`):
/// decode with `vpermb`, whose 256-bit form reads index bits 0–4 only; the table holds the 16
/// codes twice, so bit 4 (a bit of the neighbouring nibble) selects the same code and neither
/// nibble needs a mask — 1 shift + 2 `vpermb` per load instead of 2 masks + 1 shift + 2 `vpshufb`.
///
/// # Safety
/// AVX2, plus AVX-512 VL + VBMI when `P`.
#[inline(always)]
pub(super) unsafe fn decode<const V: bool, const L: bool, const P: bool>(
    w: __m256i,
    m: __m256i,
    t: &Tables,
) -> WOps {
    // SAFETY: AVX2 (+ VBMI and VL when `P`; this function's contract).
    unsafe {
        if L && V && P {
            let lo = _mm256_permutexvar_epi8(w, t.u);
            let hi = _mm256_permutexvar_epi8(_mm256_srli_epi16::<4>(w), t.u);
            return WOps {
                lo,
                hi,
                lo_h: lo,
                hi_h: hi,
            };
        }
        let lo = _mm256_and_si256(w, m);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(w), m);
        match (L, V) {
            (false, _) => WOps {
                lo,
                hi,
                lo_h: lo,
                hi_h: hi,
            },
            (true, true) => {
                let (lo, hi) = (_mm256_shuffle_epi8(t.u, lo), _mm256_shuffle_epi8(t.u, hi));
                WOps {
                    lo,
                    hi,
                    lo_h: lo,
                    hi_h: hi,
                }
            }
            (true, false) => WOps {
                lo: _mm256_shuffle_epi8(t.lo, lo),
                hi: _mm256_shuffle_epi8(t.lo, hi),
                lo_h: _mm256_shuffle_epi8(t.hi, lo),
                hi_h: _mm256_shuffle_epi8(t.hi, hi),
            },
        }
    }
}

/// Per-token integer partial sums: i32 lanes (one per row), plus (without VNNI) the i16 sums of
/// the current chunk — `s16` for nibbles or codes' low nibbles, `s16h` for codes' high nibbles.
#[derive(Clone, Copy)]
pub(super) struct ISum {
    pub i32: __m256i,
    s16: __m256i,
    s16h: __m256i,
}

impl ISum {
    /// Zero sums.
    ///
    /// # Safety
    /// AVX.
    #[inline(always)]
    pub(super) unsafe fn zero() -> ISum {
        // SAFETY: AVX (this function's contract).
        let z = unsafe { _mm256_setzero_si256() };
        ISum {
            i32: z,
            s16: z,
            s16h: z,
        }
    }

    /// `+= lo·xl + hi·xh` per i32 lane (4 byte products each) with VNNI, or into the i16
    /// partial sums without (widened per chunk by [`ISum::widen`]).
    ///
    /// # Safety
    /// AVX2, plus AVX-512 VL + VNNI when `V`.
    #[inline(always)]
    pub(super) unsafe fn madd2<const V: bool, const L: bool>(
        &mut self,
        w: &WOps,
        xl: __m256i,
        xh: __m256i,
    ) {
        // SAFETY: the caller's features.
        unsafe {
            if V {
                self.i32 = _mm256_dpbusd_epi32(self.i32, w.lo, xl);
                self.i32 = _mm256_dpbusd_epi32(self.i32, w.hi, xh);
            } else {
                self.s16 = _mm256_add_epi16(self.s16, _mm256_maddubs_epi16(w.lo, xl));
                self.s16 = _mm256_add_epi16(self.s16, _mm256_maddubs_epi16(w.hi, xh));
                if L {
                    self.s16h = _mm256_add_epi16(self.s16h, _mm256_maddubs_epi16(w.lo_h, xl));
                    self.s16h = _mm256_add_epi16(self.s16h, _mm256_maddubs_epi16(w.hi_h, xh));
                }
            }
        }
    }

    /// Without VNNI: adds the chunk's i16 sums to the i32 lanes (`s16 + 16·s16h`) and clears
    /// them. Exact: a chunk's 4 sub-steps of nibble × int8 pair sums stay ≤ 8·2·15·127 = 30,480.
    ///
    /// # Safety
    /// AVX2.
    #[inline(always)]
    pub(super) unsafe fn widen<const V: bool, const L: bool>(&mut self) {
        if V {
            return;
        }
        // SAFETY: AVX2 (this function's contract).
        unsafe {
            let ones = _mm256_set1_epi16(1);
            self.i32 = _mm256_add_epi32(self.i32, _mm256_madd_epi16(self.s16, ones));
            self.s16 = _mm256_setzero_si256();
            if L {
                let sixteen = _mm256_set1_epi16(16);
                self.i32 = _mm256_add_epi32(self.i32, _mm256_madd_epi16(self.s16h, sixteen));
                self.s16h = _mm256_setzero_si256();
            }
        }
    }
}
