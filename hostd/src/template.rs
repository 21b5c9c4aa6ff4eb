//! Machine templates: the QEMU arguments of a class of VMs, defined in the
//! configuration of the hostd that runs them (`[templates.NAME]`), with
//! placeholders hostd fills in from the VM's checked values.
//!
//! A QEMU command line never comes from the wire: a VM definition names a
//! template, and the destination of a migration builds the command line
//! from its *own* template of that name (see docs/hostd.md).
//!
//! Placeholder syntax, inside any argument: `{name}`, `{mac}`,
//! `{memory_mb}` (the VM's boot memory, its `max_memory_mb`), `{vcpus}`,
//! `{disk}` (the resolved absolute path of the VM's disk under `image_dir`)
//! and `{tap}` (the VM's tap interface). `{{` and `}}` stand for literal
//! braces; any other use of a brace is an error when the configuration is
//! loaded.

use std::collections::BTreeSet;

use serde::Deserialize;

/// Options hostd adds itself (host-local: QMP, console, pid file, the
/// incoming migration); a template must not contain them.
pub const HOST_LOCAL_OPTIONS: [&str; 7] = [
    "-incoming",
    "-qmp",
    "-name",
    "-serial",
    "-pidfile",
    "-daemonize",
    "-monitor",
];

/// A value hostd substitutes into a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placeholder {
    /// `{name}`: the VM's name.
    Name,
    /// `{mac}`: the VM's MAC address, `aa:bb:cc:dd:ee:ff` lower case.
    Mac,
    /// `{memory_mb}`: the VM's boot memory in MiB (its `max_memory_mb`).
    MemoryMb,
    /// `{vcpus}`: the VM's vCPU count.
    Vcpus,
    /// `{disk}`: the absolute path of the VM's disk image.
    Disk,
    /// `{tap}`: the VM's tap interface.
    Tap,
}

impl Placeholder {
    /// The placeholder of `{word}`, if `word` names one.
    pub fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "name" => Placeholder::Name,
            "mac" => Placeholder::Mac,
            "memory_mb" => Placeholder::MemoryMb,
            "vcpus" => Placeholder::Vcpus,
            "disk" => Placeholder::Disk,
            "tap" => Placeholder::Tap,
            _ => return None,
        })
    }

    /// The word inside the braces.
    pub fn word(self) -> &'static str {
        match self {
            Placeholder::Name => "name",
            Placeholder::Mac => "mac",
            Placeholder::MemoryMb => "memory_mb",
            Placeholder::Vcpus => "vcpus",
            Placeholder::Disk => "disk",
            Placeholder::Tap => "tap",
        }
    }
}

/// A template is unusable, or a VM does not fit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{word}` with a word that is no placeholder.
    #[error("argument {index} ({arg:?}): unknown placeholder {{{word}}} (known: name, mac, memory_mb, vcpus, disk, tap)")]
    UnknownPlaceholder {
        /// Position of the argument.
        index: usize,
        /// The argument.
        arg: String,
        /// The word between the braces.
        word: String,
    },
    /// A `{` without its `}`, or a lone `}`.
    #[error(
        "argument {index} ({arg:?}): unbalanced brace (write {{{{ or }}}} for a literal brace)"
    )]
    Brace {
        /// Position of the argument.
        index: usize,
        /// The argument.
        arg: String,
    },
    /// An option hostd adds itself.
    #[error("argument {index} ({arg:?}) is a host-local option that hostd adds itself")]
    HostLocal {
        /// Position of the argument.
        index: usize,
        /// The argument.
        arg: String,
    },
    /// No arguments at all.
    #[error("no args")]
    Empty,
    /// The template uses a placeholder the VM has no value for.
    #[error("the template uses {{{0}}} but the VM has no {0}")]
    Missing(&'static str),
}

/// One piece of a template argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Placeholder),
}

/// Splits one argument into literal text and placeholders.
fn pieces(index: usize, arg: &str) -> Result<Vec<Piece>, TemplateError> {
    let brace = || TemplateError::Brace {
        index,
        arg: arg.to_string(),
    };
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '}' => return Err(brace()),
            '{' => {
                let mut word = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => return Err(brace()),
                        Some(w) => word.push(w),
                    }
                }
                let p = Placeholder::from_word(&word).ok_or_else(|| {
                    TemplateError::UnknownPlaceholder {
                        index,
                        arg: arg.to_string(),
                        word,
                    }
                })?;
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(Piece::Value(p));
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// The values a template is filled with, all checked by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// VM name.
    pub name: &'a str,
    /// MAC, lower case.
    pub mac: &'a str,
    /// Boot memory, MiB.
    pub memory_mb: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Absolute path of the disk, if the VM has one.
    pub disk: Option<&'a str>,
    /// Tap interface, if the VM has one.
    pub tap: Option<&'a str>,
}

/// A machine template as configured (`[templates.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MachineTemplate {
    /// The QEMU arguments (after the program name), with placeholders.
    pub args: Vec<String>,
    /// Largest boot memory (`max_memory_mb`) a VM of this template may
    /// have, MiB (default: the global bound).
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// Largest vCPU count a VM of this template may have (default: the
    /// global bound).
    #[serde(default)]
    pub max_vcpus: Option<u32>,
}

