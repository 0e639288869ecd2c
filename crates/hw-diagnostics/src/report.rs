//! The [`HardwareReport`] type, its JSON/Markdown renderings, and atomic report writing.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::assess::{Assessment, Recommendations};
use crate::bench::{BenchResult, BenchResults};
use crate::cpu::CpuInfo;
use crate::simd::{SimdFeatures, SimdLevel};
use crate::system::{GpuInfo, MemoryInfo, OsInfo, ToolchainInfo};
use crate::{Error, Result};

/// Version of the JSON layout. Bumped on any breaking change (renamed/removed/retyped field);
/// adding optional fields does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// Base file name of the reports written by [`write_reports`].
pub const REPORT_BASENAME: &str = "phase7_hardware_check";

/// SIMD detection and the path in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimdInfo {
    /// Detected features (see [`SimdFeatures`] for the keys).
    pub features: SimdFeatures,
    /// Best level the hardware supports.
    pub detected: SimdLevel,
    /// Cap requested via `ProbeOptions::force` or `SQUISH_SIMD`, if any.
    pub forced: Option<SimdLevel>,
    /// Where the cap came from (`options`, `env:SQUISH_SIMD`), if any.
    pub forced_by: Option<String>,
    /// Level the benchmarks ran at (detected, capped by `forced`).
    pub effective: SimdLevel,
}

/// The full hardware check. Serialises to the documented JSON schema (see the crate docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareReport {
    /// [`SCHEMA_VERSION`] at the time of writing.
    pub schema_version: u32,
    /// Version of `squish-hwdiag` that produced the report.
    pub crate_version: String,
    /// Unix time (seconds) when the probe started.
    pub generated_unix_s: u64,
    /// Wall time of the whole probe, ms.
    pub probe_ms: f64,
    /// Whether quick (shortened) benchmark budgets were used.
    pub quick: bool,
    /// CPU identification, topology, caches, frequency.
    pub cpu: CpuInfo,
    /// RAM.
    pub memory: MemoryInfo,
    /// Operating system.
    pub os: OsInfo,
    /// GPU presence.
    pub gpu: GpuInfo,
    /// Build toolchain and compiled-in features.
    pub toolchain: ToolchainInfo,
    /// SIMD detection and the path in force.
    pub simd: SimdInfo,
    /// Measured figures (`None` when benchmarks were skipped).
    pub benchmarks: Option<BenchResults>,
    /// Ratings.
    pub assessment: Assessment,
    /// Thread count, kernel path and upgrade advice.
    pub recommendations: Recommendations,
    /// Anything odd noticed while probing (unreadable files, ignored env values ...).
    pub warnings: Vec<String>,
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

fn bytes(v: Option<u64>) -> String {
    match v {
        None => "unknown".into(),
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{} KiB", b / 1024),
    }
}

fn bench_row(md: &mut String, name: &str, r: &BenchResult) {
    let _ = writeln!(
        md,
        "| {name} | {:.1} {} | {:.1} | {} | {} | {} | {} |",
        r.best, r.unit, r.median, r.threads, r.level, r.kernel, r.samples
    );
}

