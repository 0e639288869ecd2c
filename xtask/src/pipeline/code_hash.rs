//! Hashes of squish's source code, computed by `xtask/build.rs` (which embeds them in the binary)
//! and read by the pipeline (which puts them into stage fingerprints). This one file is compiled
//! into both, so the test that recomputes a hash at test time checks the very function the build
//! used.
//!
//! Two kinds of unit are hashed:
//! - every workspace crate under `crates/`: its `Cargo.toml`, its `build.rs` if present and every
//!   file under its `src/`; its `squish-*` `[dependencies]` are recorded too, so a stage's crate
//!   set is closed over the real Cargo dependency graph;
//! - every file under `xtask/src/` on its own, with the other xtask files it names (`crate::m`,
//!   `super::m`), so a stage's xtask code is closed over the modules it actually uses.
//!
//! A hash is the sha256 over the unit's files in sorted relative-path order, each as its relative
//! path (`/`-separated), a NUL byte, its length (u64, little endian) and its bytes. No absolute
//! paths and no timestamps go in, so the same sources give the same hashes on every machine.
//! Hidden files (a name starting with `.`, e.g. editor lock files) are skipped.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One workspace crate's code hash and the workspace crates it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateCode {
    /// Package name, e.g. `squish-quant`.
    pub name: String,
    /// Directory relative to the workspace root, e.g. `crates/quantization`.
    pub dir: String,
    /// Hex sha256 of `Cargo.toml`, `build.rs` (if any) and `src/**`.
    pub hash: String,
    /// The workspace crates named in its `[dependencies]` (direct only), sorted.
    pub deps: Vec<String>,
}

/// One file under `xtask/src/`: its hash and the xtask files it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCode {
    /// Path relative to `xtask/src/`, e.g. `stage_quant.rs`.
    pub path: String,
    /// Hex sha256 of the file (same framing as a crate, with `path` as its relative path).
    pub hash: String,
    /// Files (relative to `xtask/src/`) of the modules it names, sorted.
    pub refs: Vec<String>,
}

/// Every code hash the build embeds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CodeTable {
    /// The workspace crates under `crates/`, sorted by directory.
    pub crates: Vec<CrateCode>,
    /// The files under `xtask/src/`, sorted by path.
    pub files: Vec<FileCode>,
}

