//! Writes the fuzz seed corpus `fuzz/corpus/decode/seed-*`: every sample
//! message of the tests plus every OVS 3.1 capture (TABLE_FEATURES: the
//! first part only).
//!
//! `cargo run -p ofp --example gen_corpus`

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("fuzz/corpus/decode");
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("{}: {e}", out.display());
        std::process::exit(1);
    }
    let mut n = 0;
    let mut write = |name: String, bytes: &[u8]| {
        if let Err(e) = std::fs::write(out.join(format!("seed-{name}")), bytes) {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
        n += 1;
    };
    for (name, msg) in common::all_messages() {
        match msg.to_vec() {
            Ok(b) => write(name.to_string(), &b),
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
    let captures = root.join("tests/data/ovs31");
    let Ok(dir) = std::fs::read_dir(&captures) else {
        eprintln!("no captures in {}", captures.display());
        std::process::exit(1);
    };
    for e in dir.flatten() {
        let path = e.path();
        let kind = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("x")
            .to_string();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty());
        for (i, l) in lines.enumerate() {
            if kind == "mp_table_features" && i > 0 {
                break;
            }
            let b: Option<Vec<u8>> = (0..l.len())
                .step_by(2)
                .map(|j| l.get(j..j + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            if let Some(b) = b {
                write(format!("ovs31-{kind}-{i}"), &b);
            }
        }
    }
    println!("{n} seeds in {}", out.display());
}
