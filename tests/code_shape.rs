//! Code shape checks over `src/` (std only, no build of the crate needed):
//! - no source file (other than `*_tests.rs` / `tests.rs`) runs past `MAX_FILE_LINES` lines;
//! - no function runs past `MAX_FN_LINES` lines, from the line holding `fn` to its closing
//!   brace, unless it is in `LONG_FN_ALLOWED` with its reason;
//! - no SQLSTATE literal (a string of five characters in a known SQLSTATE class, such as
//!   "08P01" or "53300") appears outside `src/error.rs`: pgfunnel's codes live in
//!   `error::ErrorKind::sqlstate`.
//!
//! Code under `#[cfg(test)]` is not held to the function and SQLSTATE rules.

use std::fs;
use std::path::{Path, PathBuf};

/// Longest source file, in lines.
const MAX_FILE_LINES: usize = 420;
/// Longest function, in lines (the `fn` line to the closing brace).
const MAX_FN_LINES: usize = 60;

/// Functions allowed past `MAX_FN_LINES`: (path under src/, fn name, reason).
const LONG_FN_ALLOWED: &[(&str, &str, &str)] = &[
    (
        "metrics/mod.rs",
        "new",
        "flat table: one registration per metric family",
    ),
    (
        "config/settings.rs",
        "default",
        "flat table: one default per setting",
    ),
    (
        "metrics/exporter.rs",
        "register",
        "flat table: one collector per exported family",
    ),
    (
        "config/settings.rs",
        "problems",
        "flat table: one consistency rule per settings pair",
    ),
    (
        "admin/mod.rs",
        "execute",
        "flat table: one arm per console command",
    ),
];

/// SQLSTATE literals still allowed outside `src/error.rs`: (path under src/, code, reason).
/// Each has its name in `error::sqlstate`.
const SQLSTATE_ALLOWED: &[(&str, &str, &str)] = &[];

/// The file allowed to hold SQLSTATE literals.
const SQLSTATE_HOME: &str = "error.rs";

/// SQLSTATE classes (the first two characters of a code), from the Postgres manual's
/// Appendix A.
const SQLSTATE_CLASSES: &[&str] = &[
    "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22", "23",
    "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F", "40", "42",
    "44", "53", "54", "55", "57", "58", "72", "F0", "HV", "P0", "XX",
];

#[test]
fn source_files_functions_and_sqlstates_keep_their_shape() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for path in source_files(&root) {
        let rel = path
            .strip_prefix(&root)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(&path).expect("readable source file");
        problems.extend(check_file(&rel, &text));
    }
    assert!(
        problems.is_empty(),
        "code shape problems ({}):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn allowlist_names_only_functions_still_too_long() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (file, name, _) in LONG_FN_ALLOWED {
        let text = fs::read_to_string(root.join(file)).expect("allowlisted file exists");
        let lexed = lex(&text);
        let longest = functions(&lexed)
            .iter()
            .filter(|f| f.name == *name)
            .map(|f| f.lines)
            .max();
        assert!(
            longest.is_some_and(|n| n > MAX_FN_LINES),
            "stale allowlist entry {file}::{name}: longest is {longest:?} lines, remove it"
        );
    }
}

#[test]
fn sqlstate_allowlist_names_only_literals_still_there() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (file, code, _) in SQLSTATE_ALLOWED {
        let text = fs::read_to_string(root.join(file)).expect("allowlisted file exists");
        let lexed = lex(&text);
        assert!(
            lexed
                .strings
                .iter()
                .any(|s| s.text == *code && !lexed.in_test(s.line)),
            "stale SQLSTATE allowlist entry {file}: \"{code}\" is gone, remove it"
        );
    }
}

#[test]
fn checker_flags_a_long_function_a_long_file_and_a_stray_sqlstate() {
    let body = "    let x = 1;\n".repeat(MAX_FN_LINES);
    let long_fn = format!("fn long() {{\n{body}}}\n");
    let found = check_file("x.rs", &long_fn);
    assert!(found.iter().any(|p| p.contains("x.rs::long")), "{found:?}");

    let short_fn = format!("fn short() {{\n{}}}\n", "    let x = 1;\n".repeat(10));
    assert!(check_file("x.rs", &short_fn).is_empty());

    let long_file = "// line\n".repeat(MAX_FILE_LINES + 1);
    assert_eq!(check_file("x.rs", &long_file).len(), 1);

    let stray = "fn f() -> &'static str { \"57014\" }\n";
    assert_eq!(check_file("x.rs", stray).len(), 1);
    assert!(check_file(SQLSTATE_HOME, stray).is_empty());
    let words = "fn f() -> [&'static str; 3] { [\"PAUSE\", \"16384\", \"86400\"] }\n";
    assert!(check_file("x.rs", words).is_empty());
}

