//! hostd <-> controller wire types (JSON over HTTP, bearer token).
