use super::*;

fn set(name: &str, sql: &str) -> Option<Recognised> {
    Some(Recognised::Set {
        name: name.into(),
        sql: sql.into(),
    })
}

fn pins(sql: &[u8]) -> Option<PinReason> {
    match recognise(sql) {
        Some(Recognised::Pins(r)) => Some(r),
        _ => None,
    }
}

#[test]
fn recognises_session_set_forms() {
    assert_eq!(
        recognise(b"SET statement_timeout = '5s'"),
        set("statement_timeout", "SET statement_timeout = '5s';")
    );
    assert_eq!(
        recognise(b"  set SESSION search_path TO a, b;  "),
        set("search_path", "set SESSION search_path TO a, b;")
    );
    assert_eq!(
        recognise(b"SET TIME ZONE 'UTC'\0"),
        set("timezone", "SET TIME ZONE 'UTC';")
    );
    assert_eq!(
        recognise(b"set myapp.tenant='x'"),
        set("myapp.tenant", "set myapp.tenant='x';")
    );
    assert_eq!(
        recognise(b"-- comment\nSET work_mem=1 -- trailing"),
        set("work_mem", "SET work_mem=1;")
    );
    assert_eq!(
        recognise(b"SET application_name = ';'"),
        set("application_name", "SET application_name = ';';"),
        "a quoted ; is part of the value"
    );
}

