//! CPU identification: vendor/model, topology, caches and frequency, read from `/proc` and
//! `/sys` (with CPUID as the fallback on x86-64). Missing or odd files give `None`, never a panic.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One cache (per `cpu0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheLevel {
    /// 1, 2, 3 ...
    pub level: u8,
    /// `data`, `instruction` or `unified`.
    pub kind: String,
    /// Capacity of one instance of this cache, in bytes.
    pub size_bytes: u64,
    /// Line size in bytes, if known.
    pub line_bytes: Option<u32>,
    /// How many logical CPUs share one instance, if known.
    pub shared_by_logical: Option<usize>,
}

/// CPU identification and topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// `std::env::consts::ARCH` (e.g. `x86_64`, `aarch64`).
    pub arch: String,
    /// Vendor string (`GenuineIntel`, `AuthenticAMD`, an ARM implementer id ...).
    pub vendor: Option<String>,
    /// Model / brand string.
    pub model: Option<String>,
    /// Distinct (package, core) pairs among online CPUs.
    pub physical_cores: Option<usize>,
    /// Online logical CPUs (hardware threads).
    pub logical_threads: Option<usize>,
    /// Threads this process may run in parallel (`std::thread::available_parallelism`:
    /// honours affinity masks and cgroup quotas).
    pub available_parallelism: usize,
    /// CPU sockets (distinct physical package ids).
    pub sockets: Option<usize>,
    /// Current (or nominal) frequency in MHz.
    pub frequency_mhz: Option<f64>,
    /// Maximum frequency in MHz (cpufreq), if exposed.
    pub max_frequency_mhz: Option<f64>,
    /// Where the frequency came from (`cpufreq` or `/proc/cpuinfo`).
    pub frequency_source: Option<String>,
    /// Caches of CPU 0, L1 first.
    pub caches: Vec<CacheLevel>,
    /// Where the cache list came from (`sysfs` or `cpuid`).
    pub cache_source: Option<String>,
}

impl CpuInfo {
    /// The L1 data cache size in bytes, if known.
    pub fn l1d_bytes(&self) -> Option<u64> {
        self.caches
            .iter()
            .find(|c| c.level == 1 && c.kind != "instruction")
            .map(|c| c.size_bytes)
    }

    /// The L2 size in bytes, if known.
    pub fn l2_bytes(&self) -> Option<u64> {
        self.caches
            .iter()
            .find(|c| c.level == 2 && c.kind != "instruction")
            .map(|c| c.size_bytes)
    }

    /// The last-level (highest-level, non-instruction) cache size in bytes, if known.
    pub fn llc_bytes(&self) -> Option<u64> {
        self.caches
            .iter()
            .filter(|c| c.kind != "instruction")
            .max_by_key(|c| c.level)
            .map(|c| c.size_bytes)
    }
}

fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Probes the CPU.
pub fn probe_cpu() -> CpuInfo {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let sys = Path::new("/sys/devices/system/cpu");
    let online = read_trim(sys.join("online")).and_then(|s| parse_cpu_list(&s));

    let (physical_cores, sockets) = topology_sysfs(sys, online.as_deref())
        .or_else(|| topology_cpuinfo(&cpuinfo))
        .map_or((None, None), |(c, s)| (Some(c), Some(s)));
    let logical_threads = online
        .as_ref()
        .map(Vec::len)
        .or_else(|| Some(count_key(&cpuinfo, "processor")).filter(|n| *n > 0));

    let (frequency_mhz, max_frequency_mhz, frequency_source) = frequency(sys, &cpuinfo);

    let mut caches = caches_sysfs(&sys.join("cpu0/cache"));
    let mut cache_source = (!caches.is_empty()).then(|| "sysfs".to_string());
    if caches.is_empty() {
        caches = caches_cpuid();
        cache_source = (!caches.is_empty()).then(|| "cpuid".to_string());
    }

    let (vendor, model) = vendor_model(&cpuinfo);
    CpuInfo {
        arch: std::env::consts::ARCH.to_string(),
        vendor,
        model,
        physical_cores,
        logical_threads,
        available_parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sockets,
        frequency_mhz,
        max_frequency_mhz,
        frequency_source,
        caches,
        cache_source,
    }
}

