//! Helper macro for wire enums that keep unknown values.

/// Declares a `Copy` enum for a wire number with named values and an
/// `Other(repr)` catch-all, so that any value round-trips:
/// `from_raw(x).to_raw() == x` for every `x`.
macro_rules! wire_enum {
    (
        $(#[$m:meta])*
        $name:ident : $repr:ty {
            $( $var:ident = $val:expr => $s:literal ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $(
                #[doc = concat!("`", $s, "` (", stringify!($val), ").")]
                $var,
            )*
            /// Any other value, kept as is.
            Other($repr),
        }

        impl $name {
            /// Maps a wire value to the enum (unknown values to `Other`).
            pub fn from_raw(v: $repr) -> Self {
                match v {
                    $( $val => Self::$var, )*
                    o => Self::Other(o),
                }
            }
            /// The wire value.
            pub fn to_raw(self) -> $repr {
                match self {
                    $( Self::$var => $val, )*
                    Self::Other(o) => o,
                }
            }
            /// The spec name of the value (`"OTHER"` for unknown values).
            pub fn name(self) -> &'static str {
                match self {
                    $( Self::$var => $s, )*
                    Self::Other(_) => "OTHER",
                }
            }
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                Self::from_raw(v)
            }
        }

        impl From<$name> for $repr {
            fn from(v: $name) -> $repr {
                v.to_raw()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    Self::Other(v) => write!(f, "{}", v),
                    _ => f.write_str(self.name()),
                }
            }
        }
    };
}