impl MachineTemplate {
    /// Checks the template: known placeholders, balanced braces, no
    /// host-local options.
    pub fn check(&self) -> Result<(), TemplateError> {
        if self.args.is_empty() {
            return Err(TemplateError::Empty);
        }
        for (index, arg) in self.args.iter().enumerate() {
            // QEMU takes `--opt` as `-opt`.
            let opt = arg.strip_prefix('-').unwrap_or(arg);
            let opt = format!("-{}", opt.trim_start_matches('-'));
            let opt = opt.split('=').next().unwrap_or(&opt);
            if arg.starts_with('-') && HOST_LOCAL_OPTIONS.contains(&opt) {
                return Err(TemplateError::HostLocal {
                    index,
                    arg: arg.clone(),
                });
            }
            pieces(index, arg)?;
        }
        Ok(())
    }

    /// The placeholders the template uses.
    pub fn placeholders(&self) -> BTreeSet<Placeholder> {
        self.args
            .iter()
            .enumerate()
            .filter_map(|(i, a)| pieces(i, a).ok())
            .flatten()
            .filter_map(|p| match p {
                Piece::Value(v) => Some(v),
                Piece::Text(_) => None,
            })
            .collect()
    }

    /// Whether the template uses `p`.
    pub fn uses(&self, p: Placeholder) -> bool {
        self.placeholders().contains(&p)
    }

    /// The QEMU arguments for `v`: each placeholder replaced by its value.
    pub fn render(&self, v: &Values<'_>) -> Result<Vec<String>, TemplateError> {
        let mut out = Vec::with_capacity(self.args.len());
        for (index, arg) in self.args.iter().enumerate() {
            let mut s = String::new();
            for piece in pieces(index, arg)? {
                match piece {
                    Piece::Text(t) => s.push_str(&t),
                    Piece::Value(p) => s.push_str(&match p {
                        Placeholder::Name => v.name.to_string(),
                        Placeholder::Mac => v.mac.to_string(),
                        Placeholder::MemoryMb => v.memory_mb.to_string(),
                        Placeholder::Vcpus => v.vcpus.to_string(),
                        Placeholder::Disk => {
                            v.disk.ok_or(TemplateError::Missing(p.word()))?.to_string()
                        }
                        Placeholder::Tap => {
                            v.tap.ok_or(TemplateError::Missing(p.word()))?.to_string()
                        }
                    }),
                }
            }
            out.push(s);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> MachineTemplate {
        MachineTemplate {
            args: args.iter().map(|s| s.to_string()).collect(),
            max_memory_mb: None,
            max_vcpus: None,
        }
    }

    const V: Values<'static> = Values {
        name: "web1",
        mac: "52:54:00:00:00:01",
        memory_mb: 128,
        vcpus: 2,
        disk: Some("/var/lib/shoal/images/web1.qcow2"),
        tap: Some("tap-web1"),
    };

    #[test]
    fn placeholders_are_substituted() {
        let tpl = t(&[
            "-m",
            "{memory_mb}",
            "-smp",
            "{vcpus}",
            "-drive",
            "file={disk},if=virtio",
            "-netdev",
            "tap,id=n0,ifname={tap},script=no",
            "-device",
            "virtio-net-pci,netdev=n0,mac={mac}",
            "-uuid-ish={name}-{{literal}}",
        ]);
        tpl.check().unwrap();
        assert_eq!(
            tpl.render(&V).unwrap(),
            [
                "-m",
                "128",
                "-smp",
                "2",
                "-drive",
                "file=/var/lib/shoal/images/web1.qcow2,if=virtio",
                "-netdev",
                "tap,id=n0,ifname=tap-web1,script=no",
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01",
                "-uuid-ish=web1-{literal}",
            ]
        );
        assert!(tpl.uses(Placeholder::Disk) && tpl.uses(Placeholder::Tap));
        assert!(!t(&["-m", "64"]).uses(Placeholder::Disk));
    }

    #[test]
    fn bad_templates_are_refused() {
        for (args, want) in [
            (&["-m", "{memroy_mb}"][..], "unknown placeholder"),
            (&["-m", "{memory_mb"], "unbalanced"),
            (&["-m", "memory_mb}"], "unbalanced"),
            (&["-m", "{{memory_mb}"], "unbalanced"),
            (&["-m", "{me{m}"], "unbalanced"),
            (&["-incoming", "tcp:0:1"], "host-local"),
            (&["--monitor", "tcp:0:1"], "host-local"),
            (&["-qmp=unix:/x"], "host-local"),
            (&[], "no args"),
        ] {
            let e = t(args).check().unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        // Templates can hold values that look like options.
        t(&["-append", "-quiet"]).check().unwrap();
    }

    #[test]
    fn a_missing_value_is_an_error() {
        let tpl = t(&["-drive", "file={disk}"]);
        let v = Values { disk: None, ..V };
        assert_eq!(tpl.render(&v), Err(TemplateError::Missing("disk")));
    }
}