/// Value of the first `key : value` line in a `/proc/cpuinfo`-style text.
pub(crate) fn cpuinfo_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key)
            .then(|| v.trim())
            .filter(|v| !v.is_empty())
    })
}

fn count_key(text: &str, key: &str) -> usize {
    text.lines()
        .filter(|l| l.split_once(':').is_some_and(|(k, _)| k.trim() == key))
        .count()
}

fn vendor_model(cpuinfo: &str) -> (Option<String>, Option<String>) {
    let vendor = cpuinfo_value(cpuinfo, "vendor_id")
        .or_else(|| cpuinfo_value(cpuinfo, "CPU implementer"))
        .map(String::from);
    let model = cpuinfo_value(cpuinfo, "model name")
        .or_else(|| cpuinfo_value(cpuinfo, "Model"))
        .or_else(|| cpuinfo_value(cpuinfo, "Hardware"))
        .map(String::from)
        .or_else(|| cpuinfo_value(cpuinfo, "CPU part").map(|p| format!("ARM part {p}")));
    let (cv, cm) = cpuid_vendor_brand();
    (vendor.or(cv), model.or(cm))
}

#[cfg(target_arch = "x86_64")]
fn cpuid_vendor_brand() -> (Option<String>, Option<String>) {
    use std::arch::x86_64::__cpuid;
    let l0 = __cpuid(0);
    let mut v = Vec::with_capacity(12);
    for r in [l0.ebx, l0.edx, l0.ecx] {
        v.extend_from_slice(&r.to_le_bytes());
    }
    let vendor = String::from_utf8(v).ok().filter(|s| !s.trim().is_empty());
    let brand = if __cpuid(0x8000_0000).eax >= 0x8000_0004 {
        let mut b = Vec::with_capacity(48);
        for leaf in 0x8000_0002u32..=0x8000_0004 {
            let r = __cpuid(leaf);
            for x in [r.eax, r.ebx, r.ecx, r.edx] {
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
        String::from_utf8(b)
            .ok()
            .map(|s| s.trim_matches(char::from(0)).trim().to_string())
            .filter(|s| !s.is_empty())
    } else {
        None
    };
    (vendor, brand)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_vendor_brand() -> (Option<String>, Option<String>) {
    (None, None)
}

/// Parses a kernel CPU list such as `0-3,8,10-11` into CPU ids. `None` if malformed.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.trim().is_empty()) {
        match part.trim().split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 1 << 16 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn topology_sysfs(sys: &Path, online: Option<&[usize]>) -> Option<(usize, usize)> {
    let cpus = online?;
    let mut cores = BTreeSet::new();
    let mut packages = BTreeSet::new();
    for cpu in cpus {
        let t = sys.join(format!("cpu{cpu}/topology"));
        let pkg: i64 = read_trim(t.join("physical_package_id"))?.parse().ok()?;
        let core: i64 = read_trim(t.join("core_id"))?.parse().ok()?;
        cores.insert((pkg, core));
        packages.insert(pkg);
    }
    Some((cores.len(), packages.len())).filter(|(c, _)| *c > 0)
}

/// (physical cores, sockets) from `/proc/cpuinfo` `physical id` / `core id` pairs.
pub(crate) fn topology_cpuinfo(cpuinfo: &str) -> Option<(usize, usize)> {
    let mut cores = BTreeSet::new();
    let mut packages = BTreeSet::new();
    for block in cpuinfo.split("\n\n") {
        let pkg = cpuinfo_value(block, "physical id").and_then(|v| v.parse::<i64>().ok());
        let core = cpuinfo_value(block, "core id").and_then(|v| v.parse::<i64>().ok());
        if let (Some(p), Some(c)) = (pkg, core) {
            cores.insert((p, c));
            packages.insert(p);
        }
    }
    Some((cores.len(), packages.len())).filter(|(c, _)| *c > 0)
}

fn frequency(sys: &Path, cpuinfo: &str) -> (Option<f64>, Option<f64>, Option<String>) {
    let khz = |f: &str| -> Option<f64> {
        read_trim(sys.join("cpu0/cpufreq").join(f))?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(|k| k / 1000.0)
    };
    let max = khz("cpuinfo_max_freq");
    if let Some(cur) = khz("scaling_cur_freq") {
        return (Some(cur), max, Some("cpufreq".into()));
    }
    let mhz = cpuinfo_value(cpuinfo, "cpu MHz")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0);
    let src = mhz.map(|_| "/proc/cpuinfo".to_string());
    (mhz, max, src.or_else(|| max.map(|_| "cpufreq".into())))
}

/// Reads `cpu0/cache/index*` entries. Entries with unparsable fields are skipped.
pub(crate) fn caches_sysfs(dir: &Path) -> Vec<CacheLevel> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("index"))
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        let level = read_trim(p.join("level")).and_then(|s| s.parse::<u8>().ok());
        let size = read_trim(p.join("size")).and_then(|s| parse_size(&s));
        let (Some(level), Some(size_bytes)) = (level, size) else {
            continue;
        };
        let kind = read_trim(p.join("type")).map_or("unified".into(), |t| t.to_lowercase());
        out.push(CacheLevel {
            level,
            kind,
            size_bytes,
            line_bytes: read_trim(p.join("coherency_line_size")).and_then(|s| s.parse().ok()),
            shared_by_logical: read_trim(p.join("shared_cpu_list"))
                .and_then(|s| parse_cpu_list(&s))
                .map(|v| v.len()),
        });
    }
    out.sort_by_key(|c| (c.level, c.kind != "data"));
    out
}

