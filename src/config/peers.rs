//! The `[peers]` section (PgBouncer 1.19+ peering) and the `peer_id` value: `id = host=…
//! port=… pool_size=…`, where `host` is an address, a DNS name or a Unix socket directory.

use super::connstr::parse_conn_string;
use super::error::{ConfigError, Location};
use super::problem::Expected;
use super::value::{parse_port, parse_u32};
use super::warning::{ConfigWarning, WarningMessage};

/// A peer's port when its entry names none: PgBouncer's listen_port default.
pub const DEFAULT_PEER_PORT: u16 = 6432;

/// Largest peer id: 14 bits, as PgBouncer (the id travels in two bytes of the cancel key).
pub const MAX_PEER_ID: u16 = 16383;

/// The `peer_id` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerIdSetting {
    /// `0`: peering off; cancel keys are fully random.
    #[default]
    Off,
    /// A fixed id, 1 to 16383.
    Fixed(u16),
    /// `auto`: derived at startup from this host's IPv4 address (low 14 bits), for
    /// replicas that share one config file (a Kubernetes Deployment).
    Auto,
}

impl PeerIdSetting {
    /// Parses `0`-`16383` or `auto`.
    pub fn parse(value: &str) -> Result<PeerIdSetting, Expected> {
        let v = value.trim();
        if v.eq_ignore_ascii_case("auto") {
            return Ok(PeerIdSetting::Auto);
        }
        let n = parse_u32(v, 0, u32::from(MAX_PEER_ID)).map_err(|_| Expected::PeerId)?;
        Ok(match u16::try_from(n) {
            Ok(0) | Err(_) => PeerIdSetting::Off,
            Ok(id) => PeerIdSetting::Fixed(id),
        })
    }

    /// As written in a config file.
    pub fn show(&self) -> String {
        match self {
            PeerIdSetting::Off => "0".into(),
            PeerIdSetting::Fixed(id) => id.to_string(),
            PeerIdSetting::Auto => "auto".into(),
        }
    }
}

/// One `[peers]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer's `peer_id`.
    pub id: u16,
    /// Address, DNS name, or Unix socket directory (starts with `/`).
    pub host: String,
    /// Port (also names the Unix socket file); default 6432.
    pub port: u16,
    /// Cancel requests forwarded to this peer at once; `None` = `default_pool_size`.
    pub pool_size: Option<u32>,
}

/// Parses one `[peers]` line. Unknown options are warnings, as in `[databases]`.
pub fn parse_peer_entry(
    key: &str,
    value: &str,
    location: &Location,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<PeerEntry, ConfigError> {
    let bad = |k: &str, v: &str, expected: Expected| ConfigError::InvalidEntryValue {
        location: location.clone(),
        entry: key.to_owned(),
        key: k.to_owned(),
        value: v.to_owned(),
        expected,
    };
    let id = match parse_u32(key.trim(), 1, u32::from(MAX_PEER_ID)).map(u16::try_from) {
        Ok(Ok(id)) => id,
        _ => return Err(bad("peer id", key, Expected::PeerId)),
    };
    let pairs = parse_conn_string(value).map_err(|problem| ConfigError::ConnString {
        location: location.clone(),
        entry: key.to_owned(),
        problem,
    })?;
    let mut entry = PeerEntry {
        id,
        host: String::new(),
        port: DEFAULT_PEER_PORT,
        pool_size: None,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "host" => entry.host = v,
            "port" => entry.port = parse_port(&v).map_err(|e| bad(&k, &v, e))?,
            "pool_size" => {
                entry.pool_size = Some(parse_u32(&v, 1, 100_000).map_err(|e| bad(&k, &v, e))?)
            }
            _ => warnings.push(ConfigWarning::new(
                location,
                k,
                WarningMessage::UnknownOption {
                    entry: key.to_owned(),
                },
            )),
        }
    }
    if entry.host.is_empty() {
        return Err(bad("host", "", Expected::PeerHost));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Location {
        Location {
            file: "pgbouncer.ini".into(),
            line: 7,
        }
    }

    #[test]
    fn peer_entries_parse_host_port_and_pool_size() {
        let mut w = Vec::new();
        let e = parse_peer_entry("3", "host=10.0.0.3 port=6433 pool_size=4", &at(), &mut w)
            .expect("valid");
        assert_eq!(
            e,
            PeerEntry {
                id: 3,
                host: "10.0.0.3".into(),
                port: 6433,
                pool_size: Some(4)
            }
        );
        let e = parse_peer_entry("16383", "host=/tmp/p2", &at(), &mut w).expect("unix dir");
        assert_eq!((e.port, e.pool_size), (6432, None));
        assert!(w.is_empty());
    }

    #[test]
    fn bad_peer_entries_are_errors_naming_the_entry() {
        let mut w = Vec::new();
        for (key, value, shown) in [
            ("0", "host=a", "pgbouncer.ini:7: 0: peer id = \"0\""),
            ("16384", "host=a", "16384: peer id = \"16384\""),
            ("x", "host=a", "x: peer id = \"x\""),
            ("2", "port=1", "2: host = \"\": expected a host"),
            ("2", "host=a port=0", "2: port = \"0\""),
        ] {
            let e = parse_peer_entry(key, value, &at(), &mut w).expect_err(key);
            assert!(e.to_string().contains(shown), "{e}");
        }
    }

    #[test]
    fn peer_id_takes_a_number_zero_or_auto() {
        assert_eq!(PeerIdSetting::parse("0"), Ok(PeerIdSetting::Off));
        assert_eq!(PeerIdSetting::parse("7"), Ok(PeerIdSetting::Fixed(7)));
        assert_eq!(PeerIdSetting::parse("AUTO"), Ok(PeerIdSetting::Auto));
        assert_eq!(PeerIdSetting::parse("16384"), Err(Expected::PeerId));
        assert_eq!(PeerIdSetting::Fixed(9).show(), "9");
    }
}