#[test]
fn lexer_skips_braces_in_strings_comments_and_chars_and_test_code() {
    let text = concat!(
        "fn a<'a>(s: &'a str) -> char {\n",
        "    let _ = \"}}}\"; // }\n",
        "    let _ = r#\"{ \"quoted\" }\"#; /* { /* nested } */ */\n",
        "    if s.is_empty() { '{' } else { '\\'' }\n",
        "}\n",
        "#[cfg(test)]\n",
        "mod tests {\n",
        "    fn t() { let _ = \"08P01\"; }\n",
        "}\n",
    );
    let lexed = lex(text);
    let fns = functions(&lexed);
    assert_eq!(fns.len(), 2);
    assert_eq!((fns[0].name.as_str(), fns[0].lines), ("a", 5));
    assert!(fns[1].in_test);
    assert!(check_file("x.rs", text).is_empty());
}

/// Every `.rs` file under `dir` except unit-test files, sorted.
fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".rs") && !name.ends_with("_tests.rs") && name != "tests.rs" {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The problems of one file, `rel` being its path under src/.
fn check_file(rel: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let lines = text.lines().count();
    if lines > MAX_FILE_LINES {
        problems.push(format!("{rel}: {lines} lines (max {MAX_FILE_LINES})"));
    }
    let lexed = lex(text);
    for f in functions(&lexed) {
        let allowed = LONG_FN_ALLOWED
            .iter()
            .any(|(file, name, _)| *file == rel && *name == f.name);
        if f.lines > MAX_FN_LINES && !f.in_test && !allowed {
            problems.push(format!(
                "{rel}::{} (line {}): {} lines (max {MAX_FN_LINES})",
                f.name, f.line, f.lines
            ));
        }
    }
    if rel != SQLSTATE_HOME {
        for s in &lexed.strings {
            let allowed = SQLSTATE_ALLOWED
                .iter()
                .any(|(file, code, _)| *file == rel && *code == s.text);
            if is_sqlstate(&s.text) && !lexed.in_test(s.line) && !allowed {
                problems.push(format!(
                    "{rel}:{}: SQLSTATE literal \"{}\" outside src/{SQLSTATE_HOME}",
                    s.line, s.text
                ));
            }
        }
    }
    problems
}

/// Five characters, digits or capitals, in a known SQLSTATE class.
fn is_sqlstate(s: &str) -> bool {
    s.len() == 5
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        && s.bytes().any(|b| b.is_ascii_digit())
        && SQLSTATE_CLASSES.contains(&&s[..2])
}

/// A string literal's text and the line (1-based) it starts on.
struct StrLit {
    line: usize,
    text: String,
}

/// A source file with strings, chars and comments blanked out of `code` (newlines kept).
struct Lexed {
    code: Vec<char>,
    strings: Vec<StrLit>,
    /// Line ranges (1-based, inclusive) of `#[cfg(test)]` items.
    test_ranges: Vec<(usize, usize)>,
}

impl Lexed {
    fn in_test(&self, line: usize) -> bool {
        self.test_ranges
            .iter()
            .any(|&(a, b)| (a..=b).contains(&line))
    }
}

/// One function: its name, the line of `fn`, its length in lines, whether it is test code.
struct Function {
    name: String,
    line: usize,
    lines: usize,
    in_test: bool,
}

fn lex(text: &str) -> Lexed {
    let src: Vec<char> = text.chars().collect();
    let mut code = Vec::with_capacity(src.len());
    let mut strings = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Appends blanks for src[from..to], keeping newlines.
    let blank = |code: &mut Vec<char>, line: &mut usize, from: usize, to: usize| {
        for &c in &src[from..to] {
            if c == '\n' {
                *line += 1;
                code.push('\n');
            } else {
                code.push(' ');
            }
        }
    };
    while i < src.len() {
        let c = src[i];
        let next = src.get(i + 1).copied();
        let ident_at = |k: usize| src[k].is_alphanumeric() || src[k] == '_';
        let prev_ident = i > 0 && ident_at(i - 1);
        // `b'x'` is a byte literal, not a lifetime after an identifier.
        let byte_prefix = i > 0 && src[i - 1] == 'b' && (i < 2 || !ident_at(i - 2));
        if c == '/' && next == Some('/') {
            let end = src[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(src.len(), |p| i + p);
            blank(&mut code, &mut line, i, end);
            i = end;
        } else if c == '/' && next == Some('*') {
            let end = block_comment_end(&src, i);
            blank(&mut code, &mut line, i, end);
            i = end;
        } else if let Some(hashes) = raw_string_start(&src, i, prev_ident) {
            let open = src[i..].iter().position(|&c| c == '"').map_or(i, |p| i + p);
            let close = raw_string_end(&src, open + 1, hashes);
            let start_line = line;
            let text: String = src[open + 1..close.min(src.len())].iter().collect();
            strings.push(StrLit {
                line: start_line,
                text,
            });
            let end = (close + 1 + hashes).min(src.len());
            blank(&mut code, &mut line, i, end);
            i = end;
        } else if c == '"' {
            let close = string_end(&src, i + 1);
            let text: String = src[i + 1..close.min(src.len())].iter().collect();
            strings.push(StrLit { line, text });
            let end = (close + 1).min(src.len());
            blank(&mut code, &mut line, i, end);
            i = end;
        } else if c == '\'' && (!prev_ident || byte_prefix) {
            let end = char_literal_end(&src, i);
            blank(&mut code, &mut line, i, end);
            i = end.max(i + 1);
        } else {
            if c == '\n' {
                line += 1;
            }
            code.push(c);
            i += 1;
        }
    }
    let test_ranges = test_ranges(&code);
    Lexed {
        code,
        strings,
        test_ranges,
    }
}

/// The index after the block comment starting at `i` (nested comments allowed).
fn block_comment_end(src: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < src.len() {
        if src[i] == '/' && src.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if src[i] == '*' && src.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    src.len()
}

/// `Some(number of #)` when a raw string (`r"`, `r#"`, `br#"`) starts at `i`.
fn raw_string_start(src: &[char], i: usize, prev_ident: bool) -> Option<usize> {
    if prev_ident {
        return None;
    }
    let mut j = i;
    if src.get(j) == Some(&'b') {
        j += 1;
    }
    if src.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = src[j..].iter().take_while(|&&c| c == '#').count();
    (src.get(j + hashes) == Some(&'"')).then_some(hashes)
}

/// The index of the `"` closing a raw string whose text starts at `i`.
fn raw_string_end(src: &[char], mut i: usize, hashes: usize) -> usize {
    while i < src.len() {
        if src[i] == '"'
            && src[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return i;
        }
        i += 1;
    }
    src.len()
}

/// The index of the `"` closing a string whose text starts at `i`.
fn string_end(src: &[char], mut i: usize) -> usize {
    while i < src.len() {
        match src[i] {
            '\\' => i += 2,
            '"' => return i,
            _ => i += 1,
        }
    }
    src.len()
}

/// The index after a char literal at `i`, or `i + 1` when `'` starts a lifetime.
fn char_literal_end(src: &[char], i: usize) -> usize {
    if src.get(i + 1) == Some(&'\\') {
        let mut j = i + 2;
        while j < src.len() && src[j] != '\'' {
            j += 1;
        }
        return j + 1;
    }
    if src.get(i + 2) == Some(&'\'') {
        return i + 3;
    }
    i + 1
}

/// Line ranges of items under `#[cfg(test)]` (a module or a function, up to its closing
/// brace or `;`).
fn test_ranges(code: &[char]) -> Vec<(usize, usize)> {
    let text: String = code.iter().collect();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = text[from..].find("#[cfg(test)]") {
        let start = from + p;
        let start_char = text[..start].chars().count();
        let first_line = line_of(code, start_char);
        let end = item_end(code, start_char + "#[cfg(test)]".len());
        out.push((first_line, line_of(code, end)));
        from = start + "#[cfg(test)]".len();
    }
    out
}

/// The index of the `}` ending the braced item that starts at or after `i` (or of a `;`
/// met first outside brackets).
fn item_end(code: &[char], mut i: usize) -> usize {
    let mut depth = 0usize;
    let mut paren = 0usize;
    while i < code.len() {
        match code[i] {
            '(' | '[' => paren += 1,
            ')' | ']' => paren = paren.saturating_sub(1),
            ';' if depth == 0 && paren == 0 => return i,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    code.len().saturating_sub(1)
}

fn line_of(code: &[char], i: usize) -> usize {
    1 + code[..i.min(code.len())]
        .iter()
        .filter(|&&c| c == '\n')
        .count()
}

/// Every function with a body: `fn name` up to its closing brace.
fn functions(lexed: &Lexed) -> Vec<Function> {
    let code = &lexed.code;
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 < code.len() {
        let at_fn = code[i] == 'f'
            && code[i + 1] == 'n'
            && (i == 0 || !is_ident(code[i - 1]))
            && code[i + 2].is_whitespace();
        if !at_fn {
            i += 1;
            continue;
        }
        let mut j = i + 2;
        while j < code.len() && code[j].is_whitespace() {
            j += 1;
        }
        let name: String = code[j..].iter().take_while(|&&c| is_ident(c)).collect();
        if name.is_empty() {
            i += 2;
            continue;
        }
        let end = item_end(code, j);
        if code.get(end) == Some(&'}') {
            let line = line_of(code, i);
            let last = line_of(code, end);
            out.push(Function {
                name,
                line,
                lines: last - line + 1,
                in_test: lexed.in_test(line),
            });
        }
        i += 2;
    }
    out
}
