//! `xtask quantize`'s flags: how each maps onto the QAT and PTQ settings, and the defaults a codebook implies.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    a: QuantizeArgs,
}

fn args(extra: &[&str]) -> QuantizeArgs {
    let mut v = vec!["quantize", "--checkpoint", "in", "--out", "out"];
    v.extend_from_slice(extra);
    Cli::try_parse_from(v).unwrap().a
}

/// `--method qat` means what `method = "qat"` means in a pipeline config: the same
/// squish-quant configuration (GPTQ recorded, as `int4_native` records it), QAT settings with
/// the given training, and the `[..quant.qat]` table only for QAT.
#[test]
fn qat_flags_map_onto_the_pipeline_settings() {
    let flags = args(&[
        "--bits",
        "4",
        "--group",
        "64",
        "--method",
        "qat",
        "--small",
        "f16",
        "--steps",
        "200",
        "--lr",
        "1e-3",
        "--batch-size",
        "8",
        "--seq-len",
        "512",
        "--warmup",
        "8",
    ]);
    let cli = settings(&flags).unwrap();
    let table: QuantSettings = toml::from_str(
        "bits = 4\ngroup = 64\nmethod = \"qat\"\nsmall = \"f16\"\n[qat]\ninit = \"mse\"\n\
         [qat.train]\nsteps = 200\nbatch_size = 8\nseq_len = 512\nlr = 1e-3\nmin_lr = 0.0\n\
         warmup_steps = 8\nweight_decay = 0.0\ndistill_alpha = 0.5",
    )
    .unwrap();
    assert_eq!(cli.quant_config().unwrap(), table.quant_config().unwrap());
    let (c, t) = (cli.qat.as_ref().unwrap(), table.qat.as_ref().unwrap());
    assert_eq!((c.init, &c.scales), (t.init, &t.scales));
    let pick = |q: &QatSettings| {
        let t = &q.train;
        (
            t.steps,
            t.batch_size,
            t.seq_len,
            t.lr,
            t.min_lr,
            t.warmup_steps,
            t.distill_alpha,
        )
    };
    assert_eq!(pick(c), pick(t));
    assert!(
        settings(&args(&["--method", "gptq"]))
            .unwrap()
            .qat
            .is_none()
    );
}

#[test]
fn ptq_flags_reach_the_method_parameters() {
    let s = settings(&args(&[
        "--method",
        "mse",
        "--unweighted",
        "--group",
        "row",
        "--awq",
    ]))
    .unwrap();
    assert_eq!(s.group, 0);
    assert!(!s.mse.weighted);
    assert!(s.awq.is_some());
    assert!(s.needs_calibration(), "AWQ needs statistics");
    let g = settings(&args(&[
        "--method",
        "gptq",
        "--act-order",
        "--percdamp",
        "0.05",
    ]))
    .unwrap();
    assert!(g.gptq.act_order);
    assert_eq!(g.gptq.percdamp, 0.05);
    assert!(settings(&args(&["--method", "awq"])).is_err());
    let cb = settings(&args(&[
        "--bits",
        "3",
        "--codebook",
        "tensor",
        "--method",
        "gptq",
    ]))
    .unwrap()
    .quant_config()
    .unwrap()
    .codebook
    .unwrap();
    assert_eq!((cb.bits, cb.learned), (3, true));
    assert!(
        settings(&args(&["--bits", "3"])).is_err(),
        "3 bits needs a codebook"
    );
    assert!(settings(&args(&["--codebook", "bogus"])).is_err());
    assert!(settings(&args(&["--bits", "2", "--codebook", "tensor", "--asym"])).is_err());
    assert!(settings(&args(&["--group", "0"])).is_err());
}

/// `--group auto` / `--small auto`: g64 and F16 small tensors with a codebook, g32 and F32
/// otherwise; the codebook QAT of must-show 7 needs no other flags.
#[test]
fn auto_defaults_follow_the_codebook() {
    let cb = settings(&args(&["--codebook", "tensor", "--method", "qat"])).unwrap();
    assert_eq!((cb.group, cb.small), (64, SmallFormat::F16));
    assert_eq!(cb.codebook_scales, CbScales::Log8);
    let f16 = settings(&args(&["--codebook", "tensor", "--cb-scales", "f16"])).unwrap();
    assert_eq!(f16.codebook_scales, CbScales::F16);
    let e = settings(&args(&["--codebook", "tensor", "--cb-scales", "u4"])).unwrap_err();
    assert!(e.to_string().contains("--cb-scales"), "{e}");
    let q = cb.qat.as_ref().unwrap();
    assert_eq!(
        (q.train.steps, q.train.lr, q.train.min_lr),
        (1000, 1e-3, 0.0)
    );
    assert!(cb.needs_calibration());
    let int = settings(&args(&[])).unwrap();
    assert_eq!((int.group, int.small), (32, SmallFormat::F32));
    let row = settings(&args(&["--codebook", "tensor", "--group", "row"])).unwrap();
    assert_eq!(row.group, 0);
}
