//! Checked byte access shared by all decoders and encoders.
//!
//! A [`View`] is checked once against the fixed length of a structure; its
//! accessors then read the field offsets that each structure declares as
//! consts. Accessors never panic: should an offset ever lie outside the
//! checked length (a bug, caught by `debug_assert!` in tests), they return 0.

use crate::error::{DecodeError, EncodeError};
use crate::mac::MacAddr;

/// `buf[at..at + len]`, or [`DecodeError::Truncated`].
#[inline]
pub(crate) fn slice<'a>(
    buf: &'a [u8],
    at: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], DecodeError> {
    let end = at.saturating_add(len);
    buf.get(at..end).ok_or(DecodeError::Truncated {
        what,
        need: end,
        have: buf.len(),
    })
}

/// `buf[at..]`, or [`DecodeError::Truncated`].
#[inline]
pub(crate) fn rest<'a>(
    buf: &'a [u8],
    at: usize,
    what: &'static str,
) -> Result<&'a [u8], DecodeError> {
    buf.get(at..).ok_or(DecodeError::Truncated {
        what,
        need: at,
        have: buf.len(),
    })
}

/// Rounds `n` up to a multiple of 8.
#[inline]
pub(crate) const fn align8(n: usize) -> usize {
    n.saturating_add(7) & !7
}

/// A structure view whose buffer was checked once to hold at least the
/// structure's fixed part.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    buf: &'a [u8],
}

impl<'a> View<'a> {
    /// Checks that `buf` holds at least `min_len` bytes.
    #[inline]
    pub(crate) fn new(
        buf: &'a [u8],
        min_len: usize,
        what: &'static str,
    ) -> Result<Self, DecodeError> {
        if buf.len() < min_len {
            return Err(DecodeError::Truncated {
                what,
                need: min_len,
                have: buf.len(),
            });
        }
        Ok(View { buf })
    }

    /// Checks that `buf` is exactly `len` bytes.
    #[inline]
    pub(crate) fn exact(
        buf: &'a [u8],
        len: usize,
        what: &'static str,
    ) -> Result<Self, DecodeError> {
        if buf.len() < len {
            return Err(DecodeError::Truncated {
                what,
                need: len,
                have: buf.len(),
            });
        }
        if buf.len() > len {
            return Err(DecodeError::TrailingBytes {
                what,
                extra: buf.len() - len,
            });
        }
        Ok(View { buf })
    }

    #[inline]
    pub(crate) fn arr<const N: usize>(&self, at: usize) -> [u8; N] {
        debug_assert!(
            at + N <= self.buf.len(),
            "field offset {at}+{N} outside checked view"
        );
        self.buf
            .get(at..at.saturating_add(N))
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .unwrap_or([0; N])
    }

    #[inline]
    pub(crate) fn u8(&self, at: usize) -> u8 {
        self.arr::<1>(at)[0]
    }
    #[inline]
    pub(crate) fn u16(&self, at: usize) -> u16 {
        u16::from_be_bytes(self.arr(at))
    }
    #[inline]
    pub(crate) fn u32(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.arr(at))
    }
    #[inline]
    pub(crate) fn u64(&self, at: usize) -> u64 {
        u64::from_be_bytes(self.arr(at))
    }
    #[inline]
    pub(crate) fn mac(&self, at: usize) -> MacAddr {
        MacAddr(self.arr(at))
    }
    /// The bytes from `at` to the end of the buffer (empty when `at` is past it).
    #[inline]
    pub(crate) fn tail(&self, at: usize) -> &'a [u8] {
        self.buf.get(at..).unwrap_or_default()
    }
    /// `len` bytes at `at` (empty when outside; offsets are consts checked by the view).
    #[inline]
    pub(crate) fn bytes(&self, at: usize, len: usize) -> &'a [u8] {
        debug_assert!(at + len <= self.buf.len());
        self.buf.get(at..at.saturating_add(len)).unwrap_or_default()
    }
}

/// A fixed-size region just appended to an output buffer, written by offset.
pub(crate) struct Fixed<'a>(&'a mut [u8]);

/// Appends `len` zero bytes to `out` and returns them for writing.
#[inline]
pub(crate) fn put_fixed(out: &mut Vec<u8>, len: usize) -> Fixed<'_> {
    let start = out.len();
    out.resize(start + len, 0);
    Fixed(out.get_mut(start..).unwrap_or_default())
}

impl Fixed<'_> {
    #[inline]
    pub(crate) fn bytes(&mut self, at: usize, v: &[u8]) {
        debug_assert!(
            at + v.len() <= self.0.len(),
            "field offset outside fixed region"
        );
        if let Some(dst) = self.0.get_mut(at..at.saturating_add(v.len())) {
            dst.copy_from_slice(v);
        }
    }
    #[inline]
    pub(crate) fn u8(&mut self, at: usize, v: u8) {
        self.bytes(at, &[v]);
    }
    #[inline]
    pub(crate) fn u16(&mut self, at: usize, v: u16) {
        self.bytes(at, &v.to_be_bytes());
    }
    #[inline]
    pub(crate) fn u32(&mut self, at: usize, v: u32) {
        self.bytes(at, &v.to_be_bytes());
    }
    #[inline]
    pub(crate) fn u64(&mut self, at: usize, v: u64) {
        self.bytes(at, &v.to_be_bytes());
    }
}

/// Writes a big-endian u16 at `at` of `out` (a length field patched after
/// the structure was emitted).
#[inline]
pub(crate) fn patch_u16(out: &mut [u8], at: usize, v: u16) {
    debug_assert!(at + 2 <= out.len());
    if let Some(dst) = out.get_mut(at..at.saturating_add(2)) {
        dst.copy_from_slice(&v.to_be_bytes());
    }
}

/// Converts a length to a u16 length field.
#[inline]
pub(crate) fn len16(len: usize, what: &'static str) -> Result<u16, EncodeError> {
    u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
        what,
        len,
        max: u16::MAX as usize,
    })
}

/// Finishes a structure that started at `start` in `out` and whose u16
/// length field sits at `start + len_at`: patches the length (the unpadded
/// length when `pad_after` is set, the structure then being zero-padded to
/// 8 bytes; the length includes everything otherwise).
pub(crate) fn finish_len(
    out: &mut Vec<u8>,
    start: usize,
    len_at: usize,
    pad_after: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    let len = out.len() - start;
    let v = len16(len, what)?;
    patch_u16(out, start + len_at, v);
    if pad_after {
        out.resize(start + align8(len), 0);
    }
    Ok(())
}

/// Zero-pads `out` so that the structure started at `start` is a multiple
/// of 8 bytes long.
#[inline]
pub(crate) fn pad_to8(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    out.resize(start + align8(len), 0);
}

/// Decodes a NUL-terminated, NUL-padded fixed-size string (lossy UTF-8).
pub(crate) fn fixed_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default()).into_owned()
}

/// Checks that a string fits a fixed-size field of `max` bytes.
pub(crate) fn check_str(s: &str, max: usize, what: &'static str) -> Result<(), EncodeError> {
    if s.len() > max {
        return Err(EncodeError::FieldTooLong {
            what,
            len: s.len(),
            max,
        });
    }
    Ok(())
}
