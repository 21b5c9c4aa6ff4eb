//! Optional: the OpenFlow 1.3 test vectors of os-ken 4.2.2
//! (`os_ken/tests/packet_data/of13/*.packet`, written by Ryu/os-ken,
//! libofproto and ovs-ofctl) decode without error and re-encode
//! byte-exact.
//!
//! Ignored by default because it downloads the wheel from PyPI at test time
//! (`pip download`, nothing is committed): run it with
//! `cargo test -p ofp --test osken_vectors -- --ignored`. Set
//! `OSKEN_OF13_DIR` to an already extracted `packet_data/of13` directory to
//! skip the download.

use ofp::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn vectors_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(fetch).clone()
}

fn fetch() -> PathBuf {
    if let Ok(d) = std::env::var("OSKEN_OF13_DIR") {
        return PathBuf::from(d);
    }
    let work = std::env::temp_dir().join("ofp-osken-4.2.2");
    let of13 = work.join("os_ken/tests/packet_data/of13");
    if of13.is_dir() {
        return of13;
    }
    std::fs::create_dir_all(&work).expect("temp dir");
    let st = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "os-ken==4.2.2",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
        ])
        .arg(&work)
        .status()
        .expect("python3 -m pip is required for this test");
    assert!(st.success(), "pip download os-ken==4.2.2 failed");
    let script = "import sys,zipfile,glob\n\
                  z=zipfile.ZipFile(glob.glob(sys.argv[1]+'/os_ken-4.2.2-*.whl')[0])\n\
                  z.extractall(sys.argv[1],[n for n in z.namelist() if '/packet_data/of13/' in n])\n";
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(&work)
        .status()
        .expect("python3");
    assert!(st.success(), "extracting the wheel failed");
    of13
}

fn split(buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Ok(Some(n)) = check_frame(rest) {
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    assert!(rest.is_empty(), "{} trailing bytes", rest.len());
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("vectors dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "packet"))
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "downloads the os-ken wheel from PyPI"]
fn osken_of13_vectors_decode_and_reencode() {
    let dir = vectors_dir();
    let files = files(&dir);
    assert!(
        files.len() >= 100,
        "only {} vectors in {}",
        files.len(),
        dir.display()
    );
    let mut failures = Vec::new();
    let mut n = 0;
    for f in &files {
        let name = f
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        let buf = std::fs::read(f).expect("read");
        for m in split(&buf) {
            n += 1;
            match OfpMessage::decode(m) {
                Ok(msg) => match msg.to_vec() {
                    Ok(b) if b == m => {}
                    Ok(_) => failures.push(format!("{name}: {} not byte-exact", msg.body.name())),
                    Err(e) => failures.push(format!("{name}: re-encode: {e}")),
                },
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
    }
    println!("{n} messages in {} files", files.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
#[ignore = "downloads the os-ken wheel from PyPI"]
fn osken_truncated_flow_mod_is_an_error() {
    let p = vectors_dir().join("libofproto-OFP13-flow_mod.truncated64");
    let buf = std::fs::read(p).expect("read");
    // Its header claims more than the 64 bytes present.
    assert_eq!(check_frame(&buf), Ok(None));
    assert!(OfpMessage::decode(&buf).is_err());
}
