//! `auth_ident_file`: PostgreSQL's pg_ident.conf in the simple form PgBouncer reads, one
//! `MAPNAME SYSTEM-USERNAME DATABASE-USERNAME` per line, `#` comments. HBA rules for `peer`
//! and `cert` with `map=MAPNAME` admit a user when the OS user name (peer) or the
//! certificate's CN (cert) maps to it. Regular expressions (`/…`) are refused, as in
//! PgBouncer.

use std::path::Path;

use super::hba::HbaError;

/// The user-name maps of an ident file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentMap {
    entries: Vec<(String, String, String)>,
}

impl IdentMap {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<IdentMap, HbaError> {
        let text = std::fs::read_to_string(path).map_err(|source| HbaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        IdentMap::parse(&text).map_err(|(line, problem)| HbaError::Syntax {
            path: path.to_path_buf(),
            line,
            problem,
        })
    }

    /// Parses file text; errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<IdentMap, (usize, &'static str)> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            let words: Vec<&str> = line.split_whitespace().map(unquote).collect();
            match words.as_slice() {
                [] => {}
                [map, system, user] => {
                    if system.starts_with('/') {
                        return Err((n + 1, "regular expressions are not supported"));
                    }
                    entries.push((map.to_string(), system.to_string(), user.to_string()));
                }
                _ => return Err((n + 1, "expected MAPNAME SYSTEM-USERNAME DATABASE-USERNAME")),
            }
        }
        Ok(IdentMap { entries })
    }

    /// `hba` with the maps of the config's `auth_ident_file` (a relative name found as a
    /// relative `auth_hba_file` is), when one is set.
    pub fn attach(hba: super::Hba, config: &crate::config::Config) -> Result<super::Hba, HbaError> {
        let Some(file) = &config.settings.auth_ident_file else {
            return Ok(hba);
        };
        let dir = config.path.as_deref().and_then(|p| p.parent());
        let path = super::resolve_hba_path(dir, file);
        Ok(hba.with_ident(IdentMap::load(&path)?))
    }

    /// Whether `map` lets the system user (OS user or certificate CN) `system` log in as
    /// `user`.
    pub fn allows(&self, map: &str, system: &str, user: &str) -> bool {
        self.entries
            .iter()
            .any(|(m, s, u)| m == map && s == system && u == user)
    }
}

fn unquote(word: &str) -> &str {
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .unwrap_or(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_admit_only_listed_pairs() {
        let m = IdentMap::parse("# comment\nops  alice  app_owner\nops \"bob\" app_owner # x\n\n")
            .expect("parse");
        assert!(m.allows("ops", "alice", "app_owner"));
        assert!(m.allows("ops", "bob", "app_owner"));
        assert!(!m.allows("ops", "alice", "alice"));
        assert!(!m.allows("other", "alice", "app_owner"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        assert_eq!(
            IdentMap::parse("ops a b\nops a").err(),
            Some((2, "expected MAPNAME SYSTEM-USERNAME DATABASE-USERNAME"))
        );
        assert_eq!(
            IdentMap::parse("ops /^(.*)$ \\1").err(),
            Some((1, "regular expressions are not supported"))
        );
    }
}
