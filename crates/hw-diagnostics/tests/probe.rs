//! Integration tests: run the probe on this machine (quick mode) and check it against
//! `/proc/cpuinfo` and loose sanity ranges. Probes are serialised so benchmarks don't contend.

use std::sync::{Mutex, OnceLock};

use squish_hwdiag::{HardwareReport, ProbeOptions, SimdLevel, probe_with, write_reports};

static LOCK: Mutex<()> = Mutex::new(());

fn quick(force: Option<SimdLevel>) -> HardwareReport {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    probe_with(&ProbeOptions {
        quick: true,
        force,
        honour_env: false,
        ..Default::default()
    })
}

fn report() -> &'static HardwareReport {
    static R: OnceLock<HardwareReport> = OnceLock::new();
    R.get_or_init(|| quick(None))
}

fn cpuinfo_flags() -> Option<Vec<String>> {
    let t = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    t.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "flags").then(|| v.split_whitespace().map(String::from).collect())
    })
}

#[test]
#[cfg(target_arch = "x86_64")]
fn simd_features_match_proc_cpuinfo() {
    let r = report();
    let Some(flags) = cpuinfo_flags() else {
        eprintln!("no /proc/cpuinfo flags; skipping comparison");
        return;
    };
    let has = |f: &str| flags.iter().any(|x| x == f);
    // (our key, kernel flag)
    for (key, flag) in [
        ("sse4.2", "sse4_2"),
        ("avx", "avx"),
        ("avx2", "avx2"),
        ("fma", "fma"),
        ("f16c", "f16c"),
        ("avx512f", "avx512f"),
        ("avx512bw", "avx512bw"),
        ("avx512vl", "avx512vl"),
        ("avx512vnni", "avx512_vnni"),
        ("avx512bf16", "avx512_bf16"),
        ("avxvnni", "avx_vnni"),
        ("amx_tile", "amx_tile"),
        ("amx_int8", "amx_int8"),
    ] {
        assert_eq!(
            r.simd.features.get(key).copied(),
            Some(has(flag)),
            "feature {key} vs /proc/cpuinfo flag {flag}"
        );
    }
    // The machines this project runs on have AVX2+FMA; the level must follow.
    if has("avx2") && has("fma") {
        assert!(r.simd.detected >= SimdLevel::Avx2);
    }
    if has("avx512_vnni") && has("avx512bw") && has("avx512vl") {
        assert_eq!(r.simd.detected, SimdLevel::Avx512Vnni);
    }
}

#[test]
fn basic_facts_are_sane() {
    let r = report();
    assert_eq!(r.schema_version, squish_hwdiag::SCHEMA_VERSION);
    assert!(r.cpu.available_parallelism >= 1);
    assert_eq!(r.cpu.arch, std::env::consts::ARCH);
    if std::path::Path::new("/proc/meminfo").exists() {
        assert!(r.memory.total_bytes.unwrap_or(0) > 64 << 20);
    }
    if std::path::Path::new("/proc/sys/kernel/osrelease").exists() {
        assert!(r.os.kernel_release.is_some());
    }
    assert!(
        r.toolchain
            .rustc
            .as_deref()
            .unwrap_or("")
            .starts_with("rustc")
    );
    assert!(!r.gpu.looked_for.is_empty());
    assert!(
        r.probe_ms > 0.0 && r.probe_ms < 20_000.0,
        "probe took {} ms",
        r.probe_ms
    );
}

#[test]
fn benchmark_figures_are_plausible() {
    let r = report();
    let b = r.benchmarks.as_ref().expect("benchmarks ran");
    let per_thread = b.fp32_1t.best;
    assert!(
        (1.0..500.0).contains(&per_thread),
        "fp32 {per_thread} GFLOPS"
    );
    // The all-thread figure is only checked for plausibility: how it compares with one thread
    // is a speed question (another process on a 2-vCPU host can halve it), not correctness.
    let threads = r.cpu.logical_threads.unwrap_or(1).max(1) as f64;
    assert!(
        b.fp32_all.best > 0.1 && b.fp32_all.best < 500.0 * threads,
        "all-thread {}",
        b.fp32_all.best
    );
    assert!(b.fp16_1t.best > 0.1 && b.fp16_1t.best < 1000.0);
    assert!(b.int8_1t.best > 0.1 && b.int8_1t.best < 5000.0);
    let peak = b.int8_peak_1t.as_ref().expect("INT8 peak measured");
    assert!(peak.best > 0.1 && peak.best < 20000.0, "int8 peak {peak:?}");
    assert_eq!((peak.level, peak.unit.as_str()), (b.int8_1t.level, "GOPS"));
    // Which of INT8 and FP32 is faster is a speed comparison, not a correctness property: it
    // lives in `cargo xtask diagnose` / the criterion bench, not in a unit test (on a loaded
    // shared host, timings taken at different moments made it flaky).
    let mem = b.mem_read_1t.as_ref().expect("bandwidth measured");
    assert!(mem.best > 0.2 && mem.best < 2000.0, "mem {} GB/s", mem.best);
    assert!(b.mem_buffer_bytes >= 4 * r.cpu.llc_bytes().unwrap_or(0));
    assert!(!b.matvec.is_empty());
    for m in &b.matvec {
        assert!(m.ns_per_call > 1.0 && m.gflops > 0.05, "{m:?}");
        assert!(m.level <= r.simd.effective || m.level == SimdLevel::Scalar);
    }
    assert!(r.recommendations.threads >= 1);
    assert!(r.recommendations.threads <= r.cpu.available_parallelism);
    assert!(r.recommendations.simd_level.within(r.simd.effective));
    assert_ne!(r.assessment.overall, squish_hwdiag::Rating::Unknown);
}

