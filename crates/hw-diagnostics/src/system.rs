//! Memory, operating system, GPU presence and toolchain facts.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// RAM as the kernel reports it (`/proc/meminfo`), plus a cgroup v2 limit when one applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryInfo {
    /// `MemTotal`, bytes.
    pub total_bytes: Option<u64>,
    /// `MemAvailable`, bytes (memory usable without swapping).
    pub available_bytes: Option<u64>,
    /// `SwapTotal`, bytes.
    pub swap_total_bytes: Option<u64>,
    /// cgroup v2 `memory.max` of this process's cgroup, bytes (`None` = unlimited/unknown).
    pub cgroup_limit_bytes: Option<u64>,
}

impl MemoryInfo {
    /// Memory this process can realistically use: `available`, capped by the cgroup limit.
    pub fn usable_bytes(&self) -> Option<u64> {
        match (self.available_bytes, self.cgroup_limit_bytes) {
            (Some(a), Some(c)) => Some(a.min(c)),
            (a, c) => a.or(c),
        }
    }
}

/// Operating system facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsInfo {
    /// `std::env::consts::OS`.
    pub family: String,
    /// Kernel type (`/proc/sys/kernel/ostype`, e.g. `Linux`).
    pub kernel: Option<String>,
    /// Kernel release (`/proc/sys/kernel/osrelease`, i.e. `uname -r`).
    pub kernel_release: Option<String>,
    /// Distribution (`PRETTY_NAME` from `/etc/os-release`).
    pub distribution: Option<String>,
    /// 1-minute load average when the probe started (`/proc/loadavg`). A value near or above
    /// the thread count means other work competed with the benchmarks.
    pub load_average_1m: Option<f64>,
}

/// A GPU-like device that was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// Path that revealed it.
    pub path: String,
    /// Vendor if known (`nvidia`, `amd`, `intel`, or a PCI vendor id).
    pub vendor: Option<String>,
}

/// GPU presence. squish itself runs on the CPU; this only says what is there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Every path that was checked (so "none found" is verifiable).
    pub looked_for: Vec<String>,
    /// Devices found.
    pub found: Vec<GpuDevice>,
    /// NVIDIA driver version (`/proc/driver/nvidia/version`), if present.
    pub nvidia_driver: Option<String>,
}

impl GpuInfo {
    /// True if any GPU-like device node was found.
    pub fn present(&self) -> bool {
        !self.found.is_empty()
    }
}

/// How this crate was built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolchainInfo {
    /// `rustc --version` captured by `build.rs`.
    pub rustc: Option<String>,
    /// Target triple.
    pub target: Option<String>,
    /// Cargo profile (`release` / `debug`).
    pub profile: Option<String>,
    /// Optimisation level.
    pub opt_level: Option<String>,
    /// Target features enabled for the whole build (`-C target-cpu`/`target-feature`); the
    /// benchmarks do not depend on these (they use runtime dispatch).
    pub static_target_features: Vec<String>,
    /// squish features compiled in: this crate's cargo features plus any the caller listed in
    /// [`ProbeOptions::features`](crate::ProbeOptions::features).
    pub squish_features: Vec<String>,
}

fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Reads `/proc/meminfo` and the cgroup limit.
pub fn probe_memory() -> MemoryInfo {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mut m = parse_meminfo(&text);
    m.cgroup_limit_bytes = cgroup_memory_limit();
    m
}

/// Parses a `/proc/meminfo` text (values in kB).
pub fn parse_meminfo(text: &str) -> MemoryInfo {
    let kb = |key: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if k.trim() != key {
                return None;
            }
            let mut it = v.split_whitespace();
            let n: u64 = it.next()?.parse().ok()?;
            let mul = match it.next() {
                Some("kB") | None => 1024,
                Some("B") => 1,
                Some(_) => return None,
            };
            n.checked_mul(mul)
        })
    };
    MemoryInfo {
        total_bytes: kb("MemTotal"),
        available_bytes: kb("MemAvailable"),
        swap_total_bytes: kb("SwapTotal"),
        cgroup_limit_bytes: None,
    }
}

fn cgroup_memory_limit() -> Option<u64> {
    // cgroup v2: "0::/path" in /proc/self/cgroup.
    let cg = fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let base = Path::new("/sys/fs/cgroup");
    let dir = base.join(rel.trim_start_matches('/'));
    let v = read_trim(dir.join("memory.max")).or_else(|| read_trim(base.join("memory.max")))?;
    v.parse().ok()
}

/// Reads kernel and distribution names.
pub fn probe_os() -> OsInfo {
    let distribution = fs::read_to_string("/etc/os-release").ok().and_then(|t| {
        t.lines().find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    });
    OsInfo {
        family: std::env::consts::OS.to_string(),
        kernel: read_trim("/proc/sys/kernel/ostype"),
        kernel_release: read_trim("/proc/sys/kernel/osrelease"),
        distribution,
        load_average_1m: read_trim("/proc/loadavg")
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0),
    }
}