#[test]
fn ignores_local_and_transaction_sets() {
    assert_eq!(recognise(b"SET LOCAL work_mem = 1"), None);
    assert_eq!(recognise(b"SET LOCAL ROLE nobody"), None);
    assert_eq!(
        recognise(b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
        None
    );
    assert_eq!(recognise(b"select 1"), None);
    assert_eq!(recognise(b"SETTLE"), None);
    assert_eq!(recognise(b"select 'no temp here'"), None);
    assert_eq!(recognise(b"insert into temperatures values (1)"), None);
    assert_eq!(recognise(b"select temp from readings"), None);
    assert_eq!(
        recognise(b"select * from user_roles where role = 'x'"),
        None
    );
    assert_eq!(recognise(b"UPDATE users SET role = $1 WHERE id = $2"), None);
    assert_eq!(recognise(b"update users set\nrole = 'admin'"), None);
    assert_eq!(recognise(b"select set_config('app.x', $1, true)"), None);
    assert_eq!(recognise(b"select pg_advisory_xact_lock(1)"), None);
}

#[test]
fn every_statement_of_a_multi_statement_query_counts() {
    assert_eq!(
        recognise(b"SET a = 1; SET b = 2"),
        Some(Recognised::Several(vec![
            Recognised::Set {
                name: "a".into(),
                sql: "SET a = 1;".into()
            },
            Recognised::Set {
                name: "b".into(),
                sql: "SET b = 2;".into()
            },
        ]))
    );
    assert_eq!(
        recognise(b"select 1; RESET a"),
        Some(Recognised::Several(vec![Recognised::Reset("a".into())]))
    );
    assert_eq!(
        pins(b"SELECT 1; DEALLOCATE \"PGFUNNEL_1\"; PREPARE \"PGFUNNEL_1\"(int) AS SELECT 666"),
        Some(PinReason::ReservedName)
    );
    assert_eq!(
        pins(b"select 1;\nprepare p as select 1"),
        Some(PinReason::Prepare)
    );
    assert_eq!(
        pins(b"select 1; /* x */ LOAD 'auto_explain'"),
        Some(PinReason::Load)
    );
    assert_eq!(pins(b"select 1; LISTEN a"), Some(PinReason::Listen));
    assert_eq!(pins(b"LISTEN a; select 1"), Some(PinReason::Listen));
    assert_eq!(pins(b"select 1; SET ROLE x"), Some(PinReason::Identity));
    assert_eq!(
        pins(b"BEGIN; SET a = 1; COMMIT"),
        Some(PinReason::SessionState),
        "transaction control inside the text: whether a SET stuck is unclear on failure"
    );
}

#[test]
fn literals_and_comments_never_split_or_hide_statements() {
    assert_eq!(recognise(b"select '; prepare p as select 1'"), None);
    assert_eq!(recognise(b"select $$; prepare p as select 1$$"), None);
    assert_eq!(recognise(b"select 1 -- ; prepare p as select 1"), None);
    assert_eq!(
        recognise(b"select 1 /* ; prepare /* nested */ p ; */"),
        None
    );
    assert_eq!(recognise(b"select \"a;prepare\""), None);
    assert_eq!(
        pins(b"select '--'; prepare p as select 1"),
        Some(PinReason::Prepare)
    );
    assert_eq!(
        pins(b"select e'\\''; prepare p as select 1"),
        Some(PinReason::Prepare)
    );
    assert_eq!(
        pins(b"select $a$ $$ $a$; prepare p as select 1"),
        Some(PinReason::Prepare)
    );
}

#[test]
fn backslashes_in_plain_strings_are_read_both_ways() {
    // standard_conforming_strings = on: two statements; off: one string. Either way pinned.
    assert_eq!(
        pins(b"select 'a\\'; create temp table t(x int); --'"),
        Some(PinReason::TempTable)
    );
    // off: the string ends later and the PREPARE is code.
    assert_eq!(
        pins(b"select 'a\\' , ' ; prepare p as select 1; select ' '"),
        Some(PinReason::Prepare)
    );
    assert_eq!(recognise(b"select '\\d+' ~ 'x'"), None);
}

#[test]
fn non_utf8_text_does_not_bypass_the_rules() {
    assert_eq!(
        pins(b"select '\xff'; create temp table t(x int)"),
        Some(PinReason::TempTable)
    );
    assert_eq!(
        pins(b"select '\xc3'; PREPARE \"PGFUNNEL_2\" AS select 1"),
        Some(PinReason::ReservedName)
    );
    assert_eq!(
        pins(b"SET application_name = '\xff'"),
        Some(PinReason::SessionState),
        "a SET that cannot be replayed keeps its server"
    );
    assert_eq!(recognise(&[0xff, 0xfe]), None);
}

#[test]
fn recognises_resets() {
    assert_eq!(recognise(b"RESET ALL"), Some(Recognised::ResetAll));
    assert_eq!(recognise(b"discard all;"), Some(Recognised::ResetAll));
    assert_eq!(
        recognise(b"RESET work_mem"),
        Some(Recognised::Reset("work_mem".into()))
    );
    assert_eq!(
        recognise(b"RESET a; select 1"),
        Some(Recognised::Several(vec![Recognised::Reset("a".into())]))
    );
}

#[test]
fn session_identity_changes_pin() {
    for sql in [
        &b"SET ROLE nobody"[..],
        b"set session role nobody",
        b"SET\tSESSION\nAUTHORIZATION nobody",
        b"SET SESSION AUTHORIZATION DEFAULT",
        b"SET ROLE TO DEFAULT",
        b"RESET ROLE",
        b"RESET SESSION AUTHORIZATION",
        b"set role/* c */nobody",
        b"SET \"role\" = 'nobody'",
        b"SET session_authorization = 'nobody'",
        b"select set_config('role', 'nobody', false)",
        b"select set_config('ROLE', 'nobody', $1)",
        b"DO $$ BEGIN SET ROLE nobody; END $$",
        b"DO $$ BEGIN EXECUTE 'set role nobody'; END $$",
    ] {
        assert_eq!(
            pins(sql),
            Some(PinReason::Identity),
            "{}",
            String::from_utf8_lossy(sql)
        );
    }
}

#[test]
fn session_level_set_config_and_characteristics_pin() {
    assert_eq!(
        pins(b"select set_config('app.tenant', '42', false)"),
        Some(PinReason::SessionState)
    );
    assert_eq!(
        pins(b"select pg_catalog.set_config('app.tenant', $1, $2)"),
        Some(PinReason::SessionState)
    );
    assert_eq!(
        pins(b"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
        Some(PinReason::SessionState)
    );
    assert_eq!(
        pins(b"DO $$ BEGIN SET work_mem = '1MB'; END $$"),
        Some(PinReason::SessionState)
    );
    assert_eq!(recognise(b"select set_config('app.x', 'y', 'on')"), None);
}

#[test]
fn recognises_listen_and_unlisten() {
    assert_eq!(
        recognise(b"LISTEN Jobs"),
        Some(Recognised::Listen("jobs".into()))
    );
    assert_eq!(
        recognise(b"listen \"Mixed\";"),
        Some(Recognised::Listen("Mixed".into()))
    );
    assert_eq!(recognise(b"UNLISTEN *"), Some(Recognised::Unlisten(None)));
    assert_eq!(
        recognise(b"unlisten jobs"),
        Some(Recognised::Unlisten(Some("jobs".into())))
    );
    assert_eq!(pins(b"LISTEN \"unclosed"), Some(PinReason::Listen));
}

#[test]
fn recognises_pins() {
    for (sql, reason) in [
        (&b"CREATE TEMP TABLE t(x int)"[..], PinReason::TempTable),
        (
            b"create temporary table t as select 1",
            PinReason::TempTable,
        ),
        (b"create\ttemp table t(x int)", PinReason::TempTable),
        (b"CREATE\nTEMPORARY\nTABLE t(x int)", PinReason::TempTable),
        (
            b"create /* c */ temp -- c\n table t()",
            PinReason::TempTable,
        ),
        (b"create global temp table t()", PinReason::TempTable),
        (
            b"create or replace temp view v as select 1",
            PinReason::TempTable,
        ),
        (b"SELECT 1 AS x INTO TEMP t", PinReason::TempTable),
        (b"select 1 into\ttemporary t", PinReason::TempTable),
        (b"create table pg_temp.t(x int)", PinReason::TempTable),
        (
            b"DO $$ BEGIN CREATE TEMP TABLE t(); END $$",
            PinReason::TempTable,
        ),
        (b"select pg_advisory_lock(1)", PinReason::AdvisoryLock),
        (
            b"Select PG_Advisory_Lock_Shared(1)",
            PinReason::AdvisoryLock,
        ),
        (b"select pg_try_advisory_lock(1)", PinReason::AdvisoryLock),
        (
            b"DECLARE c CURSOR WITH\nHOLD FOR select 1",
            PinReason::HoldCursor,
        ),
        (b"PREPARE p AS select 1", PinReason::Prepare),
        (b"LOAD 'x'", PinReason::Load),
    ] {
        assert_eq!(pins(sql), Some(reason), "{}", String::from_utf8_lossy(sql));
    }
    let mut long = b"select 1 from t where x = '".to_vec();
    long.extend(std::iter::repeat_n(b'a', KEPT_LOWERCASE));
    long.extend(b"' and y in (select pg_try_ADVISORY_lock(2))");
    assert_eq!(pins(&long), Some(PinReason::AdvisoryLock));
}

#[test]
fn pgfunnel_statement_names_are_out_of_reach() {
    for sql in [
        &b"DEALLOCATE \"PGFUNNEL_1\""[..],
        b"deallocate pgfunnel_1",
        b"EXECUTE \"PGFUNNEL_7\"(1)",
        b"explain analyze execute \"PgFunnel_3\"",
        b"PREPARE \"PGFUNNEL_1\"(int) AS SELECT 666",
        b"DO $$ BEGIN EXECUTE 'DEALLOCATE \"PGFUNNEL_1\"'; END $$",
        b"DEALLOCATE U&\"\\0050GFUNNEL_1\"",
    ] {
        assert_eq!(
            pins(sql),
            Some(PinReason::ReservedName),
            "{}",
            String::from_utf8_lossy(sql)
        );
    }
    assert_eq!(
        recognise(b"select name from pg_stat_activity where query like 'PGFUNNEL_%'"),
        None
    );
}

#[test]
fn the_fast_path_never_skips_what_the_full_path_finds() {
    for sql in [
        &b"update t set x = 1"[..],
        b"select * from sessions",
        b"insert into events (payload) values ($1)",
        b"select offset_x from t offset 5",
    ] {
        assert!(!may_matter(sql), "{}", String::from_utf8_lossy(sql));
        assert_eq!(recognise(sql), None);
    }
    for sql in [
        &b"set x = 1"[..],
        b"/* c */set x = 1",
        b"select 1;set x = 1",
        b"DO $$ BEGIN SET ROLE x; END $$",
        b"DO $$ BEGIN EXECUTE $q$SET ROLE x$q$; END $$",
        b"-- c\nset x = 1",
        b"select \"pg_temp\".x",
        b"DEALLOCATE U&\"\\0050GFUNNEL_1\"",
    ] {
        assert!(may_matter(sql), "{}", String::from_utf8_lossy(sql));
    }
}

#[test]
fn recognise_listen_only_takes_listen_forms() {
    assert_eq!(
        recognise_listen(b" /* c */ LISTEN Jobs;"),
        Some(Recognised::Listen("jobs".into()))
    );
    assert_eq!(
        recognise_listen(b"unlisten *"),
        Some(Recognised::Unlisten(None))
    );
    assert_eq!(recognise_listen(b"LISTEN a; select 1"), None);
    assert_eq!(recognise_listen(b"select pg_advisory_lock(1)"), None);
    assert_eq!(recognise_listen(b"SET a = 1"), None);
}

#[test]
fn any_bytes_are_recognised_without_panicking() {
    // A cheap deterministic sweep; the fuzz target `statement` goes further.
    let pieces: [&[u8]; 14] = [
        b"'", b"\"", b"$$", b"$a$", b"--", b"/*", b"*/", b";", b"e'", b"\\", b"set ", b"role",
        b"\xff", b"\n",
    ];
    random_texts(&pieces, 0x2545_f491_4f6c_dd1d, 2000, 12, |text| {
        let _ = recognise(text);
    });
}

/// Calls `f` with `runs` texts of fewer than `max_pieces` of `pieces` each, chosen by a
/// deterministic xorshift sequence from `seed`.
fn random_texts(
    pieces: &[&[u8]],
    mut seed: u64,
    runs: usize,
    max_pieces: u64,
    mut f: impl FnMut(&[u8]),
) {
    for _ in 0..runs {
        let mut text = Vec::new();
        for _ in 0..(seed % max_pieces) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            text.extend_from_slice(pieces[(seed % pieces.len() as u64) as usize]);
        }
        f(&text);
        seed = seed.wrapping_add(1);
    }
}

#[test]
fn the_fast_path_word_bytes_are_the_lexers_but_dollar() {
    for b in 0..=255u8 {
        let lexer_word = crate::client::lexer::is_ident(b) && b != b'$';
        assert_eq!(WORD[b as usize], lexer_word, "byte {b:#04x}");
    }
}

/// One text per trigger word that the full recogniser acts on (each holds its trigger).
const TRIGGER_EXAMPLES: &[&str] = &[
    "set search_path = x",
    "select set_config('a.b', 'c', false)",
    "reset search_path",
    "load 'auto_explain'",
    "listen jobs",
    "unlisten jobs",
    "deallocate U&\"\\0050GFUNNEL_1\"",
    "discard all",
    "declare c cursor with hold for select 1",
    "create temp table t (x int)",
    "create temporary table t (x int)",
    "prepare p as select 1",
    "create table pg_temp.t (x int)",
    "select pg_advisory_lock(1)",
    "select pg_try_advisory_lock(1)",
    "execute pgfunnel_1",
];

/// `text` in lower case, upper case and alternating case.
fn cases(text: &str) -> [String; 3] {
    let mixed = text
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    [text.to_ascii_lowercase(), text.to_ascii_uppercase(), mixed]
}

#[test]
fn every_trigger_word_passes_the_fast_path_in_any_case_and_position() {
    for &(word, how) in TRIGGERS {
        let word = String::from_utf8_lossy(word).into_owned();
        let text = match how {
            Match::Word => format!("{word} x"),
            Match::Prefix => format!("select {word}x(1)"),
            Match::StatementStart => format!("{word} x = 1"),
            Match::UnicodeEscape => format!("execute {word}&\"x\""),
        };
        for lead in [
            "",
            " \n\t\r\x0c",
            "/* c */",
            "/* a /* b */ c */ ",
            "-- c\n",
            "(",
            "(( ",
        ] {
            for t in cases(&format!("{lead}{text}")) {
                assert!(may_matter(t.as_bytes()), "{t:?} skipped");
            }
        }
    }
}

#[test]
fn every_trigger_word_is_recognised_in_any_case_after_whitespace_and_comments() {
    for &(word, how) in TRIGGERS {
        let holds = |w: &str| match how {
            Match::Prefix => w.as_bytes().starts_with(word),
            _ => w.as_bytes() == word,
        };
        let example = TRIGGER_EXAMPLES.iter().find(|e| {
            e.to_ascii_lowercase()
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(holds)
        });
        let example =
            example.unwrap_or_else(|| panic!("no example for {:?}", String::from_utf8_lossy(word)));
        for lead in ["", " \n\t\r\x0c", "/* c */", "/* a /* b */ c */ ", "-- c\n"] {
            for t in cases(&format!("{lead}{example}")) {
                assert!(recognise(t.as_bytes()).is_some(), "{t:?} not recognised");
            }
        }
    }
}

/// The fast path as it was written before the trigger table: a byte loop with the words
/// dispatched on their first byte. The table-driven one must agree with it on any text.
fn reference_may_matter(s: &[u8]) -> bool {
    let word = |b: u8| crate::client::lexer::is_ident(b) && b != b'$';
    let mut i = 0;
    while i < s.len() {
        if !word(s[i]) {
            if s[i] == b'-' && s.get(i + 1) == Some(&b'-') {
                return true;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < s.len() && word(s[i]) {
            i += 1;
        }
        let w = &s[start..i];
        let is = |k: &[u8]| w.eq_ignore_ascii_case(k);
        let starts = |k: &[u8]| w.len() >= k.len() && w[..k.len()].eq_ignore_ascii_case(k);
        let hit = match w[0].to_ascii_lowercase() {
            b's' => is(b"set_config") || (is(b"set") && set_may_start_statement(s, start)),
            b'r' => is(b"reset"),
            b'l' => is(b"load") || is(b"listen"),
            b'u' => is(b"unlisten") || (is(b"u") && s.get(start + 1) == Some(&b'&')),
            b'd' => is(b"discard"),
            b'h' => is(b"hold"),
            b't' => is(b"temp") || is(b"temporary"),
            b'p' => {
                is(b"prepare")
                    || starts(b"pg_temp")
                    || starts(b"pg_advisory_lock")
                    || starts(b"pg_try_advisory_lock")
                    || starts(RESERVED_PREFIX)
            }
            _ => false,
        };
        if hit {
            return true;
        }
    }
    false
}

#[test]
fn the_fast_path_agrees_with_the_byte_loop_it_replaced() {
    let pieces: [&[u8]; 22] = [
        b"SET",
        b"set_config",
        b"ReSet",
        b"x",
        b" ",
        b"-",
        b"$",
        b"$q$",
        b"(",
        b")",
        b";",
        b"\"",
        b"u&",
        b"U",
        b"pg_Temp",
        b"PGFUNNEL_",
        b"hold",
        b"\xc3\xa9",
        b"update t set",
        b"then",
        b"listen",
        b"temporary",
    ];
    random_texts(&pieces, 0x9e37_79b9_7f4a_7c15, 20_000, 7, |text| {
        assert_eq!(
            may_matter(text),
            reference_may_matter(text),
            "{}",
            String::from_utf8_lossy(text)
        );
    });
}