/// Parses sysfs cache sizes like `32K`, `1024K`, `32M`, `512`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

/// Cache list from CPUID (Intel leaf 4, AMD leaf 0x8000001D; same register layout).
#[cfg(target_arch = "x86_64")]
fn caches_cpuid() -> Vec<CacheLevel> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    let max_basic = __cpuid(0).eax;
    let max_ext = __cpuid(0x8000_0000).eax;
    let leaf =
        if max_ext >= 0x8000_001D && cpuid_vendor_brand().0.as_deref() == Some("AuthenticAMD") {
            0x8000_001D
        } else if max_basic >= 4 {
            4
        } else {
            return Vec::new();
        };
    let mut out = Vec::new();
    for sub in 0..16 {
        let r = __cpuid_count(leaf, sub);
        let kind = match r.eax & 0x1f {
            0 => break,
            1 => "data",
            2 => "instruction",
            _ => "unified",
        };
        let level = ((r.eax >> 5) & 0x7) as u8;
        let ways = u64::from((r.ebx >> 22) & 0x3ff) + 1;
        let parts = u64::from((r.ebx >> 12) & 0x3ff) + 1;
        let line = u64::from(r.ebx & 0xfff) + 1;
        let sets = u64::from(r.ecx) + 1;
        out.push(CacheLevel {
            level,
            kind: kind.to_string(),
            size_bytes: ways * parts * line * sets,
            line_bytes: u32::try_from(line).ok(),
            shared_by_logical: Some(((r.eax >> 14) & 0xfff) as usize + 1),
        });
    }
    out.sort_by_key(|c| (c.level, c.kind != "data"));
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn caches_cpuid() -> Vec<CacheLevel> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8\n"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32K"), Some(32 << 10));
        assert_eq!(parse_size("32768K"), Some(32 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
    }

    #[test]
    fn cpuinfo_topology_and_values() {
        let t = "processor : 0\nvendor_id : GenuineIntel\nmodel name : Test CPU\nphysical id : 0\ncore id : 0\n\n\
                 processor : 1\nphysical id : 0\ncore id : 0\n\nprocessor : 2\nphysical id : 0\ncore id : 1\n";
        assert_eq!(topology_cpuinfo(t), Some((2, 1)));
        assert_eq!(cpuinfo_value(t, "model name"), Some("Test CPU"));
        assert_eq!(count_key(t, "processor"), 3);
        assert_eq!(topology_cpuinfo("junk\0\n:::"), None);
    }

    #[test]
    fn missing_sysfs_is_empty() {
        assert!(caches_sysfs(Path::new("/nonexistent/cache")).is_empty());
        assert_eq!(topology_sysfs(Path::new("/nonexistent"), Some(&[0])), None);
    }

    #[test]
    fn probe_this_cpu() {
        let c = probe_cpu();
        assert!(c.available_parallelism >= 1);
        if let (Some(p), Some(l)) = (c.physical_cores, c.logical_threads) {
            assert!(p >= 1 && p <= l);
        }
        for w in c.caches.windows(2) {
            assert!(w[0].level <= w[1].level);
        }
    }
}
