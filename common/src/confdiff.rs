//! What changed between two configurations: the dotted paths of the fields
//! that differ, and fingerprints of the files a configuration names (a
//! certificate renewed in place has the same path but other contents).
//!
//! Used by the controller and by hostd when they re-read their
//! configuration on SIGHUP: what they can apply live they apply, every
//! other changed field is reported as needing a restart.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The configuration could not be turned into a comparable value.
#[derive(Debug, thiserror::Error)]
#[error("cannot compare configurations: {0}")]
pub struct DiffError(String);

/// The dotted paths (`tls.api_cert_file`, `openflow.echo_interval_s`,
/// `vm`) of the fields that differ between `old` and `new`, sorted.
/// Tables are compared field by field; a list is one field (a changed
/// element names the list).
pub fn changed_fields<T: Serialize>(old: &T, new: &T) -> Result<Vec<String>, DiffError> {
    let a = serde_json::to_value(old).map_err(|e| DiffError(e.to_string()))?;
    let b = serde_json::to_value(new).map_err(|e| DiffError(e.to_string()))?;
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out.sort();
    Ok(out)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => walk(&join(prefix, k), va, vb, out),
                    None => out.push(join(prefix, k)),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(join(prefix, k));
            }
        }
        _ if a != b => out.push(if prefix.is_empty() {
            "(whole configuration)".to_string()
        } else {
            prefix.to_string()
        }),
        _ => {}
    }
}

/// Fingerprints of named files: field → SHA-256 of the contents (None:
/// the file could not be read).
pub type Fingerprints = BTreeMap<String, Option<[u8; 32]>>;

/// SHA-256 of a file's contents (None: it cannot be read). Fingerprints
/// are compared, never printed.
pub fn file_digest(path: &Path) -> Option<[u8; 32]> {
    let bytes = std::fs::read(path).ok()?;
    Some(Sha256::digest(&bytes).into())
}

/// Fingerprints of the files named by `fields` (field → path; a field
/// without a file is left out).
pub fn fingerprints<'a>(
    fields: impl IntoIterator<Item = (&'a str, Option<&'a Path>)>,
) -> Fingerprints {
    fields
        .into_iter()
        .filter_map(|(f, p)| p.map(|p| (f.to_string(), file_digest(p))))
        .collect()
}

/// The fields of `new` whose file has other contents than in `old` while
/// the path stayed the same (a changed path is a changed field already).
pub fn changed_files(old: &Fingerprints, new: &Fingerprints) -> Vec<String> {
    new.iter()
        .filter(|(f, d)| old.get(*f).is_some_and(|o| o != *d))
        .map(|(f, _)| f.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Inner {
        a: u32,
        b: Option<String>,
    }

    #[derive(Serialize)]
    struct Outer {
        x: String,
        inner: Inner,
        list: Vec<u32>,
        map: BTreeMap<String, String>,
    }

    fn outer() -> Outer {
        Outer {
            x: "1".into(),
            inner: Inner { a: 1, b: None },
            list: vec![1, 2],
            map: BTreeMap::from([("k".to_string(), "v".to_string())]),
        }
    }

    #[test]
    fn names_every_changed_leaf() {
        assert!(changed_fields(&outer(), &outer()).unwrap().is_empty());
        let mut n = outer();
        n.inner.b = Some("b".into());
        n.list.push(3);
        n.map.insert("k2".into(), "w".into());
        n.map.remove("k");
        assert_eq!(
            changed_fields(&outer(), &n).unwrap(),
            vec!["inner.b", "list", "map.k", "map.k2"]
        );
    }

    #[test]
    fn file_contents_are_compared() {
        let dir = std::env::temp_dir().join(format!("shoal-confdiff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("cert.pem");
        std::fs::write(&f, "one").unwrap();
        let before = fingerprints([("tls.cert", Some(f.as_path())), ("tls.none", None)]);
        assert_eq!(before.len(), 1);
        assert!(changed_files(&before, &before).is_empty());
        std::fs::write(&f, "two").unwrap();
        let after = fingerprints([("tls.cert", Some(f.as_path()))]);
        assert_eq!(changed_files(&before, &after), vec!["tls.cert"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