impl HardwareReport {
    /// Pretty-printed JSON (the documented schema).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(Error::Json)
    }

    /// Parses a report written by [`HardwareReport::to_json`].
    pub fn from_json(s: &str) -> Result<HardwareReport> {
        serde_json::from_str(s).map_err(Error::Json)
    }

    /// Human-readable Markdown report with sections Summary, CPU, Memory, Operating system, GPU,
    /// Toolchain, SIMD, Benchmarks, Assessment, Recommendations, Upgrade advice and Warnings.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let c = &self.cpu;
        let _ = writeln!(md, "# Hardware check (squish phase 7)\n");
        let _ = writeln!(
            md,
            "schema v{}, squish-hwdiag {}, probe took {:.1} s{}.\n",
            self.schema_version,
            self.crate_version,
            self.probe_ms / 1e3,
            if self.quick { " (quick mode)" } else { "" }
        );
        let _ = writeln!(md, "## Summary\n\n**{}**\n", self.assessment.summary);

        let _ = writeln!(md, "## CPU\n");
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| Architecture | {} |", c.arch);
        let _ = writeln!(md, "| Vendor | {} |", opt(&c.vendor));
        let _ = writeln!(md, "| Model | {} |", opt(&c.model));
        let _ = writeln!(md, "| Sockets | {} |", opt(&c.sockets));
        let _ = writeln!(md, "| Physical cores | {} |", opt(&c.physical_cores));
        let _ = writeln!(
            md,
            "| Logical threads (online) | {} |",
            opt(&c.logical_threads)
        );
        let _ = writeln!(
            md,
            "| Usable by this process | {} |",
            c.available_parallelism
        );
        let freq = c.frequency_mhz.map(|f| format!("{f:.0} MHz"));
        let _ = writeln!(
            md,
            "| Frequency | {} (max {}; source {}) |",
            opt(&freq),
            opt(&c.max_frequency_mhz.map(|f| format!("{f:.0} MHz"))),
            opt(&c.frequency_source)
        );
        for cache in &c.caches {
            let _ = writeln!(
                md,
                "| L{} {} cache | {} (line {} B, shared by {} threads) |",
                cache.level,
                cache.kind,
                bytes(Some(cache.size_bytes)),
                opt(&cache.line_bytes),
                opt(&cache.shared_by_logical)
            );
        }
        if c.caches.is_empty() {
            let _ = writeln!(md, "| Caches | unknown |");
        }

        let m = &self.memory;
        let _ = writeln!(md, "\n## Memory\n");
        let _ = writeln!(md, "- Total: {}", bytes(m.total_bytes));
        let _ = writeln!(md, "- Available: {}", bytes(m.available_bytes));
        let _ = writeln!(md, "- Swap: {}", bytes(m.swap_total_bytes));
        let _ = writeln!(
            md,
            "- cgroup limit: {}",
            m.cgroup_limit_bytes
                .map_or("none".to_string(), |v| bytes(Some(v)))
        );

        let o = &self.os;
        let _ = writeln!(md, "\n## Operating system\n");
        let _ = writeln!(
            md,
            "- {} / {} {} / {}",
            o.family,
            opt(&o.kernel),
            opt(&o.kernel_release),
            opt(&o.distribution)
        );
        let _ = writeln!(
            md,
            "- 1-minute load average at start: {}",
            opt(&o.load_average_1m.map(|l| format!("{l:.2}")))
        );

        let _ = writeln!(md, "\n## GPU\n");
        let _ = writeln!(md, "- Looked for: {}", self.gpu.looked_for.join(", "));
        if self.gpu.found.is_empty() {
            let _ = writeln!(md, "- Found: none");
        }
        for d in &self.gpu.found {
            let _ = writeln!(md, "- Found: {} (vendor {})", d.path, opt(&d.vendor));
        }
        if let Some(v) = &self.gpu.nvidia_driver {
            let _ = writeln!(md, "- NVIDIA driver: {v}");
        }

        let t = &self.toolchain;
        let _ = writeln!(md, "\n## Toolchain\n");
        let _ = writeln!(md, "- rustc: {}", opt(&t.rustc));
        let _ = writeln!(
            md,
            "- target: {}, profile: {}, opt-level: {}",
            opt(&t.target),
            opt(&t.profile),
            opt(&t.opt_level)
        );
        let _ = writeln!(
            md,
            "- static target features: {}",
            t.static_target_features.join(" ")
        );
        let feats = if t.squish_features.is_empty() {
            "(none)".to_string()
        } else {
            t.squish_features.join(", ")
        };
        let _ = writeln!(md, "- squish features: {feats}");

        let s = &self.simd;
        let _ = writeln!(md, "\n## SIMD\n");
        let yes: Vec<&str> = s
            .features
            .iter()
            .filter(|(_, v)| **v)
            .map(|(k, _)| k.as_str())
            .collect();
        let no: Vec<&str> = s
            .features
            .iter()
            .filter(|(_, v)| !**v)
            .map(|(k, _)| k.as_str())
            .collect();
        let _ = writeln!(md, "- Present: {}", yes.join(" "));
        let _ = writeln!(md, "- Absent: {}", no.join(" "));
        let _ = writeln!(
            md,
            "- Detected level: `{}`; forced cap: {}; effective: `{}`",
            s.detected,
            s.forced.map_or("none".to_string(), |f| format!(
                "`{f}` ({})",
                s.forced_by.as_deref().unwrap_or("?")
            )),
            s.effective
        );

        let _ = writeln!(md, "\n## Benchmarks\n");
        match &self.benchmarks {
            None => {
                let _ = writeln!(md, "Not run.");
            }
            Some(b) => {
                let _ = writeln!(
                    md,
                    "Best of N samples (median also shown). An FMA counts 2 flops; a u8xi8 \
                     multiply-add counts 2 ops (one vpdpbusd lane = 8 ops). Total {:.2} s.\n",
                    b.total_ms / 1e3
                );
                let _ = writeln!(
                    md,
                    "| Benchmark | Best | Median | Threads | Level | Kernel | Samples |"
                );
                let _ = writeln!(md, "|---|---|---|---|---|---|---|");
                bench_row(&mut md, "FP32 FMA peak", &b.fp32_1t);
                bench_row(&mut md, "FP32 FMA peak (all threads)", &b.fp32_all);
                bench_row(&mut md, "FP16 weights x f32 dot (L1)", &b.fp16_1t);
                if let Some(p) = &b.int8_peak_1t {
                    bench_row(&mut md, "INT8 u8xi8 multiply-add peak", p);
                }
                bench_row(&mut md, "INT8 u8xi8 dot (L1, load-bound)", &b.int8_1t);
                let mb = bytes(Some(b.mem_buffer_bytes));
                for (name, r) in [
                    ("read", &b.mem_read_1t),
                    ("read (all threads)", &b.mem_read_all),
                ] {
                    match r {
                        Some(r) => bench_row(&mut md, &format!("Memory {name}, {mb} buffer"), r),
                        None => {
                            let _ = writeln!(md, "| Memory {name} | not measured | | | | | |");
                        }
                    }
                }
                let _ = writeln!(
                    md,
                    "\n| Matvec (f32, cache-resident) | Level | Kernel | ns/call | GFLOPS |"
                );
                let _ = writeln!(md, "|---|---|---|---|---|");
                for mv in &b.matvec {
                    let _ = writeln!(
                        md,
                        "| {}x{} | {} | {} | {:.0} | {:.2} |",
                        mv.rows, mv.cols, mv.level, mv.kernel, mv.ns_per_call, mv.gflops
                    );
                }
                let _ = writeln!(
                    md,
                    "\nCross-thread sync round trip: {}",
                    b.sync_round_trip_ns
                        .map_or("not measured".to_string(), |v| format!("{v:.0} ns"))
                );
            }
        }

        let _ = writeln!(md, "\n## Assessment\n");
        let _ = writeln!(md, "Overall: **{}**\n", self.assessment.overall.as_str());
        let _ = writeln!(md, "| Item | Value | Rating | Rule | Counts for overall |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for i in &self.assessment.items {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                i.label,
                i.display,
                i.rating.as_str(),
                i.rule,
                if i.core { "yes" } else { "no" }
            );
        }

        let r = &self.recommendations;
        let _ = writeln!(md, "\n## Recommendations\n");
        let _ = writeln!(md, "- Kernel path: `{}` — {}", r.simd_level, r.kernel_rule);
        let _ = writeln!(
            md,
            "- Decode threads: **{}** — {}",
            r.threads, r.thread_rule
        );
        let _ = writeln!(
            md,
            "- Batch threads: **{}** — {}",
            r.threads_batch, r.threads_batch_rule
        );

        let _ = writeln!(md, "\n## Upgrade advice\n");
        let _ = writeln!(md, "| Component | Advice | Expected gain |");
        let _ = writeln!(md, "|---|---|---|");
        for u in &r.upgrades {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                u.component, u.advice, u.expected_gain
            );
        }

        let _ = writeln!(md, "\n## Warnings\n");
        if self.warnings.is_empty() {
            let _ = writeln!(md, "None.");
        }
        for w in &self.warnings {
            let _ = writeln!(md, "- {w}");
        }
        md
    }
}

/// Writes `phase7_hardware_check.json` and `phase7_hardware_check.md` into `dir` (created if
/// missing). Each file is written atomically: temp file in the same directory, fsync, rename,
/// then the directory is fsynced. Returns (json path, markdown path).
pub fn write_reports(report: &HardwareReport, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    write_reports_named(report, dir, REPORT_BASENAME)
}

/// Writes `<dir>/<basename>.json` and `<dir>/<basename>.md` as [`write_reports`] does.
pub fn write_reports_named(
    report: &HardwareReport,
    dir: &Path,
    basename: &str,
) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let json = dir.join(format!("{basename}.json"));
    let md = dir.join(format!("{basename}.md"));
    let mut json_text = report.to_json()?;
    json_text.push('\n');
    write_atomic(&json, json_text.as_bytes())?;
    write_atomic(&md, report.to_markdown().as_bytes())?;
    // Make the renames durable. Some filesystems refuse to fsync a directory; that is not fatal.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((json, md))
}

/// Writes `data` to `path` via a temp file in the same directory, fsync and rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
