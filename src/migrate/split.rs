//! Sans-I/O SQL text helpers: Drizzle's `--> statement-breakpoint` chunks, splitting a chunk
//! into statements (quotes, dollar quotes and comments aware), and mapping a server error
//! position back to a line. Knows nothing about files or connections.

/// Drizzle's separator between statements; Drizzle splits on it as plain text, so do we.
pub const BREAKPOINT: &str = "--> statement-breakpoint";

/// A piece of a migration file sent to the server as one simple query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The exact text of the file slice (leading comments and whitespace included).
    pub sql: String,
    /// 1-based line of the file where `sql` starts.
    pub first_line: usize,
}

impl Piece {
    /// The file line of the server's 1-based character `position` within this piece (as in
    /// ErrorResponse's `P` field); the first line when the position is out of range.
    pub fn line_of_position(&self, position: u32) -> usize {
        let chars = (position as usize).saturating_sub(1);
        let newlines = self.sql.chars().take(chars).filter(|&c| c == '\n').count();
        self.first_line + newlines
    }

    /// The file line of the piece's first byte of SQL (past leading comments and blank
    /// lines): where an error without a position is reported.
    pub fn first_code_line(&self) -> usize {
        self.first_line + line_at(&self.sql, code_start(&self.sql)) - 1
    }
}

/// Splits `text` (a whole file starting at line 1) on [`BREAKPOINT`]; pieces holding only
/// whitespace and comments are dropped.
pub fn breakpoint_chunks(text: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut start = 0;
    loop {
        let end = text[start..].find(BREAKPOINT).map(|i| start + i);
        let slice = &text[start..end.unwrap_or(text.len())];
        if has_code(slice) {
            pieces.push(Piece {
                sql: slice.to_owned(),
                first_line: line_at(text, start),
            });
        }
        match end {
            Some(e) => start = e + BREAKPOINT.len(),
            None => return pieces,
        }
    }
}

/// Splits `piece` into single statements on top-level `;` (not inside quotes, quoted
/// identifiers, dollar quotes or comments); statements holding only comments are dropped.
pub fn statements(piece: &Piece) -> Vec<Piece> {
    let text = piece.sql.as_str();
    let mut out = Vec::new();
    let mut start = 0;
    let mut lexer = Lexer::new(text);
    while let Some(end) = lexer.next_semicolon() {
        push_statement(&mut out, piece, start, end + 1);
        start = end + 1;
    }
    push_statement(&mut out, piece, start, text.len());
    out
}

fn push_statement(out: &mut Vec<Piece>, piece: &Piece, start: usize, end: usize) {
    let slice = &piece.sql[start..end];
    if has_code(slice) {
        out.push(Piece {
            sql: slice.to_owned(),
            first_line: piece.first_line + line_at(&piece.sql, start) - 1,
        });
    }
}

/// Byte offset of the first SQL in `text` past whitespace and comments (its length when none).
pub fn code_start(text: &str) -> usize {
    Lexer::new(text)
        .next_semicolon_or_code(true)
        .unwrap_or(text.len())
}

/// 1-based line of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    1 + text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Whether `text` holds anything but whitespace, comments and semicolons.
fn has_code(text: &str) -> bool {
    let mut lexer = Lexer::new(text);
    lexer.next_semicolon_or_code(true).is_some()
}

