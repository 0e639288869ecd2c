//! Golden tests on Karpathy's pretrained stories260K (read from ../shared/data, never copied):
//! the import reproduces llama2.c's greedy output byte for byte.

use squish_core::generate::generate;
use squish_core::llama2c;
use squish_core::model::CpuBackend;
use squish_core::model::llama::{Llama, LlamaStepper};
use squish_core::sample::Sampler;
use squish_core::shared::require_for_test;
use squish_core::tokenizer::Llama2cTokenizer;

/// `greedy_t0_256.txt` is what llama2.c `run.c` (karpathy/llama2.c @ 350e04fe) prints for
/// `run stories260K.bin -z tok512.bin -n 256 -t 0` — see ../shared/data/README.md.
#[test]
fn greedy_generation_matches_llama2c_run_c_byte_for_byte() {
    let (Some(model), Some(tok), Some(golden)) = (
        require_for_test("models/stories260K/stories260K.bin"),
        require_for_test("models/stories260K/tok512.bin"),
        require_for_test("models/stories260K/greedy_t0_256.txt"),
    ) else {
        return;
    };
    let (cfg, weights) = llama2c::import(&model).unwrap();
    let tokenizer = Llama2cTokenizer::from_file(&tok, cfg.vocab_size).unwrap();
    let llama = Llama::from_weights(&cfg, &weights, &CpuBackend::default().device()).unwrap();
    let mut out = Vec::new();
    generate(
        &mut LlamaStepper::new(&llama),
        &tokenizer,
        "",
        256,
        &mut Sampler::new(0.0, 0.9, 1),
        |p| out.extend_from_slice(p),
    )
    .unwrap();
    out.push(b'\n');
    let want = std::fs::read(golden).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want)
    );
}
