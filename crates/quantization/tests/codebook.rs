//! Whole-checkpoint codebook quantization on a tiny Llama: every linear becomes a 2/3/4-bit
//! codebook tensor, the file round trips, GPTQ onto the levels does not lose to nearest-level on
//! the layer outputs, and the settings refuse what they cannot do.

mod common;

use common::tiny_llama;
use squish_core::checkpoint::{self, TensorData};
use squish_core::codebook::CbScales;
use squish_core::data::Rng;
use squish_core::model::CpuBackend;
use squish_quant::{
    Calibration, CodebookMode, CodebookSpec, GptqConfig, Method, QuantConfig, QuantFormat,
    QuantMethod, QuantSettings, quantize_checkpoint,
};

fn windows(n: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            (0..len)
                .map(|j| if j == 0 { 1 } else { rng.below(40) as u32 })
                .collect()
        })
        .collect()
}

#[test]
fn every_linear_becomes_a_codebook_tensor_at_2_3_and_4_bits() {
    let ckpt = tiny_llama(1, 0.3);
    let cal =
        Calibration::collect(&ckpt, &windows(12, 32, 2), &CpuBackend::default().device()).unwrap();
    for (bits, scales) in (2..=4u32).flat_map(|b| [(b, CbScales::F16), (b, CbScales::Log8)]) {
        let fmt = QuantFormat::new(4, Some(16), false).unwrap();
        let mut errs = Vec::new();
        for method in [Method::Rtn, Method::Gptq(GptqConfig::default())] {
            let mut cfg = QuantConfig::new(fmt, method);
            cfg.codebook = Some(CodebookSpec {
                bits,
                learned: true,
                scales,
            });
            let (q, report) = quantize_checkpoint(&ckpt, &cfg, Some(&cal)).unwrap();
            assert_eq!(q.provenance.stage, "codebook");
            assert_eq!(report.bits, bits);
            assert!(report.method.ends_with("+codebook"), "{}", report.method);
            for (name, t) in q.weights.iter() {
                match &t.data {
                    TensorData::Codebook(c) => {
                        assert_eq!(c.bits, bits, "{name}");
                        assert_eq!(c.scale_format, scales, "{name}");
                        assert_eq!(c.group, 16.min(c.cols), "{name}");
                        assert!(c.levels.windows(2).all(|p| p[0] <= p[1]));
                    }
                    _ => assert!(name.contains("norm"), "{name} not quantized"),
                }
            }
            let bytes = checkpoint::to_bytes(&q).unwrap();
            assert_eq!(checkpoint::load_bytes(&bytes).unwrap(), q);
            let (q2, _) = quantize_checkpoint(&ckpt, &cfg, Some(&cal)).unwrap();
            assert_eq!(checkpoint::to_bytes(&q2).unwrap(), bytes, "deterministic");
            errs.push(report.mean_output_error().unwrap());
        }
        println!(
            "cb{bits} {scales:?}: mean output error nearest {:.4}, gptq {:.4}",
            errs[0], errs[1]
        );
        assert!(
            errs[1] <= errs[0] * 1.05,
            "cb{bits}: gptq {} vs nearest {}",
            errs[1],
            errs[0]
        );
    }
}

#[test]
fn settings_refuse_what_codebooks_cannot_do() {
    let base = |bits, method, asym| QuantSettings {
        bits,
        group: 64,
        asym,
        method,
        quantize_embedding: true,
        small: Default::default(),
        awq: None,
        gptq: GptqConfig::default(),
        mse: Default::default(),
        qat: None,
        codebook: CodebookMode::Tensor,
        codebook_scales: Default::default(),
    };
    let ok = base(3, QuantMethod::Gptq, false).quant_config().unwrap();
    assert_eq!(
        ok.codebook,
        Some(CodebookSpec {
            bits: 3,
            learned: true,
            scales: CbScales::Log8,
        })
    );
    assert!(base(3, QuantMethod::Rtn, false).needs_calibration());
    for (bits, method, asym, why) in [
        (5, QuantMethod::Rtn, false, "2, 3 or 4"),
        (8, QuantMethod::Gptq, false, "2, 3 or 4"),
        (4, QuantMethod::Rtn, true, "symmetric"),
        (4, QuantMethod::Mse, false, "not mse"),
    ] {
        let e = base(bits, method, asym)
            .quant_config()
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{bits} {method:?} {asym}: {e}");
    }
    // The default stays the uniform grid, and its serialized settings do not change.
    let uni: QuantSettings = toml::from_str("bits = 4\ngroup = 64\nmethod = \"rtn\"").unwrap();
    assert_eq!(uni.codebook, CodebookMode::None);
    assert!(uni.quant_config().unwrap().codebook.is_none());
    assert!(!serde_json::to_string(&uni).unwrap().contains("codebook"));
    assert!(
        !serde_json::to_string(&uni.quant_config().unwrap())
            .unwrap()
            .contains("codebook")
    );
    // AWQ is refused with a codebook.
    let ckpt = tiny_llama(1, 0.3);
    let mut cfg = QuantConfig::new(QuantFormat::new(4, Some(16), false).unwrap(), Method::Rtn);
    cfg.codebook = Some(CodebookSpec {
        bits: 4,
        learned: false,
        scales: CbScales::F16,
    });
    cfg.awq = Some(Default::default());
    let cal =
        Calibration::collect(&ckpt, &windows(2, 16, 1), &CpuBackend::default().device()).unwrap();
    let e = quantize_checkpoint(&ckpt, &cfg, Some(&cal))
        .unwrap_err()
        .to_string();
    assert!(e.contains("without AWQ"), "{e}");
}
