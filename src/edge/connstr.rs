//! The `Neon-Connection-String` header of a `/sql` request: `postgres://user:password@host/db?...`.
//! Only the user, password, database and the `application_name` / `options` parameters are
//! used; the host and port are ignored and never dialled (the database and user pick the
//! pool, as for a TCP client).

use std::borrow::Cow;

/// What a `/sql` request logs in as.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Login user.
    pub user: String,
    /// Cleartext password (never logged).
    pub password: String,
    /// Database (the user's name when the path is empty).
    pub database: String,
    /// Startup parameters taken from the query string (`application_name`, `options`).
    pub params: Vec<(String, String)>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("user", &self.user)
            .field("database", &self.database)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Startup parameters a connection string may set for a `/sql` request.
const KEPT_PARAMS: &[&str] = &["application_name", "options"];

/// Parses the header. The error says what is wrong without repeating the value (it holds
/// a password).
pub fn parse(text: &str) -> Result<ConnInfo, &'static str> {
    let url = url::Url::parse(text.trim())
        .map_err(|_| "Neon-Connection-String is not a postgres:// URL")?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err("Neon-Connection-String must start with postgres:// or postgresql://");
    }
    let decode = |s: &str| -> Result<String, &'static str> {
        percent_decode(s).ok_or("Neon-Connection-String has bad percent-encoding")
    };
    let user = decode(url.username())?;
    if user.is_empty() {
        return Err("Neon-Connection-String names no user");
    }
    let password = decode(url.password().unwrap_or_default())?;
    let database = match decode(url.path().trim_start_matches('/'))? {
        d if d.is_empty() => user.clone(),
        d => d,
    };
    let params = url
        .query_pairs()
        .filter(|(k, _)| KEPT_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Ok(ConnInfo {
        user,
        password,
        database,
        params,
    })
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    match String::from_utf8_lossy(&out) {
        Cow::Borrowed(b) => Some(b.to_owned()),
        Cow::Owned(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_password_database_and_kept_parameters_come_from_the_url() {
        let c = parse("postgres://al%40ice:p%2Fw@db.example.com:5432/shop?sslmode=require&application_name=edge&options=-c%20search_path%3Dx")
            .expect("parses");
        assert_eq!(c.user, "al@ice");
        assert_eq!(c.password, "p/w");
        assert_eq!(c.database, "shop");
        assert_eq!(
            c.params,
            vec![
                ("application_name".into(), "edge".into()),
                ("options".into(), "-c search_path=x".into())
            ]
        );
        assert!(!format!("{c:?}").contains("p/w"));
    }

    #[test]
    fn a_missing_database_defaults_to_the_user_and_bad_strings_are_refused() {
        assert_eq!(
            parse("postgresql://bob:x@h").expect("parses").database,
            "bob"
        );
        assert!(parse("not a url").is_err());
        assert!(parse("http://bob:x@h/db").is_err());
        assert!(parse("postgres://h/db").is_err());
        assert!(parse("postgres://bob:%zz@h/db").is_err());
        assert!(parse("postgres://bob:%ff@h/db").is_err());
    }
}
