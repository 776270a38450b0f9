//! URL mode: `pgfunnel postgres://user:pass@host:port/db?sslmode=...` builds a one-database config
//! without a file (listen 127.0.0.1:6432, transaction pooling, SCRAM for clients). Owns URL
//! parsing and those defaults; not how clients then authenticate.

use std::path::{Path, PathBuf};

use url::{Host, Url};

use super::database::{DatabaseEntry, Password, DEFAULT_PORT};
use super::error::{ConfigError, Location};
use super::kinds::{AuthType, PoolMode, SslMode, SslNegotiation};
use super::problem::{Expected, UrlProblem};
use super::settings::Settings;
use super::Config;

/// The pseudo file name that URL-mode entries carry as their location.
pub const URL_ORIGIN: &str = "<url>";

/// TLS parameters given in the URL's query string, libpq's names. The same values are also
/// applied to the `server_tls_*` settings; this keeps what the user wrote (and `sslnegotiation`,
/// which has no setting).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UrlTls {
    /// `sslmode`.
    pub sslmode: Option<SslMode>,
    /// `sslrootcert`: CA file to verify the server.
    pub sslrootcert: Option<PathBuf>,
    /// `sslcert`: client certificate toward the server.
    pub sslcert: Option<PathBuf>,
    /// `sslkey`: key of `sslcert`.
    pub sslkey: Option<PathBuf>,
    /// `sslnegotiation`: `postgres` (SSLRequest) or `direct` TLS.
    pub sslnegotiation: Option<SslNegotiation>,
}

impl Config {
    /// Builds a config for one database from a `postgres://` or `postgresql://` URL. User name
    /// required; password, host (empty = Unix socket; `[::1]` for IPv6; percent-encoded paths
    /// allowed), port (default 5432) and database (default: the user name, as libpq) optional.
    /// Query parameters: sslmode, sslrootcert, sslcert, sslkey, sslnegotiation, application_name.
    /// Errors show the URL without its password and with `-` for missing parts.
    pub fn from_url(text: &str) -> Result<Config, ConfigError> {
        let url = Url::parse(text.trim()).map_err(|e| ConfigError::Url {
            shown: "-".to_owned(),
            problem: UrlProblem::Unparsable(e),
        })?;
        let fail = |problem| ConfigError::Url {
            shown: redacted(&url),
            problem,
        };
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            let scheme = url.scheme().to_owned();
            return Err(fail(UrlProblem::BadScheme { scheme }));
        }
        let entry = entry_from_url(&url).map_err(fail)?;
        let mut settings = Settings {
            listen_addr: vec!["127.0.0.1".to_owned()],
            listen_port: 6432,
            pool_mode: PoolMode::Transaction,
            auth_type: AuthType::ScramSha256,
            ..Settings::default()
        };
        if let Some(tls) = &entry.url_tls {
            apply_tls(&mut settings, tls);
        }
        let warnings = settings.validate(Path::new(URL_ORIGIN))?;
        Ok(Config {
            settings,
            databases: vec![entry],
            fallback: None,
            users: Vec::new(),
            peers: Vec::new(),
            warnings,
            path: None,
            auth_file_path: None,
        })
    }
}

fn entry_from_url(url: &Url) -> Result<DatabaseEntry, UrlProblem> {
    let user = decode(url.username(), "user")?;
    if user.is_empty() {
        return Err(UrlProblem::MissingUser);
    }
    let password = url.password().map(|p| decode(p, "password")).transpose()?;
    let host = match url.host() {
        Some(Host::Ipv6(addr)) => addr.to_string(),
        Some(Host::Ipv4(addr)) => addr.to_string(),
        Some(Host::Domain(name)) => decode(name, "host")?,
        None => String::new(),
    };
    let port = match url.port() {
        Some(0) => return Err(UrlProblem::BadPort),
        Some(port) => port,
        None => DEFAULT_PORT,
    };
    let db = decode(url.path().trim_start_matches('/'), "database")?;
    let db = if db.is_empty() { user.clone() } else { db };
    let location = Location {
        file: PathBuf::from(URL_ORIGIN),
        line: 0,
    };
    let mut entry = DatabaseEntry::new(db.clone(), location);
    entry.hosts = if host.is_empty() {
        Vec::new()
    } else {
        vec![host]
    };
    entry.port = port;
    entry.dbname = Some(db);
    entry.user = Some(user);
    entry.password = password.map(Password::new);
    let tls = apply_params(url, &mut entry)?;
    entry.url_tls = Some(tls);
    Ok(entry)
}

