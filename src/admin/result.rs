//! Result sets of the admin console and their wire encoding: RowDescription with PgBouncer's
//! type OIDs (text, int4, int8, numeric) and DataRows in text or, for the extended protocol,
//! binary format per column as the client's Bind asked.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};

use crate::protocol::messages::{put_cstr, put_message};

/// A column type, as PgBouncer's `pktbuf_write_RowDescription` letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// `s` and `T` (timestamps are sent as text).
    Text,
    /// `i`.
    Int4,
    /// `q`.
    Int8,
    /// `N` (stats counters).
    Numeric,
}

impl ColType {
    /// The type OID and length sent in RowDescription.
    pub fn oid_and_len(self) -> (u32, i16) {
        match self {
            ColType::Text => (25, -1),
            ColType::Int4 => (23, 4),
            ColType::Int8 => (20, 8),
            ColType::Numeric => (1700, -1),
        }
    }

    /// Parses a PgBouncer type letter string (`"ssi"`); unknown letters are text.
    pub fn parse_all(letters: &str) -> Vec<ColType> {
        letters
            .chars()
            .map(|c| match c {
                'i' => ColType::Int4,
                'q' => ColType::Int8,
                'N' => ColType::Numeric,
                _ => ColType::Text,
            })
            .collect()
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Text.
    Text(String),
    /// A number (for int4, int8 and numeric columns).
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<Option<String>> for Value {
    fn from(s: Option<String>) -> Self {
        s.map_or(Value::Null, Value::Text)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(i64::from(n))
    }
}
impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Int(i64::from(n))
    }
}
impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Int(i64::from(n))
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Int(i64::from(b))
    }
}

/// A SHOW result: named, typed columns and rows of cells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names and types, in order.
    pub columns: Vec<(&'static str, ColType)>,
    /// Rows; each has one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl ResultSet {
    /// An empty result with PgBouncer's type letters (`"ssii"`) and column names.
    pub fn new(letters: &str, names: &[&'static str]) -> ResultSet {
        let types = ColType::parse_all(letters);
        debug_assert_eq!(types.len(), names.len(), "one letter per column");
        ResultSet {
            columns: names.iter().copied().zip(types).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (must have one value per column).
    pub fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row width");
        self.rows.push(row);
    }

    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(n, _)| *n == name)
    }

    /// Appends RowDescription; `formats` are the Bind result format codes (empty = text).
    pub fn put_row_description(&self, buf: &mut BytesMut, formats: &[i16]) {
        put_message(buf, b'T', |b| {
            b.put_i16(self.columns.len() as i16);
            for (i, (name, ty)) in self.columns.iter().enumerate() {
                let (oid, len) = ty.oid_and_len();
                put_cstr(b, name);
                b.put_u32(0);
                b.put_i16(0);
                b.put_u32(oid);
                b.put_i16(len);
                b.put_i32(-1);
                b.put_i16(format_of(formats, i));
            }
        });
    }

    /// Appends one DataRow per row, each cell in the format `formats` asks for.
    pub fn put_data_rows(&self, buf: &mut BytesMut, formats: &[i16]) {
        for row in &self.rows {
            put_message(buf, b'D', |b| {
                b.put_i16(row.len() as i16);
                for (i, v) in row.iter().enumerate() {
                    let ty = self.columns[i].1;
                    put_cell(b, v, ty, format_of(formats, i) == 1);
                }
            });
        }
    }
}

/// The format code for column `i`: none = text, one = for all, else per column.
fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats.len() {
        0 => 0,
        1 => formats[0],
        _ => formats.get(i).copied().unwrap_or(0),
    }
}

fn put_cell(b: &mut BytesMut, v: &Value, ty: ColType, binary: bool) {
    let text;
    let bytes: &[u8] = match (v, ty, binary) {
        (Value::Null, _, _) => {
            b.put_i32(-1);
            return;
        }
        (Value::Int(n), ColType::Int4, true) => {
            b.put_i32(4);
            b.put_i32(i32::try_from(*n).unwrap_or(i32::MAX));
            return;
        }
        (Value::Int(n), ColType::Int8, true) => {
            b.put_i32(8);
            b.put_i64(*n);
            return;
        }
        (Value::Int(n), ColType::Numeric, true) => {
            let enc = numeric_binary(*n);
            b.put_i32(enc.len() as i32);
            b.put_slice(&enc);
            return;
        }
        (Value::Int(n), _, _) => {
            text = n.to_string();
            text.as_bytes()
        }
        (Value::Text(s), _, _) => s.as_bytes(),
    };
    b.put_i32(bytes.len() as i32);
    b.put_slice(bytes);
}

/// The binary `numeric` encoding of an integer: base-10000 digits, weight, sign, scale 0.
pub fn numeric_binary(n: i64) -> Vec<u8> {
    let mut groups = Vec::new();
    let mut rest = n.unsigned_abs();
    while rest > 0 {
        groups.push((rest % 10_000) as i16);
        rest /= 10_000;
    }
    groups.reverse();
    let weight = groups.len().saturating_sub(1) as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let mut out = Vec::with_capacity(8 + groups.len() * 2);
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    let sign: u16 = if n < 0 { 0x4000 } else { 0 };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out
}

/// PgBouncer's `format_time_s`: `YYYY-MM-DD HH:MM:SS TZ` (pgfunnel prints UTC).
pub fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn numeric_binary_matches_postgres() {
        // numeric_send(12345678) = ndigits 2, weight 1, sign 0, dscale 0, 1234, 5678
        assert_eq!(
            numeric_binary(12_345_678),
            [0, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xd2, 0x16, 0x2e]
        );
        assert_eq!(numeric_binary(0), [0, 0, 0, 0, 0, 0, 0, 0]);
        // 10000 = one digit 1 at weight 1 (trailing zero group dropped)
        assert_eq!(numeric_binary(10_000), [0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
        assert_eq!(numeric_binary(-5)[4..6], [0x40, 0]);
    }

    #[test]
    fn formats_times_like_pgbouncer() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format_time(t), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_time(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn encodes_text_and_binary_cells() {
        let mut rs = ResultSet::new("siN", &["a", "b", "c"]);
        rs.push(vec!["x".into(), 7i64.into(), Value::Null]);
        let mut text = BytesMut::new();
        rs.put_data_rows(&mut text, &[]);
        assert_eq!(
            &text[..],
            b"D\0\0\0\x14\0\x03\0\0\0\x01x\0\0\0\x017\xff\xff\xff\xff"
        );
        let mut bin = BytesMut::new();
        rs.put_data_rows(&mut bin, &[1]);
        assert_eq!(&bin[12..20], &[0, 0, 0, 4, 0, 0, 0, 7]);
        let mut desc = BytesMut::new();
        rs.put_row_description(&mut desc, &[0, 1, 0]);
        assert_eq!(desc[0], b'T');
        assert_eq!(rs.column("c"), Some(2));
    }
}