#[test]
fn forcing_scalar_gives_scalar_figures() {
    let r = quick(Some(SimdLevel::Scalar));
    assert_eq!(r.simd.effective, SimdLevel::Scalar);
    assert_eq!(r.simd.forced, Some(SimdLevel::Scalar));
    assert_eq!(r.recommendations.simd_level, SimdLevel::Scalar);
    let b = r.benchmarks.as_ref().unwrap();
    let peak = b.int8_peak_1t.as_ref().expect("INT8 peak measured");
    for x in [&b.fp32_1t, &b.fp32_all, &b.fp16_1t, &b.int8_1t, peak] {
        assert_eq!(x.level, SimdLevel::Scalar);
        assert!(x.kernel.starts_with("portable"), "{}", x.kernel);
        assert!(x.best.is_finite() && x.best > 0.0);
    }
    assert!(b.matvec.iter().all(|m| m.level == SimdLevel::Scalar));
    assert!(r.assessment.summary.contains("capped"));
}

#[test]
fn forcing_above_hardware_is_capped() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let r = probe_with(&ProbeOptions {
        force: Some(SimdLevel::Avx512Vnni),
        skip_benchmarks: true,
        honour_env: false,
        ..Default::default()
    });
    assert!(r.simd.effective <= r.simd.detected || r.simd.effective == SimdLevel::Scalar);
    assert!(r.benchmarks.is_none());
    assert_eq!(r.recommendations.simd_level, r.simd.effective);
}

#[test]
fn json_round_trip() {
    let r = report();
    let j = r.to_json().unwrap();
    let back = HardwareReport::from_json(&j).unwrap();
    assert_eq!(&back, r);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["schema_version"], 1);
    for k in [
        "cpu",
        "memory",
        "os",
        "gpu",
        "toolchain",
        "simd",
        "benchmarks",
        "assessment",
        "recommendations",
        "warnings",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert!(v["simd"]["detected"].is_string());
}

#[test]
fn markdown_has_every_section() {
    let md = report().to_markdown();
    for s in [
        "# Hardware check",
        "## Summary",
        "## CPU",
        "## Memory",
        "## Operating system",
        "## GPU",
        "## Toolchain",
        "## SIMD",
        "## Benchmarks",
        "## Assessment",
        "## Recommendations",
        "## Upgrade advice",
        "## Warnings",
    ] {
        assert!(md.contains(s), "missing section {s}");
    }
    assert!(md.contains("GFLOPS") && md.contains("GB/s"));
}

#[test]
fn reports_are_written_atomically() {
    let dir = std::env::temp_dir().join(format!("squish-hwdiag-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (j, m) = write_reports(report(), &dir.join("nested")).unwrap();
    assert!(j.ends_with("phase7_hardware_check.json"));
    assert!(m.ends_with("phase7_hardware_check.md"));
    let back = HardwareReport::from_json(&std::fs::read_to_string(&j).unwrap()).unwrap();
    assert_eq!(&back, report());
    assert!(std::fs::read_to_string(&m).unwrap().contains("## Summary"));
    // Overwrite works and leaves no temp files behind.
    write_reports(report(), &dir.join("nested")).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.join("nested"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn best_simd_level_matches_detection() {
    let detected = squish_hwdiag::simd::detected_simd_level();
    let best = squish_hwdiag::best_simd_level();
    if std::env::var_os(squish_hwdiag::SIMD_ENV_VAR).is_none() {
        assert_eq!(best, detected);
    } else {
        assert!(best.within(detected));
    }
}
