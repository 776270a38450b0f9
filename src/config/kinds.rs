//! The keyword-valued settings: pool mode, auth type, TLS modes, load balancing, log format, and
//! the health-check query. Each keyword enum parses and prints PgBouncer's spelling.

use std::fmt;

use super::problem::Expected;

/// Declares a keyword enum with `NAMES`, `as_str`, `parse` and `Display`, all from one list so the
/// spellings cannot drift apart.
macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every accepted spelling, in PgBouncer's documentation order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// PgBouncer's spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// Parses PgBouncer's spelling, case-insensitively; on failure lists what is allowed.
            pub fn parse(value: &str) -> Result<Self, Expected> {
                let lower = value.trim().to_ascii_lowercase();
                match lower.as_str() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(Expected::OneOf(Self::NAMES)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

keyword_enum! {
    /// When a server connection goes back to the pool (`pool_mode`).
    PoolMode {
        /// When the client disconnects (PgBouncer's default).
        Session => "session",
        /// When a transaction ends (ReadyForQuery `I` with nothing outstanding).
        Transaction => "transaction",
        /// After each statement; multi-statement transactions are refused.
        Statement => "statement",
    }
}

keyword_enum! {
    /// How clients authenticate (`auth_type`).
    AuthType {
        /// User name from the TLS client certificate.
        Cert => "cert",
        /// md5, or SCRAM when the stored secret is SCRAM (PgBouncer's default).
        Md5 => "md5",
        /// SCRAM-SHA-256 only.
        ScramSha256 => "scram-sha-256",
        /// Clear-text password (deprecated).
        Plain => "plain",
        /// No password; the user must still exist.
        Trust => "trust",
        /// No password and user name ignored (needs forced users).
        Any => "any",
        /// Per-connection method from `auth_hba_file`.
        Hba => "hba",
        /// PAM (service "pgbouncer").
        Pam => "pam",
        /// LDAP with `auth_ldap_options`.
        Ldap => "ldap",
    }
}

keyword_enum! {
    /// A TLS mode, for clients (`client_tls_sslmode`) or servers (`server_tls_sslmode`, URL `sslmode`).
    SslMode {
        /// Plain TCP only.
        Disable => "disable",
        /// TLS if the other side asks (client side) / plain first (server side).
        Allow => "allow",
        /// TLS if possible.
        Prefer => "prefer",
        /// TLS required, certificate not checked.
        Require => "require",
        /// TLS required, certificate chain checked.
        VerifyCa => "verify-ca",
        /// TLS required, chain and host name checked.
        VerifyFull => "verify-full",
    }
}

keyword_enum! {
    /// How a database with several hosts picks one (`load_balance_hosts`).
    LoadBalanceHosts {
        /// Next host for each new server connection (PgBouncer's default).
        RoundRobin => "round-robin",
        /// Stay on a host until a connect fails.
        Disable => "disable",
    }
}

keyword_enum! {
    /// pgfunnel's log line format (`log_format`).
    LogFormat {
        /// Human-readable lines (default).
        Text => "text",
        /// One JSON object per line.
        Json => "json",
    }
}

keyword_enum! {
    /// How TLS starts toward the server in URL mode (libpq's `sslnegotiation`).
    SslNegotiation {
        /// SSLRequest first, then TLS (the classic way).
        Postgres => "postgres",
        /// TLS handshake immediately with ALPN `postgresql` (PostgreSQL 17+).
        Direct => "direct",
    }
}

/// The health check run on a server connection taken from the pool (`server_check_query`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerCheckQuery {
    /// PgBouncer 1.25's default `<empty>`: send an empty query, the cheapest round trip.
    #[default]
    EmptyQuery,
    /// The setting is empty: no health check.
    Disabled,
    /// Run this SQL.
    Sql(String),
}

impl ServerCheckQuery {
    /// The literal PgBouncer uses for the empty-query check.
    pub const EMPTY_QUERY_LITERAL: &'static str = "<empty>";

    /// Parses the setting: `<empty>`, nothing, or SQL. Never fails.
    pub fn parse(value: &str) -> Self {
        match value.trim() {
            "" => Self::Disabled,
            Self::EMPTY_QUERY_LITERAL => Self::EmptyQuery,
            sql => Self::Sql(sql.to_owned()),
        }
    }

    /// The setting as written in the file.
    pub fn as_config_text(&self) -> &str {
        match self {
            Self::EmptyQuery => Self::EMPTY_QUERY_LITERAL,
            Self::Disabled => "",
            Self::Sql(sql) => sql,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_round_trip_and_ignore_case() {
        for name in AuthType::NAMES {
            let parsed = AuthType::parse(name).expect("listed name parses");
            assert_eq!(parsed.as_str(), *name);
        }
        assert_eq!(PoolMode::parse("Transaction"), Ok(PoolMode::Transaction));
        assert_eq!(SslMode::parse("verify-full"), Ok(SslMode::VerifyFull));
        assert_eq!(
            LoadBalanceHosts::parse("round-robin"),
            Ok(LoadBalanceHosts::RoundRobin)
        );
    }

    #[test]
    fn unknown_keyword_lists_allowed_values() {
        let err = PoolMode::parse("sessionx").expect_err("not a pool mode");
        assert_eq!(err.to_string(), "one of session, transaction, statement");
    }

    #[test]
    fn server_check_query_distinguishes_empty_and_disabled() {
        assert_eq!(
            ServerCheckQuery::parse("<empty>"),
            ServerCheckQuery::EmptyQuery
        );
        assert_eq!(ServerCheckQuery::parse(""), ServerCheckQuery::Disabled);
        assert_eq!(
            ServerCheckQuery::parse("select 1"),
            ServerCheckQuery::Sql("select 1".into())
        );
        assert_eq!(ServerCheckQuery::default().as_config_text(), "<empty>");
    }
}
