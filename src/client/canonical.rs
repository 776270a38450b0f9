//! Reported parameter values in the spelling Postgres reports them (`eucjp` -> `EUC_JP`,
//! `iso` -> `ISO, MDY`), so the ParameterStatus a client gets at login from pgfunnel's
//! cached values matches what Postgres itself would have sent. Values pgfunnel does not
//! know how to spell stay as given; the server's own report corrects them at the first
//! link (see `sync_parameters`).

/// The value Postgres would report for the reported parameter `name` set to `value`, where
/// `current` is the value before (parts of DateStyle left out keep theirs).
pub fn value(name: &str, value: &str, current: Option<&str>) -> String {
    let canonical = if name.eq_ignore_ascii_case("client_encoding") {
        encoding(value).map(str::to_owned)
    } else if name.eq_ignore_ascii_case("DateStyle") {
        date_style(value, current.unwrap_or("ISO, MDY"))
    } else if name.eq_ignore_ascii_case("IntervalStyle") {
        interval_style(value)
    } else if name.eq_ignore_ascii_case("standard_conforming_strings") {
        boolean(value).map(|b| if b { "on" } else { "off" }.to_owned())
    } else {
        None
    };
    canonical.unwrap_or_else(|| value.to_owned())
}

/// Postgres's name for a client encoding, looked up as Postgres does: only letters and
/// digits count, in any case (`UTF-8`, `utf8`, `Unicode` -> `UTF8`).
pub fn encoding(given: &str) -> Option<&'static str> {
    let key: String = given
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let name = match key.as_str() {
        "sqlascii" => "SQL_ASCII",
        "utf8" | "unicode" => "UTF8",
        "eucjp" => "EUC_JP",
        "euccn" => "EUC_CN",
        "euckr" => "EUC_KR",
        "euctw" => "EUC_TW",
        "eucjis2004" => "EUC_JIS_2004",
        "muleinternal" => "MULE_INTERNAL",
        "latin1" | "iso88591" => "LATIN1",
        "latin2" | "iso88592" => "LATIN2",
        "latin3" | "iso88593" => "LATIN3",
        "latin4" | "iso88594" => "LATIN4",
        "latin5" | "iso88599" => "LATIN5",
        "latin6" | "iso885910" => "LATIN6",
        "latin7" | "iso885913" => "LATIN7",
        "latin8" | "iso885914" => "LATIN8",
        "latin9" | "iso885915" => "LATIN9",
        "latin10" | "iso885916" => "LATIN10",
        "iso88595" => "ISO_8859_5",
        "iso88596" => "ISO_8859_6",
        "iso88597" => "ISO_8859_7",
        "iso88598" => "ISO_8859_8",
        "koi8" | "koi8r" => "KOI8R",
        "koi8u" => "KOI8U",
        "alt" | "win866" | "windows866" => "WIN866",
        "win874" | "windows874" => "WIN874",
        "win" | "win1251" | "windows1251" => "WIN1251",
        "win1250" | "windows1250" => "WIN1250",
        "win1252" | "windows1252" => "WIN1252",
        "win1253" | "windows1253" => "WIN1253",
        "win1254" | "windows1254" => "WIN1254",
        "win1255" | "windows1255" => "WIN1255",
        "win1256" | "windows1256" => "WIN1256",
        "win1257" | "windows1257" => "WIN1257",
        "win1258" | "windows1258" | "abc" | "tcvn" | "tcvn5712" | "vscii" => "WIN1258",
        "sjis" | "shiftjis" | "mskanji" | "win932" | "windows932" => "SJIS",
        "shiftjis2004" => "SHIFT_JIS_2004",
        "big5" | "win950" | "windows950" => "BIG5",
        "gbk" | "win936" | "windows936" => "GBK",
        "uhc" | "win949" | "windows949" => "UHC",
        "gb18030" => "GB18030",
        "johab" => "JOHAB",
        _ => return None,
    };
    Some(name)
}

