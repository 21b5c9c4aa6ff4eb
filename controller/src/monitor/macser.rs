//! Serde for [`ofp::MacAddr`] as `"aa:bb:cc:dd:ee:ff"` (the codec crate has
//! no serde dependency). Use with `#[serde(with = "crate::monitor::macser")]`.

use ofp::MacAddr;
use serde::{Deserialize, Deserializer, Serializer};

/// Serialises as the colon-separated lowercase hex string.
pub fn serialize<S: Serializer>(m: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
    let t = m.text();
    match std::str::from_utf8(&t) {
        Ok(text) => s.serialize_str(text),
        Err(_) => s.collect_str(m),
    }
}

/// Parses the colon-separated hex string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a MAC address")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct W(#[serde(with = "super")] MacAddr);

    #[test]
    fn round_trip_and_error() {
        let w = W(MacAddr([0xaa, 0, 1, 2, 3, 0xff]));
        let j = serde_json::to_string(&w).unwrap();
        assert_eq!(j, "\"aa:00:01:02:03:ff\"");
        assert_eq!(serde_json::from_str::<W>(&j).unwrap(), w);
        assert!(serde_json::from_str::<W>("\"zz\"").is_err());
    }
}
