use super::*;

fn words(text: &str) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    lex(text.as_bytes(), false, &mut out);
    out.iter()
        .map(|t| {
            (
                t.kind,
                String::from_utf8_lossy(t.text(text.as_bytes())).into_owned(),
            )
        })
        .collect()
}

fn split(text: &str) -> Vec<String> {
    let mut toks = Vec::new();
    lex(text.as_bytes(), false, &mut toks);
    statements(text.as_bytes(), &toks)
        .map(|r| {
            let s = toks[r.start].start as usize;
            let e = toks[r.end - 1].end as usize;
            text[s..e].to_owned()
        })
        .collect()
}

#[test]
fn splits_on_semicolons_outside_literals_and_comments() {
    assert_eq!(
        split("select ';'; select \"a;b\"; /* ; */ select $$;$$;; select e'\\';' -- ;\n; x"),
        vec![
            "select ';'",
            "select \"a;b\"",
            "select $$;$$",
            "select e'\\';'",
            "x"
        ]
    );
    assert_eq!(
        split("select $t$ $$;$$ ; $t$; b"),
        vec!["select $t$ $$;$$ ; $t$", "b"]
    );
    assert_eq!(
        split("/* a /* nested ; */ still ; */ one; two"),
        vec!["one", "two"]
    );
    assert_eq!(
        split("select 'it''s;'; two"),
        vec!["select 'it''s;'", "two"]
    );
    assert_eq!(split("select $1; two"), vec!["select $1", "two"]);
    assert_eq!(split(";;  ;"), Vec::<String>::new());
}

#[test]
fn plain_strings_do_not_escape_but_report_backslashes() {
    let mut toks = Vec::new();
    assert!(lex(b"select 'a\\'; two", false, &mut toks));
    assert_eq!(statements(b"select 'a\\'; two", &toks).count(), 2);
    toks.clear();
    assert!(!lex(b"select 'a'; two", false, &mut toks));
    toks.clear();
    lex(b"select 'a\\'; two'", true, &mut toks);
    assert_eq!(
        statements(b"select 'a\\'; two'", &toks).count(),
        1,
        "with backslash escapes the quote does not end the string"
    );
}

#[test]
fn words_and_whitespace_of_every_kind() {
    assert_eq!(
        words("create\ttemp\ntable\r\x0ct(x)"),
        vec![
            (Kind::Word, "create".into()),
            (Kind::Word, "temp".into()),
            (Kind::Word, "table".into()),
            (Kind::Word, "t".into()),
            (Kind::Punct, "(".into()),
            (Kind::Word, "x".into()),
            (Kind::Punct, ")".into()),
        ]
    );
    assert_eq!(
        words("a$b$ $q$x$q$"),
        vec![(Kind::Word, "a$b$".into()), (Kind::Str, "$q$x$q$".into())]
    );
}

#[test]
fn unterminated_forms_and_non_utf8_end_the_text_without_panicking() {
    for text in [
        &b"select 'abc"[..],
        b"select \"abc",
        b"select $a$ abc",
        b"select /* abc",
        b"select e'abc\\",
        b"select -- abc",
        b"\xff\xfe; select \xc3",
        b"$",
        b"'",
        b"e'",
    ] {
        let mut toks = Vec::new();
        lex(text, false, &mut toks);
        lex(text, true, &mut toks);
        for t in &toks {
            assert!(t.start <= t.end && t.end as usize <= text.len());
            assert!(t.inner_start <= t.inner_end && t.inner_end as usize <= text.len());
        }
        let _ = statements(text, &toks).count();
    }
}