/// DateStyle as `<Style>, <Order>`: words of `given` (comma or space separated, any case)
/// override the parts of `current`; German alone implies DMY, as in Postgres. None for
/// anything not understood (and for `DEFAULT`, whose value only the server knows).
fn date_style(given: &str, current: &str) -> Option<String> {
    let (mut style, mut order) = current.split_once(',').map(|(s, o)| (s.trim(), o.trim()))?;
    let (mut have_style, mut have_order) = (false, false);
    for word in given
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        let w = word.to_ascii_lowercase();
        let (new_style, new_order) = match w.as_str() {
            "iso" => (Some("ISO"), None),
            "sql" => (Some("SQL"), None),
            "postgres" => (Some("Postgres"), None),
            "german" => (Some("German"), None),
            "ymd" => (None, Some("YMD")),
            "dmy" | "euro" | "european" => (None, Some("DMY")),
            "mdy" | "us" | "noneuro" | "noneuropean" => (None, Some("MDY")),
            _ => return None,
        };
        if let Some(s) = new_style {
            if have_style && s != style {
                return None;
            }
            (style, have_style) = (s, true);
        }
        if let Some(o) = new_order {
            if have_order && o != order {
                return None;
            }
            (order, have_order) = (o, true);
        }
    }
    if style == "German" && have_style && !have_order {
        order = "DMY";
    }
    Some(format!("{style}, {order}"))
}

fn interval_style(given: &str) -> Option<String> {
    let v = given.trim().to_ascii_lowercase();
    ["postgres", "postgres_verbose", "sql_standard", "iso_8601"]
        .contains(&v.as_str())
        .then_some(v)
}

/// A boolean as Postgres reads one (`on`, `t`, `yes`, `1`, unique prefixes...).
fn boolean(given: &str) -> Option<bool> {
    let v = given.trim().to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(v.as_str());
    if v == "1" || prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) {
        Some(true)
    } else if v == "0" || prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_take_postgres_spelling() {
        for (given, want) in [
            ("eucjp", "EUC_JP"),
            ("utf8", "UTF8"),
            ("UTF-8", "UTF8"),
            ("Unicode", "UTF8"),
            ("iso88591", "LATIN1"),
            ("windows1252", "WIN1252"),
            ("koi8", "KOI8R"),
            ("mskanji", "SJIS"),
            ("iso_8859_5", "ISO_8859_5"),
            ("shift_jis_2004", "SHIFT_JIS_2004"),
        ] {
            assert_eq!(
                value("client_encoding", given, Some("UTF8")),
                want,
                "{given}"
            );
        }
        assert_eq!(
            value("client_encoding", "cp866", Some("UTF8")),
            "cp866",
            "unknown: the server decides"
        );
    }

    #[test]
    fn date_style_fills_in_the_current_parts() {
        let cases = [
            ("iso", "ISO, MDY"),
            ("german", "German, DMY"),
            ("German, MDY", "German, MDY"),
            ("sql", "SQL, MDY"),
            ("euro", "ISO, DMY"),
            ("Postgres,ymd", "Postgres, YMD"),
            ("us", "ISO, MDY"),
            ("ymd", "ISO, YMD"),
        ];
        for (given, want) in cases {
            assert_eq!(value("DateStyle", given, Some("ISO, MDY")), want, "{given}");
        }
        assert_eq!(value("datestyle", "dmy", Some("SQL, MDY")), "SQL, DMY");
        for odd in ["DEFAULT", "iso, sql", "nonsense"] {
            assert_eq!(value("DateStyle", odd, Some("ISO, MDY")), odd);
        }
    }

    #[test]
    fn enums_and_booleans_are_spelled_as_reported() {
        assert_eq!(value("IntervalStyle", "ISO_8601", None), "iso_8601");
        assert_eq!(value("standard_conforming_strings", "true", None), "on");
        assert_eq!(value("standard_conforming_strings", "OFF", None), "off");
        assert_eq!(value("standard_conforming_strings", "o", None), "o");
        assert_eq!(value("TimeZone", "utc", None), "utc", "left to the server");
    }
}
