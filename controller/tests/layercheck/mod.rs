//! A small checker of the layering of a crate's `src/` (used by
//! `controller/tests/layers.rs` and `hostd/tests/layers.rs`).
//!
//! It reads every `.rs` file, finds the module paths it names — `use`
//! trees and inline paths starting with `crate::`, `super::` (climbing
//! out of inline modules and folders), `self::`, or a child module the file
//! declares — resolves each to the file that defines the module, and
//! reports:
//! - every edge from a file to a file of a higher layer (the file → layer
//!   table is given by the caller, as path prefixes relative to `src/`);
//! - every import circle between files (strongly connected components of
//!   the file graph with more than one file);
//! - every file the table does not place.
//!
//! A parent module naming its own children (`mod.rs` declaring and
//! re-exporting its files) is containment, not an import; the children's
//! imports of their parent count.
//!
//! It is a textual checker (no macro expansion), which is enough for a
//! code base that names its modules with `use` and plain paths.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One reference from a file to a module in another file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    /// Referring file, relative to `src/`.
    pub from: String,
    /// Referred file, relative to `src/`.
    pub to: String,
    /// Line (1-based) in `from`.
    pub line: usize,
    /// The path as written (expanded for `use` trees).
    pub path: String,
}

/// A layer: a name and the path prefixes (relative to `src/`) of its files.
pub type Layer<'a> = (&'a str, &'a [&'a str]);

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// Edges pointing to a higher layer: (edge, from layer, to layer).
    pub upward: Vec<(Edge, String, String)>,
    /// Import circles (files of one strongly connected component).
    pub circles: Vec<Vec<String>>,
    /// Files the layer table does not place.
    pub unplaced: Vec<String>,
    /// All edges (for reports).
    pub edges: Vec<Edge>,
}

impl Report {
    /// Nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.upward.is_empty() && self.circles.is_empty() && self.unplaced.is_empty()
    }

    /// Human-readable list of the violations.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (e, lf, lt) in &self.upward {
            out.push_str(&format!(
                "upward: {}:{} ({lf}) imports {} ({lt}) via `{}`\n",
                e.from, e.line, e.to, e.path
            ));
        }
        for c in &self.circles {
            out.push_str(&format!("circle: {}\n", c.join(" <-> ")));
        }
        for f in &self.unplaced {
            out.push_str(&format!("unplaced: {f} (add it to the layer table)\n"));
        }
        out
    }
}

