use super::*;
use crate::config::test_support::temp_tree;

fn items(text: &str) -> Vec<IniItem> {
    let parsed = read_text(text, Path::new("t.ini"));
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    parsed.items
}

fn error(text: &str) -> String {
    let parsed = read_text(text, Path::new("t.ini"));
    parsed.errors.first().expect("must fail").to_string()
}

fn first_error(parsed: Result<Parsed, ConfigError>) -> ConfigError {
    match parsed {
        Err(e) => e,
        Ok(mut p) => {
            assert!(!p.errors.is_empty(), "must fail");
            p.errors.remove(0)
        }
    }
}

fn items_of(parsed: Result<Parsed, ConfigError>) -> Vec<IniItem> {
    let parsed = parsed.unwrap_or_else(|e| panic!("{e}"));
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    parsed.items
}

#[test]
fn reading_goes_on_after_errors_and_reports_each() {
    let parsed = read_text(
            "[pgbouncer]\nbad line\nlisten_port = 1\n[nope]\nx = 1\n[databases]\n\"q = 2\nfoo = host=a\n",
            Path::new("t.ini"),
        );
    let lines: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("t.ini:2: syntax error"), "{lines:?}");
    assert!(
        lines[1].starts_with("t.ini:4: unknown section [nope]"),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("t.ini:7: syntax error"), "{lines:?}");
    let keys: Vec<&str> = parsed.items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["listen_port", "foo"],
        "lines of the unknown section are skipped"
    );
}

#[test]
fn reads_sections_keys_and_values_with_lines() {
    let got = items(
            "; comment\n# other\n[databases]\nfoo = host=a\n\n[PgBouncer]\nlisten_port=6432\nlogfile =\n",
        );
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].section, Section::Databases);
    assert_eq!(
        (got[0].key.as_str(), got[0].value.as_str()),
        ("foo", "host=a")
    );
    assert_eq!(got[0].location.line, 4);
    assert_eq!(got[1].section, Section::Pgbouncer);
    assert_eq!(
        (got[1].key.as_str(), got[1].value.as_str()),
        ("listen_port", "6432")
    );
    assert_eq!(
        (got[2].key.as_str(), got[2].value.as_str()),
        ("logfile", "")
    );
    assert_eq!(got[2].location.to_string(), "t.ini:8");
}

#[test]
fn pgfunnel_section_is_an_alias() {
    let got = items("[pgfunnel]\nverbose = 1\n");
    assert_eq!(got[0].section, Section::Pgbouncer);
}

#[test]
fn quoted_names_allow_any_character() {
    let got = items("[databases]\n\"my db\"\"x\" = host=a\n\"*\"=\n");
    assert_eq!(got[0].key, "my db\"x");
    assert_eq!(got[1].key, "*");
    assert_eq!(got[1].value, "");
}

#[test]
fn value_may_contain_equals_and_keeps_inner_spaces() {
    let got = items("[databases]\nfoo =  host=a  port=1  \n");
    assert_eq!(got[0].value, "host=a  port=1");
}

#[test]
fn syntax_errors_name_file_and_line() {
    assert_eq!(
        error("[pgbouncer]\n\njust words\n"),
        "t.ini:3: syntax error: expected `key = value`, `[section]` or `%include file`"
    );
    assert_eq!(
        error("a = b\n"),
        "t.ini:1: syntax error: key before any [section] header"
    );
    assert_eq!(
        error("[pgbouncer]\n = 1\n"),
        "t.ini:2: syntax error: no key before `=`"
    );
    assert!(error("[pgbouncer\n").starts_with("t.ini:1: syntax error: malformed section header"));
    assert!(error("[databases]\n\"abc = x\n").starts_with("t.ini:2: syntax error: unterminated"));
    assert!(error("[databases]\n\"abc\" x\n").starts_with("t.ini:2: syntax error: expected"));
    assert!(error("%include\n").starts_with("t.ini:1: syntax error: %include needs a file path"));
    assert!(error("%define x\n").contains("unknown directive %define"));
}

#[test]
fn unknown_section_is_an_error() {
    assert_eq!(
            error("[pgbouncer]\n[database]\n"),
            "t.ini:2: unknown section [database]; expected [databases], [users], [pgbouncer] (or [pgfunnel]) or [peers]"
        );
}

#[test]
fn include_is_relative_to_including_file_and_keeps_section() {
    let dir = temp_tree(&[
        (
            "main.ini",
            "[pgbouncer]\nlisten_port = 1\n%include conf.d/extra.ini\nverbose = 2\n",
        ),
        (
            "conf.d/extra.ini",
            "listen_port = 2\n[databases]\nfoo = host=b\n",
        ),
    ]);
    let got = items_of(read_file(&dir.path().join("main.ini")));
    let summary: Vec<_> = got
        .iter()
        .map(|i| (i.section, i.key.as_str(), i.location.line))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Section::Pgbouncer, "listen_port", 2),
            (Section::Pgbouncer, "listen_port", 1),
            (Section::Databases, "foo", 3),
            // the section set inside the include carries on after it, as in PgBouncer
            (Section::Databases, "verbose", 4),
        ]
    );
    assert!(got[1].location.file.ends_with("conf.d/extra.ini"));
}

#[test]
fn missing_include_names_file_line_and_target() {
    let dir = temp_tree(&[("main.ini", "[pgbouncer]\n\n%include nope.ini\n")]);
    let main = dir.path().join("main.ini");
    let err = first_error(read_file(&main)).to_string();
    assert!(
        err.starts_with(&format!("{}:3: %include ", main.display())),
        "{err}"
    );
    assert!(err.contains("nope.ini"), "{err}");
}

#[test]
fn recursive_include_is_refused() {
    let dir = temp_tree(&[
        ("a.ini", "[pgbouncer]\n%include b.ini\n"),
        ("b.ini", "%include a.ini\n"),
    ]);
    let err = first_error(read_file(&dir.path().join("a.ini")));
    assert!(
        matches!(err, ConfigError::IncludeCycle { ref location, .. } if location.line == 1),
        "{err}"
    );
    assert!(err.to_string().contains("recursive include"), "{err}");
}

#[test]
fn include_depth_is_limited() {
    let mut files: Vec<(String, String)> = (0..=MAX_INCLUDE_DEPTH)
        .map(|n| (format!("f{n}.ini"), format!("%include f{}.ini\n", n + 1)))
        .collect();
    files.push((
        format!("f{}.ini", MAX_INCLUDE_DEPTH + 1),
        "[pgbouncer]\n".into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = temp_tree(&refs);
    let err = first_error(read_file(&dir.path().join("f0.ini")));
    assert!(
        matches!(err, ConfigError::IncludeTooDeep { limit: 10, .. }),
        "{err}"
    );

    // exactly MAX_INCLUDE_DEPTH levels is fine
    let dir = temp_tree(&refs[..MAX_INCLUDE_DEPTH]);
    std::fs::write(
        dir.path().join(format!("f{MAX_INCLUDE_DEPTH}.ini")),
        "[pgbouncer]\n",
    )
    .expect("write");
    items_of(read_file(&dir.path().join("f0.ini")));
}

#[test]
fn missing_main_file_names_it() {
    let err = first_error(read_file(Path::new("/nonexistent/pgfunnel.ini")));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/pgfunnel.ini: cannot read config file"),
        "{err}"
    );
}