fn apply_params(url: &Url, entry: &mut DatabaseEntry) -> Result<UrlTls, UrlProblem> {
    let mut tls = UrlTls::default();
    for (name, value) in url.query_pairs() {
        let bad = |expected: Expected| UrlProblem::BadParameter {
            name: name.to_string(),
            value: value.to_string(),
            expected,
        };
        match name.as_ref() {
            "sslmode" => tls.sslmode = Some(SslMode::parse(&value).map_err(bad)?),
            "sslnegotiation" => {
                tls.sslnegotiation = Some(SslNegotiation::parse(&value).map_err(bad)?)
            }
            "sslrootcert" => tls.sslrootcert = Some(PathBuf::from(value.as_ref())),
            "sslcert" => tls.sslcert = Some(PathBuf::from(value.as_ref())),
            "sslkey" => tls.sslkey = Some(PathBuf::from(value.as_ref())),
            "application_name" => entry.application_name = Some(value.to_string()),
            other => {
                return Err(UrlProblem::UnknownParameter {
                    name: other.to_owned(),
                })
            }
        }
    }
    let weak = tls.sslmode.is_some_and(|m| m < SslMode::Require);
    if tls.sslnegotiation == Some(SslNegotiation::Direct) && weak {
        // libpq refuses direct TLS with a mode that could fall back to plaintext.
        return Err(UrlProblem::MissingParameter {
            name: "sslmode=require (or stronger)",
            with: "sslnegotiation=direct",
        });
    }
    match (&tls.sslcert, &tls.sslkey) {
        (Some(_), None) => Err(UrlProblem::MissingParameter {
            name: "sslkey",
            with: "sslcert",
        }),
        (None, Some(_)) => Err(UrlProblem::MissingParameter {
            name: "sslcert",
            with: "sslkey",
        }),
        _ => Ok(tls),
    }
}

/// libpq's meaning of the URL's TLS parameters: `sslmode` defaults to `prefer`
/// (`verify-full` with `sslrootcert=system`); `require` with an explicit `sslrootcert` acts
/// as `verify-ca`; `sslrootcert=system` means the system roots (no CA file).
fn apply_tls(settings: &mut Settings, tls: &UrlTls) {
    let system = tls.sslrootcert.as_deref() == Some(Path::new("system"));
    let mut mode = tls.sslmode.unwrap_or(if system {
        SslMode::VerifyFull
    } else {
        SslMode::Prefer
    });
    if mode == SslMode::Require && tls.sslrootcert.is_some() {
        mode = SslMode::VerifyCa;
    }
    settings.server_tls_sslmode = mode;
    settings.server_tls_ca_file = tls.sslrootcert.clone().filter(|_| !system);
    settings.server_tls_cert_file.clone_from(&tls.sslcert);
    settings.server_tls_key_file.clone_from(&tls.sslkey);
}

/// Decodes `%XX` escapes; refuses malformed escapes and invalid UTF-8.
fn decode(text: &str, part: &'static str) -> Result<String, UrlProblem> {
    let bad = UrlProblem::BadPercentEncoding { part };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(|| bad.clone())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad.clone())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad)
}

/// Whether a command-line argument is a database URL rather than a file path
/// (`postgres://` or `postgresql://`), so `pgfunnel postgres://…` runs URL mode.
pub fn looks_like_url(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `text` with the password of every `scheme://user:password@` in it replaced by `***`: a last
/// guard for messages that might quote a URL (a URL given where a file path was expected).
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(tail.len());
        let (token, after) = tail.split_at(end);
        match token.rfind('@') {
            Some(at_sign) => {
                let userinfo = &token[..at_sign];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&token[at_sign..]);
            }
            None => out.push_str(token),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The URL for error messages: still percent-encoded, no password, `-` for what is missing.
fn redacted(url: &Url) -> String {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let host = match url.host() {
        Some(Host::Ipv6(addr)) => format!("[{addr}]"),
        Some(host) => or_dash(&host.to_string()),
        None => "-".to_owned(),
    };
    let port = url.port().unwrap_or(DEFAULT_PORT);
    let db = or_dash(url.path().trim_start_matches('/'));
    format!(
        "{}://{}@{host}:{port}/{db}",
        url.scheme(),
        or_dash(url.username())
    )
}

#[cfg(test)]
#[path = "url_mode_tests.rs"]
mod tests;