/// The module path of a file relative to `src/` (`a/b.rs` → `[a, b]`,
/// `a/mod.rs` → `[a]`, `lib.rs`/`main.rs` → `[]`).
pub fn module_of(rel: &str) -> Vec<String> {
    let rel = rel.trim_end_matches(".rs");
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

fn rs_files(dir: &Path, base: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, base, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(base).unwrap_or(&p);
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Removes comments (keeps strings, so `#[serde(with = "crate::x")]` counts).
fn strip_comments(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let mut in_str = false;
    let mut block = 0usize;
    while i < b.len() {
        let c = b[i];
        let n = b.get(i + 1).copied();
        if block > 0 {
            if c == '*' && n == Some('/') {
                block -= 1;
                i += 2;
                continue;
            }
            if c == '/' && n == Some('*') {
                block += 1;
                i += 2;
                continue;
            }
            if c == '\n' {
                out.push('\n');
            }
            i += 1;
            continue;
        }
        if in_str {
            out.push(c);
            if c == '\\' {
                if let Some(n) = n {
                    out.push(n);
                }
                i += 2;
                continue;
            }
            if c == '"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match (c, n) {
            ('/', Some('/')) => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                block = 1;
                i += 2;
            }
            ('\'', _) => {
                // A char literal ('x', '\n', '"') or a lifetime ('a).
                if b.get(i + 2) == Some(&'\'') {
                    out.push_str("' '");
                    i += 3;
                } else if n == Some('\\') {
                    let mut j = i + 2;
                    while j < b.len() && b[j] != '\'' {
                        j += 1;
                    }
                    out.push_str("' '");
                    i = j + 1;
                } else {
                    out.push(c);
                    i += 1;
                }
            }
            ('"', _) => {
                in_str = true;
                out.push(c);
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands a `use` tree (`a::{b, c::{d as e, self}}`) into paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let t = match tree.find(" as ") {
            Some(i) => &tree[..i],
            None => tree,
        };
        return vec![t.trim().to_string()];
    };
    let prefix = tree[..open].trim().trim_end_matches("::");
    let close = tree.rfind('}').unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    let mut out = Vec::new();
    for p in parts {
        if p.trim().is_empty() {
            continue;
        }
        for sub in expand(p) {
            if sub == "self" {
                out.push(prefix.to_string());
            } else if prefix.is_empty() {
                out.push(sub);
            } else {
                out.push(format!("{prefix}::{sub}"));
            }
        }
    }
    out
}

/// The paths a file names that may point into the crate, with line numbers
/// and the inline module path they appear in.
fn paths_of(src: &str, children: &BTreeSet<String>) -> Vec<(usize, Vec<String>, String)> {
    let text = strip_comments(src);
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1usize;
    let mut depth = 0usize;
    // Inline modules: (name, depth of their body).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut pending_mod: Option<String> = None;
    let mut i = 0;
    let starts = |i: usize, w: &str| -> bool {
        let wc: Vec<char> = w.chars().collect();
        chars.len() >= i + wc.len()
            && chars[i..i + wc.len()] == wc[..]
            && (i == 0 || !is_ident(chars[i - 1]))
            && chars.get(i + wc.len()).is_none_or(|c| !is_ident(*c))
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if c == '"' {
            // Strings: only look for crate paths inside.
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            let s: String = chars[i + 1..j.min(chars.len())].iter().collect();
            let scope: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
            if s.starts_with("crate::") || s.starts_with("super::") {
                out.push((line, scope, s.clone()));
            }
            line += s.matches('\n').count();
            i = j + 1;
            continue;
        }
        if c == '{' {
            depth += 1;
            if let Some(n) = pending_mod.take() {
                inline.push((n, depth));
            }
            i += 1;
            continue;
        }
        if c == '}' {
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
            continue;
        }
        if c == ';' {
            pending_mod = None;
            i += 1;
            continue;
        }
        if starts(i, "mod") {
            let mut j = i + 3;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let k = (j..chars.len()).find(|&k| !is_ident(chars[k])).unwrap_or(j);
            pending_mod = Some(chars[j..k].iter().collect());
            i = k;
            continue;
        }
        let scope: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
        if starts(i, "use") {
            let j = (i..chars.len())
                .find(|&k| chars[k] == ';')
                .unwrap_or(chars.len());
            let stmt: String = chars[i + 3..j].iter().collect();
            for p in expand(&stmt) {
                let p = p.trim_start_matches("::").to_string();
                let first = p.split("::").next().unwrap_or("");
                if matches!(first, "crate" | "super" | "self") || children.contains(first) {
                    out.push((line, scope.clone(), p));
                }
            }
            line += stmt.matches('\n').count();
            i = j;
            continue;
        }
        if is_ident(c) && (i == 0 || !is_ident(chars[i - 1])) {
            let preceded_by_path = i >= 2 && chars[i - 1] == ':' && chars[i - 2] == ':';
            let k = (i..chars.len())
                .find(|&k| !is_ident(chars[k]))
                .unwrap_or(chars.len());
            let word: String = chars[i..k].iter().collect();
            let follows_path = chars.get(k) == Some(&':') && chars.get(k + 1) == Some(&':');
            if !preceded_by_path
                && follows_path
                && (matches!(word.as_str(), "crate" | "super" | "self") || children.contains(&word))
            {
                let mut e = k;
                while chars.get(e) == Some(&':') && chars.get(e + 1) == Some(&':') {
                    let s = e + 2;
                    let t = (s..chars.len()).find(|&t| !is_ident(chars[t])).unwrap_or(s);
                    if t == s {
                        break;
                    }
                    e = t;
                }
                let p: String = chars[i..e].iter().collect();
                out.push((line, scope, p));
                i = e;
                continue;
            }
            i = k;
            continue;
        }
        i += 1;
    }
    out
}

/// Resolves `path` (written in module `here`) to an absolute module path.
fn absolute(path: &str, here: &[String], children: &BTreeSet<String>) -> Option<Vec<String>> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut cur: Vec<String> = here.to_vec();
    let mut rest = &segs[..];
    match segs.first().copied() {
        Some("crate") => {
            cur.clear();
            rest = &segs[1..];
        }
        Some("self") => rest = &segs[1..],
        Some("super") => {
            while rest.first() == Some(&"super") {
                cur.pop()?;
                rest = &rest[1..];
            }
        }
        Some(f) if children.contains(f) => {}
        _ => return None,
    }
    cur.extend(rest.iter().map(|s| s.to_string()));
    Some(cur)
}

/// Checks the crate whose sources are in `src` against `layers` (lowest
/// first). A file belongs to the layer of the longest matching prefix.
pub fn check(src: &Path, layers: &[Layer<'_>]) -> Report {
    let mut files = Vec::new();
    rs_files(src, src, &mut files);
    let modules: BTreeMap<Vec<String>, String> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();
    let layer_of = |f: &str| -> Option<(usize, &str)> {
        let mut best: Option<(usize, usize, &str)> = None;
        for (i, (name, prefixes)) in layers.iter().enumerate() {
            for p in prefixes.iter() {
                if f.starts_with(p) && best.is_none_or(|(len, _, _)| p.len() > len) {
                    best = Some((p.len(), i, name));
                }
            }
        }
        best.map(|(_, i, n)| (i, n))
    };
    let mut report = Report::default();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        graph.entry(f.clone()).or_default();
        let Ok(src_text) = std::fs::read_to_string(src.join(f)) else {
            continue;
        };
        let here = module_of(f);
        // Child modules declared in this file (`mod x;`).
        let children: BTreeSet<String> = modules
            .keys()
            .filter(|m| m.len() == here.len() + 1 && m.starts_with(&here))
            .filter_map(|m| m.last().cloned())
            .collect();
        // main.rs is its own crate root: `crate::` there is the binary.
        let is_bin_root = f == "main.rs" || f.starts_with("bin/");
        for (line, scope, p) in paths_of(&src_text, &children) {
            if is_bin_root {
                continue;
            }
            let mut at = here.clone();
            at.extend(scope.iter().cloned());
            let kids = if scope.is_empty() {
                children.clone()
            } else {
                BTreeSet::new()
            };
            let Some(abs) = absolute(&p, &at, &kids) else {
                continue;
            };
            // Longest prefix that is a file.
            let mut target = None;
            for n in (0..=abs.len()).rev() {
                if let Some(t) = modules.get(&abs[..n]) {
                    target = Some(t.clone());
                    break;
                }
            }
            let Some(t) = target else { continue };
            if &t == f || t == "main.rs" {
                continue;
            }
            // The crate root only declares modules.
            if t == "lib.rs" {
                continue;
            }
            // A folder's `mod.rs` owns its files: declaring and re-exporting
            // them is containment, not an import.
            let t_mod = module_of(&t);
            if t_mod.len() > here.len() && t_mod.starts_with(&here) {
                continue;
            }
            graph.entry(f.clone()).or_default().insert(t.clone());
            report.edges.push(Edge {
                from: f.clone(),
                to: t,
                line,
                path: p,
            });
        }
    }
    for f in &files {
        if layer_of(f).is_none() {
            report.unplaced.push(f.clone());
        }
    }
    for e in &report.edges {
        if let (Some((lf, nf)), Some((lt, nt))) = (layer_of(&e.from), layer_of(&e.to)) {
            if lt > lf {
                report
                    .upward
                    .push((e.clone(), nf.to_string(), nt.to_string()));
            }
        }
    }
    report.circles = circles(&graph);
    report
}

/// Strongly connected components with more than one node (Tarjan).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.get(v) {
            for w in ws {
                let w = w.as_str();
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(lw));
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low[v];
                    t.low.insert(v, lv.min(iw));
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Checks the layering of the tree named by the environment variable `var`
/// (if set) against `layers` and prints the report; used to show what the
/// checker finds in an older layout.
pub fn report_env(var: &str, layers: &[Layer<'_>]) -> Option<Report> {
    let dir = std::env::var_os(var)?;
    let r = check(Path::new(&dir), layers);
    println!(
        "{} upward imports, {} circles, {} unplaced files in {}",
        r.upward.len(),
        r.circles.len(),
        r.unplaced.len(),
        Path::new(&dir).display()
    );
    print!("{}", r.render());
    Some(r)
}

#[cfg(test)]
mod self_tests {
    use super::*;

    #[test]
    fn expands_use_trees() {
        let mut v = expand("crate::{a::{self, B}, c::D as E}");
        v.sort();
        assert_eq!(v, vec!["crate::a", "crate::a::B", "crate::c::D"]);
    }

    #[test]
    fn finds_paths_and_skips_comments() {
        let kids: BTreeSet<String> = ["child".to_string()].into();
        let src = "// crate::nope\nuse crate::x::{Y, z};\nfn f() { crate::w::g(); child::h(); }\n#[serde(with = \"crate::m\")]\nmod tests { use super::*; }\n";
        let p: Vec<String> = paths_of(src, &kids).into_iter().map(|x| x.2).collect();
        assert_eq!(
            p,
            vec![
                "crate::x::Y",
                "crate::x::z",
                "crate::w::g",
                "child::h",
                "crate::m",
                "super::*"
            ]
        );
    }
}
