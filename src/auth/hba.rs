//! PgBouncer's subset of pg_hba.conf (`auth_hba_file`): `local`/`host`/`hostssl`/
//! `hostnossl`; databases `all`/`sameuser`/`replication`/lists; users `all`/lists; addresses
//! `all`, CIDR or address + mask; methods trust/reject/md5/password/scram-sha-256/cert/peer.
//! `map=NAME` on a rule names a user-name map of `auth_ident_file` ([`IdentMap`]) that
//! `peer` and `cert` use instead of requiring the system name to equal the user name.
//! Parsing and first-match lookup only; applying the method is the login's business.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::ident::IdentMap;

/// The method the first matching rule names (no match = [`HbaMethod::Reject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    /// No password.
    Trust,
    /// Refuse.
    Reject,
    /// md5 (or SCRAM when the stored secret is SCRAM, as `auth_type = md5`).
    Md5,
    /// Cleartext password.
    Password,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// TLS client certificate whose CN is the user name.
    Cert,
    /// Unix socket peer credentials (OS user name = user name).
    Peer,
}

impl HbaMethod {
    fn parse(s: &str) -> Option<HbaMethod> {
        Some(match s {
            "trust" => HbaMethod::Trust,
            "reject" => HbaMethod::Reject,
            "md5" => HbaMethod::Md5,
            "password" => HbaMethod::Password,
            "scram-sha-256" => HbaMethod::ScramSha256,
            "cert" => HbaMethod::Cert,
            "peer" => HbaMethod::Peer,
            _ => return None,
        })
    }

    /// The spelling used in pg_hba.conf.
    pub fn as_str(self) -> &'static str {
        match self {
            HbaMethod::Trust => "trust",
            HbaMethod::Reject => "reject",
            HbaMethod::Md5 => "md5",
            HbaMethod::Password => "password",
            HbaMethod::ScramSha256 => "scram-sha-256",
            HbaMethod::Cert => "cert",
            HbaMethod::Peer => "peer",
        }
    }
}

/// Why an HBA file was refused; names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum HbaError {
    /// The file could not be read.
    #[error("cannot read auth_hba_file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line pgfunnel cannot use.
    #[error("auth_hba_file {}, line {line}: {problem}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: &'static str,
    },
}

/// One connection as HBA sees it.
#[derive(Debug, Clone, Copy)]
pub struct HbaRequest<'a> {
    /// Database asked for.
    pub database: &'a str,
    /// User name from the startup packet.
    pub user: &'a str,
    /// Client address; `None` for a Unix socket.
    pub addr: Option<IpAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Whether the client asked for replication.
    pub replication: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnType {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

/// A database or user name item: quoted names never act as keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    text: String,
    quoted: bool,
}

impl Item {
    fn is_keyword(&self, k: &str) -> bool {
        !self.quoted && self.text == k
    }
}

#[derive(Debug, Clone)]
enum Address {
    All,
    Net { ip: IpAddr, prefix: u32 },
}

#[derive(Debug, Clone)]
struct Rule {
    conn: ConnType,
    databases: Vec<Item>,
    users: Vec<Item>,
    address: Option<Address>,
    method: HbaMethod,
    map: Option<String>,
}

/// A parsed HBA file, with the user-name maps of `auth_ident_file`.
#[derive(Debug, Clone, Default)]
pub struct Hba {
    rules: Vec<Rule>,
    ident: IdentMap,
}

/// The first matching rule's method and user-name map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaMatch {
    /// The rule's method (`Reject` when no rule matched).
    pub method: HbaMethod,
    /// The rule's `map=` option.
    pub map: Option<String>,
}

impl Hba {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Hba, HbaError> {
        let text = std::fs::read_to_string(path).map_err(|source| HbaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Hba::parse(&text).map_err(|(line, problem)| HbaError::Syntax {
            path: path.to_path_buf(),
            line,
            problem,
        })
    }

    /// Parses file text; errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<Hba, (usize, &'static str)> {
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let fields = tokenize(line).map_err(|p| (n + 1, p))?;
            if !fields.is_empty() {
                rules.push(parse_rule(fields).map_err(|p| (n + 1, p))?);
            }
        }
        Ok(Hba {
            rules,
            ident: IdentMap::default(),
        })
    }

    /// Uses the maps of `ident` (auth_ident_file) for `map=` rules.
    pub fn with_ident(self, ident: IdentMap) -> Hba {
        Hba { ident, ..self }
    }

    /// The first rule matching `req`, with its user-name map.
    pub fn lookup_match(&self, req: &HbaRequest<'_>) -> HbaMatch {
        match self.rules.iter().find(|r| r.matches(req)) {
            Some(r) => HbaMatch {
                method: r.method,
                map: r.map.clone(),
            },
            None => HbaMatch {
                method: HbaMethod::Reject,
                map: None,
            },
        }
    }

    /// Whether the system name `system` (OS user for peer, certificate CN for cert) may
    /// log in as `user`: equal names without a map, the ident file's entries with one.
    pub fn name_allowed(&self, map: Option<&str>, system: &str, user: &str) -> bool {
        match map {
            None => system == user,
            Some(m) => self.ident.allows(m, system, user),
        }
    }

    /// The method of the first rule matching `req`; `Reject` when none does.
    pub fn lookup(&self, req: &HbaRequest<'_>) -> HbaMethod {
        self.rules
            .iter()
            .find(|r| r.matches(req))
            .map_or(HbaMethod::Reject, |r| r.method)
    }
}

impl Rule {
    fn matches(&self, req: &HbaRequest<'_>) -> bool {
        let type_ok = match (self.conn, req.addr) {
            (ConnType::Local, None) => true,
            (ConnType::Host, Some(_)) => true,
            (ConnType::HostSsl, Some(_)) => req.tls,
            (ConnType::HostNoSsl, Some(_)) => !req.tls,
            _ => false,
        };
        type_ok && self.address_matches(req.addr) && self.db_matches(req) && self.user_matches(req)
    }

    fn address_matches(&self, addr: Option<IpAddr>) -> bool {
        match (&self.address, addr) {
            (None, None) | (Some(Address::All), Some(_)) => true,
            (Some(Address::Net { ip, prefix }), Some(a)) => in_network(a, *ip, *prefix),
            _ => false,
        }
    }

    fn db_matches(&self, req: &HbaRequest<'_>) -> bool {
        self.databases.iter().any(|d| {
            if d.is_keyword("replication") {
                req.replication
            } else if req.replication {
                false
            } else if d.is_keyword("all") {
                true
            } else if d.is_keyword("sameuser") {
                req.database == req.user
            } else {
                d.text == req.database
            }
        })
    }

    fn user_matches(&self, req: &HbaRequest<'_>) -> bool {
        self.users
            .iter()
            .any(|u| u.is_keyword("all") || u.text == req.user)
    }
}

fn in_network(addr: IpAddr, net: IpAddr, prefix: u32) -> bool {
    let canon = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    };
    match (canon(addr), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[path = "hba_parse.rs"]
mod parse;
use parse::{parse_rule, tokenize};

#[cfg(test)]
#[path = "hba_tests.rs"]
mod tests;
