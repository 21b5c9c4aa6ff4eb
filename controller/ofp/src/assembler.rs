//! Reassembly of multipart replies split with the MORE flag.

use crate::error::ReassemblyError;
use crate::multipart::{multipart_flags, MultipartReply, MultipartReplyBody};

/// Default cap on the wire bytes of one reassembled reply: 16 MiB.
pub const DEFAULT_MULTIPART_CAP: usize = 16 << 20;

/// MORE-flag reassembly: feed the replies of one xid in order; returns the
/// combined reply when the last part (MORE clear) arrives. List bodies are
/// concatenated; `TableFeatures` and `Other` raw bodies are concatenated
/// byte-wise (their entries are self-delimited). DESC, AGGREGATE and
/// METER_FEATURES cannot be split: a second part is an error.
///
/// After a completed reply or an error the assembler is empty again and can
/// be reused for the next request.
#[derive(Debug, Clone)]
pub struct MultipartAssembler {
    cap: usize,
    total: usize,
    acc: Option<MultipartReply>,
}

impl Default for MultipartAssembler {
    fn default() -> Self {
        Self::new(DEFAULT_MULTIPART_CAP)
    }
}

impl MultipartAssembler {
    /// An empty assembler refusing replies over `cap_bytes` wire bytes.
    pub fn new(cap_bytes: usize) -> Self {
        MultipartAssembler {
            cap: cap_bytes,
            total: 0,
            acc: None,
        }
    }

    /// Whether a reply is partly gathered.
    pub fn in_progress(&self) -> bool {
        self.acc.is_some()
    }

    /// Wire bytes gathered so far.
    pub fn wire_bytes(&self) -> usize {
        self.total
    }

    /// Drops whatever was gathered.
    pub fn reset(&mut self) {
        self.acc = None;
        self.total = 0;
    }

    /// Adds one part (`wire_len` = its message length on the wire).
    pub fn push(
        &mut self,
        part: MultipartReply,
        wire_len: usize,
    ) -> Result<Option<MultipartReply>, ReassemblyError> {
        let r = self.push_inner(part, wire_len);
        if r.is_err() {
            self.reset();
        }
        r
    }

    fn push_inner(
        &mut self,
        part: MultipartReply,
        wire_len: usize,
    ) -> Result<Option<MultipartReply>, ReassemblyError> {
        let total = self.total.saturating_add(wire_len);
        if total > self.cap {
            return Err(ReassemblyError::TooLarge {
                total,
                cap: self.cap,
            });
        }
        self.total = total;
        let more = part.more();
        let merged = match self.acc.take() {
            None => part,
            Some(mut acc) => {
                let (first, got) = (acc.body.mp_type(), part.body.mp_type());
                if first != got {
                    return Err(ReassemblyError::TypeMismatch { first, got });
                }
                merge(&mut acc.body, part.body)?;
                acc.flags = part.flags;
                acc
            }
        };
        if more {
            self.acc = Some(merged);
            Ok(None)
        } else {
            self.total = 0;
            let mut done = merged;
            done.flags &= !multipart_flags::MORE;
            Ok(Some(done))
        }
    }
}

fn merge(acc: &mut MultipartReplyBody, part: MultipartReplyBody) -> Result<(), ReassemblyError> {
    use MultipartReplyBody as B;
    match (acc, part) {
        (B::Flow(a), B::Flow(b)) => a.extend(b),
        (B::PortStats(a), B::PortStats(b)) => a.extend(b),
        (B::Queue(a), B::Queue(b)) => a.extend(b),
        (B::Meter(a), B::Meter(b)) => a.extend(b),
        (B::MeterConfig(a), B::MeterConfig(b)) => a.extend(b),
        (B::PortDesc(a), B::PortDesc(b)) => a.extend(b),
        (B::Table(a), B::Table(b)) => a.extend(b),
        (B::Group(a), B::Group(b)) => a.extend(b),
        (B::GroupDesc(a), B::GroupDesc(b)) => a.extend(b),
        (B::TableFeatures(a), B::TableFeatures(b)) => a.extend(b),
        (B::Other { body: a, .. }, B::Other { body: b, .. }) => a.extend(b),
        (a, _) => {
            return Err(ReassemblyError::NotConcatenable {
                mp_type: a.mp_type(),
            })
        }
    }
    Ok(())
}
