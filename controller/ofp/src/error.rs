//! Error values of the codec.

/// Why a byte buffer could not be decoded.
///
/// Every decoder returns one of these instead of panicking; `what` names the
/// structure (or field) that was being read, for log lines.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer (or the region delimited by an enclosing length field) ends
    /// before the structure does.
    #[error("{what}: truncated, need {need} bytes, have {have}")]
    Truncated {
        /// Structure being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A length field is impossible: too small, not aligned as required, or
    /// larger than its container.
    #[error("{what}: bad length {len}")]
    BadLength {
        /// Structure whose length field is wrong.
        what: &'static str,
        /// The length value found.
        len: usize,
    },
    /// The message header carries a version other than OpenFlow 1.3 (0x04).
    #[error("unsupported OpenFlow version 0x{0:02x}")]
    BadVersion(u8),
    /// A type field has a value that is not allowed here (e.g. a match type
    /// other than OXM, or a multipart type other than the one asked for).
    #[error("{what}: unexpected type {value}")]
    BadType {
        /// Field being read.
        what: &'static str,
        /// The value found.
        value: u32,
    },
    /// The structure ends before the enclosing length does.
    #[error("{what}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Structure being read.
        what: &'static str,
        /// Number of bytes left over.
        extra: usize,
    },
    /// Anything else that makes the bytes invalid.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The whole message would be longer than [`crate::MAX_MESSAGE_LEN`].
    #[error("message too long: {len} bytes (max 65535)")]
    TooLong {
        /// Length the message would have.
        len: usize,
    },
    /// A nested structure or field does not fit its length field (OXM payload
    /// over 255 bytes, an action list over 65535 bytes, a string longer than
    /// its fixed-size field, ...).
    #[error("{what}: {len} bytes do not fit (max {max})")]
    FieldTooLong {
        /// Structure or field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The maximum the wire format allows.
        max: usize,
    },
    /// A raw instruction or action whose length would not be a multiple of 8.
    #[error("{what}: length {len} is not a multiple of 8")]
    Misaligned {
        /// Structure.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// Why [`crate::MultipartAssembler::push`] refused a part.
///
/// After an error the assembler is reset: the parts gathered so far are
/// dropped.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReassemblyError {
    /// A part's body type differs from the first part's.
    #[error("multipart type changed mid-stream: {first} then {got}")]
    TypeMismatch {
        /// Multipart type of the first part.
        first: u16,
        /// Multipart type of the offending part.
        got: u16,
    },
    /// The wire bytes of all parts together exceed the cap.
    #[error("multipart reply too large: {total} bytes over the cap of {cap}")]
    TooLarge {
        /// Total wire bytes so far, including the refused part.
        total: usize,
        /// The configured cap.
        cap: usize,
    },
    /// A second part arrived for a type whose body cannot be concatenated
    /// (DESC, AGGREGATE, METER_FEATURES).
    #[error("multipart type {mp_type} cannot be split over several parts")]
    NotConcatenable {
        /// The multipart type.
        mp_type: u16,
    },
}
