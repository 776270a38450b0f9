//! `application_name_add_host`: PgBouncer appends the client's address to its
//! application_name (`psql - 10.0.0.7:51234`, `app - …` when it sent none), so that
//! `pg_stat_activity` on the server tells clients apart behind the pooler.

use super::registry::ClientEntry;
use crate::config::Settings;

/// The startup parameters with the client's address added to application_name when
/// `application_name_add_host` is on; unchanged otherwise.
pub fn with_client_host(
    mut params: Vec<(String, String)>,
    settings: &Settings,
    entry: &ClientEntry,
) -> Vec<(String, String)> {
    if !settings.application_name_add_host {
        return params;
    }
    let host = if entry.port == 0 {
        entry.addr.clone()
    } else {
        format!("{}:{}", entry.addr, entry.port)
    };
    match params.iter_mut().find(|(k, _)| k == "application_name") {
        Some((_, v)) => *v = add_host(v, &host),
        None => params.push(("application_name".to_owned(), add_host("", &host))),
    }
    params
}

/// `<name> - <host>`, with PgBouncer's `app` for a client that sent no name.
fn add_host(name: &str, host: &str) -> String {
    let name = if name.is_empty() { "app" } else { name };
    format!("{name} - {host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_appended_and_a_missing_name_becomes_app() {
        assert_eq!(add_host("psql", "10.0.0.7:5"), "psql - 10.0.0.7:5");
        assert_eq!(add_host("", "unix"), "app - unix");
    }
}