/// Looks for GPUs: NVIDIA device nodes, DRM render/card nodes (with PCI vendor ids from sysfs),
/// and the AMD KFD compute node.
pub fn probe_gpu() -> GpuInfo {
    let mut looked_for = Vec::new();
    let mut found = Vec::new();

    looked_for.push("/dev/nvidia[0-9]*".to_string());
    for name in list_dir("/dev") {
        let is_node = name
            .strip_prefix("nvidia")
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()));
        if is_node {
            found.push(GpuDevice {
                path: format!("/dev/{name}"),
                vendor: Some("nvidia".into()),
            });
        }
    }

    looked_for.push("/sys/class/drm/card*/device/vendor".to_string());
    for name in list_dir("/sys/class/drm") {
        let is_card = name
            .strip_prefix("card")
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()));
        if is_card {
            let vendor = read_trim(format!("/sys/class/drm/{name}/device/vendor"))
                .map(|v| pci_vendor_name(&v));
            found.push(GpuDevice {
                path: format!("/sys/class/drm/{name}"),
                vendor,
            });
        }
    }

    looked_for.push("/dev/dri/renderD*".to_string());
    let have_drm_cards = found.iter().any(|d| d.path.starts_with("/sys/class/drm"));
    for name in list_dir("/dev/dri") {
        if name.starts_with("renderD") && !have_drm_cards {
            found.push(GpuDevice {
                path: format!("/dev/dri/{name}"),
                vendor: None,
            });
        }
    }

    looked_for.push("/dev/kfd".to_string());
    if Path::new("/dev/kfd").exists() {
        found.push(GpuDevice {
            path: "/dev/kfd".into(),
            vendor: Some("amd".into()),
        });
    }

    looked_for.push("/proc/driver/nvidia/version".to_string());
    let nvidia_driver = read_trim("/proc/driver/nvidia/version")
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()));

    GpuInfo {
        looked_for,
        found,
        nvidia_driver,
    }
}

fn list_dir(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Names a PCI vendor id (`0x10de` etc.); unknown ids are returned as given.
pub fn pci_vendor_name(id: &str) -> String {
    match id.trim().to_ascii_lowercase().as_str() {
        "0x10de" => "nvidia".into(),
        "0x1002" | "0x1022" => "amd".into(),
        "0x8086" => "intel".into(),
        "0x1af4" => "virtio".into(),
        "0x1234" => "qemu-vga".into(),
        "0x15ad" => "vmware".into(),
        other => other.to_string(),
    }
}

fn split_list(s: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = s
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Toolchain facts captured at build time, plus caller-listed features.
pub fn toolchain(extra_features: &[String]) -> ToolchainInfo {
    let opt =
        |s: Option<&'static str>| s.map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    let mut squish_features = split_list(option_env!("SQUISH_HWDIAG_CRATE_FEATURES"));
    squish_features.extend(extra_features.iter().cloned());
    squish_features.sort();
    squish_features.dedup();
    ToolchainInfo {
        rustc: opt(option_env!("SQUISH_HWDIAG_RUSTC_VERSION")),
        target: opt(option_env!("SQUISH_HWDIAG_TARGET")),
        profile: opt(option_env!("SQUISH_HWDIAG_PROFILE")),
        opt_level: opt(option_env!("SQUISH_HWDIAG_OPT_LEVEL")),
        static_target_features: split_list(option_env!("SQUISH_HWDIAG_STATIC_TARGET_FEATURES")),
        squish_features,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parsing() {
        let m = parse_meminfo("MemTotal:  1000 kB\nMemFree: 5 kB\nMemAvailable:   800 kB\n");
        assert_eq!(m.total_bytes, Some(1000 * 1024));
        assert_eq!(m.available_bytes, Some(800 * 1024));
        assert_eq!(m.swap_total_bytes, None);
        let bad = parse_meminfo("MemTotal: lots\nMemAvailable: 1 parsecs\n\0");
        assert_eq!(bad.total_bytes, None);
        assert_eq!(bad.available_bytes, None);
        assert_eq!(parse_meminfo("").total_bytes, None);
    }

    #[test]
    fn usable_memory() {
        let mut m = parse_meminfo("MemAvailable: 100 kB\n");
        assert_eq!(m.usable_bytes(), Some(102_400));
        m.cgroup_limit_bytes = Some(1000);
        assert_eq!(m.usable_bytes(), Some(1000));
    }

    #[test]
    fn toolchain_is_captured() {
        let t = toolchain(&["runtime-x".to_string()]);
        assert!(t.rustc.as_deref().is_some_and(|r| r.starts_with("rustc ")));
        assert!(t.squish_features.contains(&"runtime-x".to_string()));
    }

    #[test]
    fn gpu_probe_lists_what_it_checked() {
        let g = probe_gpu();
        assert!(g.looked_for.len() >= 4);
        assert_eq!(pci_vendor_name("0x10DE"), "nvidia");
    }
}
