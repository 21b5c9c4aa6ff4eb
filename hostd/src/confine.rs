//! Paths that come from the wire (a QEMU VM's disk, a netns VM's scenario
//! file) name files *inside* a directory this host configures
//! (`image_dir`, `scenario_dir`): they are relative, made of plain
//! components, and must still lie inside the directory once every symlink is
//! resolved. The functions that touch the file system block; call them off
//! the async runtime (`tokio::task::spawn_blocking`).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Longest relative path accepted, bytes.
pub const MAX_RELATIVE_LEN: usize = 255;

/// A path is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// Empty, absolute, too long, or a component that is not plain.
    #[error("path {path:?}: {why}")]
    NotPlain {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The file (or the directory) cannot be resolved or read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Once symlinks are resolved, the path leaves the directory.
    #[error("{path:?} resolves to {resolved}, outside {dir}")]
    Escapes {
        /// The path as given.
        path: String,
        /// Where it really leads.
        resolved: String,
        /// The directory it must stay in.
        dir: String,
    },
    /// Not a regular file.
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// The file is larger than allowed.
    #[error("{path} is larger than {cap} bytes")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit, bytes.
        cap: u64,
    },
}

/// Is `b` allowed in one component of a relative path?
fn plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

/// Checks a relative path without touching the file system: 1 to
/// [`MAX_RELATIVE_LEN`] bytes, not absolute, components of `[A-Za-z0-9._-]`
/// separated by single `/`, none of them `.` or `..` or starting with `-`.
pub fn check_relative(path: &str) -> Result<(), ConfineError> {
    let bad = |why| {
        Err(ConfineError::NotPlain {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_RELATIVE_LEN {
        return bad("longer than 255 bytes");
    }
    if path.starts_with('/') {
        return bad("absolute (give it relative to the configured directory)");
    }
    for c in path.split('/') {
        if c.is_empty() {
            return bad("empty component (`//` or a trailing `/`)");
        }
        if c == "." || c == ".." {
            return bad("`.` or `..` component");
        }
        if c.starts_with('-') {
            return bad("component starting with `-`");
        }
        if !c.bytes().all(plain_byte) {
            return bad("characters other than [A-Za-z0-9._-] in a component");
        }
    }
    // Belt and braces: what the standard library makes of it.
    if !Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return bad("not a plain relative path");
    }
    Ok(())
}

/// Resolves `rel` inside `dir`: checks it with [`check_relative`],
/// canonicalizes `dir/rel` (every symlink resolved; the file must exist) and
/// checks that the result is a regular file inside the canonical `dir`.
/// Blocks.
pub fn resolve(dir: &Path, rel: &str) -> Result<PathBuf, ConfineError> {
    check_relative(rel)?;
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| ConfineError::Io { path, source }
    };
    let root = dir.canonicalize().map_err(io(dir))?;
    let joined = root.join(rel);
    let real = joined.canonicalize().map_err(io(&joined))?;
    if !real.starts_with(&root) || real == root {
        return Err(ConfineError::Escapes {
            path: rel.to_string(),
            resolved: real.display().to_string(),
            dir: root.display().to_string(),
        });
    }
    let meta = std::fs::metadata(&real).map_err(io(&real))?;
    if !meta.is_file() {
        return Err(ConfineError::NotAFile(real.display().to_string()));
    }
    Ok(real)
}

/// Reads a text file of at most `cap` bytes (a larger one is an error, read
/// no further than `cap + 1` bytes). Blocks.
pub fn read_capped(path: &Path, cap: u64) -> Result<String, ConfineError> {
    let io = |source| ConfineError::Io {
        path: path.display().to_string(),
        source,
    };
    let too_large = || ConfineError::TooLarge {
        path: path.display().to_string(),
        cap,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    if f.metadata().map_err(io)?.len() > cap {
        return Err(too_large());
    }
    let mut text = String::new();
    f.take(cap.saturating_add(1))
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch tree: `root/images/{a.img, sub/b.img, link-out, link-in,
    /// dir}` and `root/outside.img`.
    fn tree(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("shd-confine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let images = root.join("images");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::create_dir_all(images.join("dir")).unwrap();
        std::fs::write(images.join("a.img"), "a").unwrap();
        std::fs::write(images.join("sub/b.img"), "b").unwrap();
        std::fs::write(root.join("outside.img"), "secret").unwrap();
        std::os::unix::fs::symlink(root.join("outside.img"), images.join("link-out")).unwrap();
        std::os::unix::fs::symlink("sub/b.img", images.join("link-in")).unwrap();
        std::os::unix::fs::symlink("/etc", images.join("etc")).unwrap();
        root
    }

    #[test]
    fn relative_paths_are_plain() {
        for ok in ["a.img", "sub/b.img", "a-b_c.d", ".hidden"] {
            check_relative(ok).unwrap();
        }
        for bad in [
            "",
            "/etc/shadow",
            "../etc/shadow",
            "a/../../etc/shadow",
            "a/..",
            "./a",
            "a//b",
            "a/",
            "-rf",
            "a/-b",
            "a,file.driver=x",
            "a b",
            "a\nb",
            "a\0b",
            "é.img",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_relative(&"a".repeat(256)).is_err());
        check_relative(&"a".repeat(255)).unwrap();
    }

    #[test]
    fn resolve_stays_inside() {
        let root = tree("resolve");
        let images = root.join("images");
        let real = images.canonicalize().unwrap();
        assert_eq!(resolve(&images, "a.img").unwrap(), real.join("a.img"));
        assert_eq!(
            resolve(&images, "sub/b.img").unwrap(),
            real.join("sub/b.img")
        );
        // A symlink that stays inside resolves to its target.
        assert_eq!(resolve(&images, "link-in").unwrap(), real.join("sub/b.img"));
        // Symlink escapes.
        let e = resolve(&images, "link-out").unwrap_err();
        assert!(matches!(e, ConfineError::Escapes { .. }), "{e}");
        let e = resolve(&images, "etc/shadow").unwrap_err();
        assert!(
            matches!(e, ConfineError::Escapes { .. } | ConfineError::Io { .. }),
            "{e}"
        );
        assert!(resolve(&images, "etc/hostname").is_err());
        // `..` is refused before the file system is asked.
        let e = resolve(&images, "../outside.img").unwrap_err();
        assert!(matches!(e, ConfineError::NotPlain { .. }), "{e}");
        assert!(resolve(&images, "/etc/passwd").is_err());
        // Missing files and directories are errors.
        assert!(matches!(
            resolve(&images, "nope.img").unwrap_err(),
            ConfineError::Io { .. }
        ));
        assert!(matches!(
            resolve(&images, "dir").unwrap_err(),
            ConfineError::NotAFile(_)
        ));
        assert!(resolve(&root.join("no-such-dir"), "a.img").is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn reading_is_capped() {
        let root = tree("cap");
        let f = root.join("images/big");
        std::fs::write(&f, vec![b'x'; 100]).unwrap();
        assert_eq!(read_capped(&f, 100).unwrap().len(), 100);
        let e = read_capped(&f, 99).unwrap_err();
        assert!(matches!(e, ConfineError::TooLarge { cap: 99, .. }), "{e}");
        assert!(e.to_string().contains("larger than 99 bytes"), "{e}");
        assert!(read_capped(&root.join("none"), 10).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