/// Hex sha256 of the files `rels` (relative to `base`, `/`-separated, hashed in the given order).
pub fn hash_files(base: &Path, rels: &[String]) -> io::Result<String> {
    let mut h = Sha256::new();
    for rel in rels {
        let data = fs::read(base.join(rel))
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", rel)))?;
        h.update(rel.as_bytes());
        h.update([0u8]);
        h.update((data.len() as u64).to_le_bytes());
        h.update(&data);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Every non-hidden file under `dir`, as `prefix` + its `/`-separated relative path, sorted.
pub fn list_files(dir: &Path, prefix: &str) -> io::Result<Vec<String>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let ty = entry.file_type()?;
            if ty.is_dir() {
                walk(&entry.path(), &format!("{rel}/"), out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, prefix, &mut out)?;
    out.sort();
    Ok(out)
}

/// The files of a crate's hash, relative to its directory: `Cargo.toml`, `build.rs` if present,
/// `src/**`; sorted.
pub fn crate_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut files = vec!["Cargo.toml".to_string()];
    if dir.join("build.rs").is_file() {
        files.push("build.rs".into());
    }
    files.extend(list_files(&dir.join("src"), "src/")?);
    files.sort();
    Ok(files)
}

/// The `name` of a manifest's `[package]` table.
pub fn package_name(cargo_toml: &str) -> Option<String> {
    let mut section = "";
    for line in cargo_toml.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            section = l;
            continue;
        }
        if section == "[package]"
            && let Some((k, v)) = l.split('#').next().unwrap_or("").split_once('=')
            && k.trim() == "name"
        {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}

/// The `squish-*` names in a manifest's `[dependencies]` (and `[target.….dependencies]`, and
/// `[dependencies.squish-x]` tables); dev- and build-dependencies are not code a stage runs.
/// Sorted, without duplicates.
pub fn squish_deps(cargo_toml: &str) -> Vec<String> {
    let is_deps =
        |s: &str| s == "dependencies" || (s.starts_with("target.") && s.ends_with(".dependencies"));
    let mut section = String::new();
    let mut out = Vec::new();
    for line in cargo_toml.lines() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.starts_with('[') {
            section = l.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            if let Some(name) = section.strip_prefix("dependencies.")
                && name.starts_with("squish-")
            {
                out.push(name.to_string());
            }
            continue;
        }
        if is_deps(&section) {
            let key = l
                .split(['=', '.', ' '])
                .next()
                .unwrap_or("")
                .trim_matches('"');
            if key.starts_with("squish-") {
                out.push(key.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths of a `use` tree or path expression at the start of `s` (after `crate::` or
/// `super::`): `a::b` → `[[a, b]]`, `{a, b::{c, d}}` → `[[a], [b, c], [b, d]]`.
fn paths(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('{') {
        let mut depth = 0usize;
        let mut parts = Vec::new();
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return parts.into_iter().flat_map(paths).collect();
    }
    let end = s.find(|c| !is_ident(c)).unwrap_or(s.len());
    if end == 0 {
        return Vec::new();
    }
    let ident = s[..end].to_string();
    match s[end..].strip_prefix("::") {
        Some(rest) => {
            let mut sub = paths(rest);
            if sub.is_empty() {
                sub.push(Vec::new());
            }
            for p in &mut sub {
                p.insert(0, ident.clone());
            }
            sub
        }
        None => vec![vec![ident]],
    }
}

/// The directory (relative to `xtask/src`, `""` for the root) holding the children of the module
/// that `super` means inside `file`.
fn super_dir(file: &str) -> String {
    let (dir, name) = file.rsplit_once('/').unwrap_or(("", file));
    if name == "mod.rs" {
        dir.rsplit_once('/').map(|(d, _)| d).unwrap_or("").into()
    } else {
        dir.into()
    }
}

/// The file of the deepest module named by `segs` under directory `dir`, or the file of the module
/// owning `dir` when the first segment is an item, not a module.
fn resolve(dir: &str, segs: &[String], known: &[String]) -> Option<String> {
    let exists = |p: &str| known.iter().any(|k| k == p);
    let join = |d: &str, f: &str| {
        if d.is_empty() {
            f.to_string()
        } else {
            format!("{d}/{f}")
        }
    };
    let mut best = None;
    let mut d = dir.to_string();
    for s in segs {
        let (file, sub) = (
            join(&d, &format!("{s}.rs")),
            join(&d, &format!("{s}/mod.rs")),
        );
        if exists(&file) {
            best = Some(file);
        } else if exists(&sub) {
            best = Some(sub);
        } else {
            break;
        }
        d = join(&d, s);
    }
    best.or_else(|| {
        let own = if dir.is_empty() {
            "main.rs".to_string()
        } else {
            format!("{dir}/mod.rs")
        };
        exists(&own).then_some(own)
    })
}

/// The byte index just past the `}` closing the block whose `{` is at `open`, skipping comments,
/// string and char literals; `None` if it is not found.
fn block_end(src: &str, open: usize) -> Option<usize> {
    let b = src.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i += src[i..].find('\n')?;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += src[i..].find("*/")? + 1;
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && !src[..i].ends_with(|c: char| is_ident(c)) =>
            {
                let hashes = src[i + 1..].bytes().take_while(|&c| c == b'#').count();
                let body = i + 1 + hashes;
                if b.get(body) == Some(&b'"') {
                    let close = format!("\"{}", "#".repeat(hashes));
                    i = body + 1 + src[body + 1..].find(&close)? + close.len() - 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            // A char literal ('{', '\'', '\u{7d}'), not a lifetime ('a).
            b'\'' => {
                if b.get(i + 1) == Some(&b'\\') {
                    i += 3 + src.get(i + 3..)?.find('\'')?;
                } else if b.get(i + 2) == Some(&b'\'') {
                    i += 2;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `src` without its `#[cfg(test)] mod … { … }` blocks: test code does not run in a stage. A block
/// whose end is not found is kept (naming too many files is safe, too few is not).
fn without_test_modules(src: &str) -> String {
    let mut out = String::new();
    let mut rest = src;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = &rest[at + "#[cfg(test)]".len()..];
        let head = after.trim_start();
        let skip = head
            .strip_prefix("mod ")
            .or_else(|| head.strip_prefix("pub mod "))
            .and_then(|m| {
                let open = m.find(|c: char| !is_ident(c) && !c.is_whitespace())?;
                (m.as_bytes()[open] == b'{').then_some(())?;
                let open = after.len() - m.len() + open;
                block_end(after, open)
            });
        match skip {
            Some(end) => {
                out.push_str(&rest[..at]);
                rest = &after[end..];
            }
            None => {
                let keep = at + "#[cfg(test)]".len();
                out.push_str(&rest[..keep]);
                rest = &rest[keep..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The xtask files (of `known`, relative to `xtask/src`) whose modules `src`, the text of `file`,
/// names through `crate::…` or `super::…` outside its `#[cfg(test)]` modules. Sorted, without
/// duplicates and without `file` itself.
pub fn xtask_refs(file: &str, src: &str, known: &[String]) -> Vec<String> {
    let src = without_test_modules(src);
    let src = src.as_str();
    let mut out = Vec::new();
    for (kw, dir) in [("crate::", String::new()), ("super::", super_dir(file))] {
        let mut from = 0;
        while let Some(i) = src[from..].find(kw) {
            let at = from + i;
            from = at + kw.len();
            if src[..at]
                .chars()
                .next_back()
                .is_some_and(|c| is_ident(c) || c == ':' || c == '$')
            {
                continue;
            }
            for p in paths(&src[from..]) {
                if let Some(f) = resolve(&dir, &p, known) {
                    out.push(f);
                }
            }
        }
    }
    out.retain(|f| f != file);
    out.sort();
    out.dedup();
    out
}

/// Hashes every workspace crate under `<workspace>/crates/` and every file under
/// `<workspace>/xtask/src/`.
pub fn compute(workspace: &Path) -> io::Result<CodeTable> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut dirs: Vec<String> = fs::read_dir(workspace.join("crates"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut crates = Vec::new();
    for d in dirs {
        let dir = workspace.join("crates").join(&d);
        let toml = fs::read_to_string(dir.join("Cargo.toml"))?;
        let name = package_name(&toml)
            .ok_or_else(|| bad(&format!("crates/{d}/Cargo.toml has no [package] name")))?;
        crates.push(CrateCode {
            name,
            dir: format!("crates/{d}"),
            hash: hash_files(&dir, &crate_files(&dir)?)?,
            deps: squish_deps(&toml),
        });
    }
    let names: Vec<String> = crates.iter().map(|c| c.name.clone()).collect();
    for c in &mut crates {
        c.deps.retain(|d| names.contains(d));
    }
    let src = workspace.join("xtask").join("src");
    let known = list_files(&src, "")?;
    let mut files = Vec::new();
    for path in &known {
        let refs = if path.ends_with(".rs") {
            xtask_refs(path, &fs::read_to_string(src.join(path))?, &known)
        } else {
            Vec::new()
        };
        files.push(FileCode {
            path: path.clone(),
            hash: hash_files(&src, std::slice::from_ref(path))?,
            refs,
        });
    }
    let table = CodeTable { crates, files };
    let words = table
        .crates
        .iter()
        .flat_map(|c| [&c.name, &c.dir])
        .chain(table.files.iter().map(|f| &f.path));
    for w in words {
        if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == ',') {
            return Err(bad(&format!(
                "code hashes: `{w}` is empty or has whitespace or a comma; rename it"
            )));
        }
    }
    Ok(table)
}

/// The paths whose changes must rerun the build script (`cargo:rerun-if-changed`): each crate's
/// `Cargo.toml`, `build.rs` (if present) and `src/` directory, and `xtask/src/`.
pub fn watched(workspace: &Path, table: &CodeTable) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for c in &table.crates {
        let dir = workspace.join(&c.dir);
        out.push(dir.join("Cargo.toml"));
        if dir.join("build.rs").is_file() {
            out.push(dir.join("build.rs"));
        }
        out.push(dir.join("src"));
    }
    out.push(workspace.join("xtask").join("src"));
    out
}

impl CodeTable {
    /// The table as text, one unit a line: `crate NAME DIR HASH DEPS` and `file PATH HASH REFS`
    /// (lists comma-separated, `-` when empty).
    pub fn to_text(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        let mut s = String::new();
        for c in &self.crates {
            s += &format!("crate {} {} {} {}\n", c.name, c.dir, c.hash, list(&c.deps));
        }
        for f in &self.files {
            s += &format!("file {} {} {}\n", f.path, f.hash, list(&f.refs));
        }
        s
    }

    /// Parses [`CodeTable::to_text`].
    pub fn from_text(text: &str) -> Result<Self, String> {
        let list = |s: &str| -> Vec<String> {
            if s == "-" {
                Vec::new()
            } else {
                s.split(',').map(String::from).collect()
            }
        };
        let mut t = CodeTable::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["crate", name, dir, hash, deps] => t.crates.push(CrateCode {
                    name: name.to_string(),
                    dir: dir.to_string(),
                    hash: hash.to_string(),
                    deps: list(deps),
                }),
                ["file", path, hash, refs] => t.files.push(FileCode {
                    path: path.to_string(),
                    hash: hash.to_string(),
                    refs: list(refs),
                }),
                _ => return Err(format!("bad code-hash line `{line}`")),
            }
        }
        Ok(t)
    }
}