/// A minimal SQL lexer: just enough to find top-level semicolons.
struct Lexer<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer {
            text: text.as_bytes(),
            pos: 0,
        }
    }

    fn next_semicolon(&mut self) -> Option<usize> {
        self.next_semicolon_or_code(false)
    }

    /// Byte offset of the next top-level `;`, or (when `code` is set) of the first byte of
    /// real SQL instead.
    fn next_semicolon_or_code(&mut self, code: bool) -> Option<usize> {
        while self.pos < self.text.len() {
            let at = self.pos;
            let c = self.text[at];
            let next = self.text.get(at + 1).copied();
            match c {
                b'-' if next == Some(b'-') => self.skip_line_comment(),
                b'/' if next == Some(b'*') => self.skip_block_comment(),
                b';' if !code => {
                    self.pos += 1;
                    return Some(at);
                }
                c if c.is_ascii_whitespace() || c == b';' => self.pos += 1,
                _ if code => return Some(at),
                b'\'' => {
                    let escapes = at > 0
                        && matches!(self.text[at - 1], b'e' | b'E')
                        && (at < 2 || !is_ident(self.text[at - 2]));
                    self.skip_quoted(b'\'', escapes);
                }
                b'"' => self.skip_quoted(b'"', false),
                b'$' if at == 0 || !is_ident(self.text[at - 1]) => self.skip_dollar(),
                _ => self.pos += 1,
            }
        }
        None
    }

    fn skip_line_comment(&mut self) {
        while self.pos < self.text.len() && self.text[self.pos] != b'\n' {
            self.pos += 1;
        }
    }

    fn skip_block_comment(&mut self) {
        // Postgres block comments nest.
        let mut depth = 0usize;
        while self.pos < self.text.len() {
            let pair = (self.text[self.pos], self.text.get(self.pos + 1).copied());
            match pair {
                (b'/', Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (b'*', Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return;
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skips a '...' string (doubled quote escapes it; backslash too in E'...') or "ident".
    fn skip_quoted(&mut self, quote: u8, backslash_escapes: bool) {
        self.pos += 1;
        while self.pos < self.text.len() {
            let c = self.text[self.pos];
            if backslash_escapes && c == b'\\' {
                self.pos += 2;
            } else if c == quote {
                if self.text.get(self.pos + 1) == Some(&quote) {
                    self.pos += 2;
                } else {
                    self.pos += 1;
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
    }

    /// Skips `$tag$ ... $tag$`; a lone `$` or `$1` (a parameter) is one ordinary byte.
    fn skip_dollar(&mut self) {
        let start = self.pos;
        let mut end = start + 1;
        while end < self.text.len() && is_ident(self.text[end]) && self.text[end] != b'$' {
            end += 1;
        }
        let tag_ok = self.text.get(end) == Some(&b'$')
            && self.text.get(start + 1).is_none_or(|c| !c.is_ascii_digit());
        if !tag_ok {
            self.pos += 1;
            return;
        }
        let tag = &self.text[start..=end];
        let body = end + 1;
        self.pos = match find(&self.text[body..], tag) {
            Some(i) => body + i + tag.len(),
            None => self.text.len(),
        };
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Piece {
        Piece {
            sql: text.to_owned(),
            first_line: 1,
        }
    }

    fn sqls(pieces: &[Piece]) -> Vec<(&str, usize)> {
        pieces
            .iter()
            .map(|p| (p.sql.trim(), p.first_line))
            .collect()
    }

    #[test]
    fn breakpoints_split_drizzle_files_and_keep_file_lines() {
        let text = "CREATE TABLE a (id int);\n--> statement-breakpoint\nCREATE TABLE b (id int);\n--> statement-breakpoint\n\n";
        let chunks = breakpoint_chunks(text);
        assert_eq!(
            sqls(&chunks),
            vec![
                ("CREATE TABLE a (id int);", 1),
                ("CREATE TABLE b (id int);", 2)
            ],
            "a chunk starts right after the marker, on the marker's line"
        );
        assert_eq!(chunks[1].first_code_line(), 3);
    }

    #[test]
    fn file_without_breakpoint_is_one_chunk_and_comment_only_file_is_none() {
        assert_eq!(breakpoint_chunks("select 1;\nselect 2;\n").len(), 1);
        assert!(breakpoint_chunks("-- nothing here\n/* really */\n").is_empty());
    }

    #[test]
    fn statements_ignore_semicolons_in_quotes_comments_and_dollar_quotes() {
        let text = "-- a; comment\nINSERT INTO t VALUES ('a;b', E'it\\'s;', \"x;y\");\n\
                    /* block; /* nested; */ still; */ SELECT 1;\n\
                    CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n\
                    SELECT $1, a$b FROM t;";
        let got = statements(&whole(text));
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].sql.contains("'a;b'") && got[0].sql.trim_end().ends_with(';'));
        assert_eq!(got[0].first_line, 1);
        assert_eq!(got[1].first_line, 2, "starts right after the first ';'");
        assert!(got[2].sql.contains("$body$ SELECT 1; $body$"));
        assert_eq!(got[2].first_line, 3);
        assert_eq!(got[3].sql.trim(), "SELECT $1, a$b FROM t;");
    }

    #[test]
    fn trailing_comment_after_last_statement_is_not_a_statement() {
        let got = statements(&whole("CREATE INDEX CONCURRENTLY i ON t (a);\n-- done\n"));
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn error_position_maps_to_the_file_line() {
        let piece = Piece {
            sql: "\nSELECT 1;\nSELEC 2;".to_owned(),
            first_line: 10,
        };
        let pos = piece.sql.find("SELEC 2").expect("present") as u32 + 1;
        assert_eq!(piece.line_of_position(pos), 12);
        assert_eq!(piece.line_of_position(0), 10);
        assert_eq!(piece.line_of_position(10_000), 12);
        assert_eq!(
            piece.first_code_line(),
            11,
            "the blank first line is skipped"
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let piece = whole("SELECT 'é';\nSELEC");
        let pos = piece.sql.chars().position(|c| c == 'S').expect("S") as u32;
        let second = piece.sql.chars().skip(1).position(|c| c == 'S').expect("S") as u32 + 2;
        assert_eq!(piece.line_of_position(pos + 1), 1);
        assert_eq!(piece.line_of_position(second), 2);
    }
}
