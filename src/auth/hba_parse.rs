//! Parsing one `auth_hba_file` line: tokenizing into fields and items, then the rule and its
//! address.

use super::*;

/// Splits a line into fields; a field is a comma-separated list of items (whitespace
/// around commas allowed). `#` outside quotes starts a comment; `""` inside quotes is `"`.
pub(super) fn tokenize(line: &str) -> Result<Vec<Vec<Item>>, &'static str> {
    let mut fields: Vec<Vec<Item>> = Vec::new();
    let mut chars = line.chars().peekable();
    let mut continue_field = false;
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => break,
            Some(',') if continue_field => return Err("empty item in a list"),
            Some(',') => return Err("list starts with a comma"),
            _ => {}
        }
        let mut item = Item {
            text: String::new(),
            quoted: false,
        };
        while let Some(&c) = chars.peek() {
            if c == '"' {
                chars.next();
                item.quoted = true;
                loop {
                    match chars.next() {
                        None => return Err("unterminated quoted string"),
                        Some('"') if chars.next_if_eq(&'"').is_some() => item.text.push('"'),
                        Some('"') => break,
                        Some(c) => item.text.push(c),
                    }
                }
            } else if c.is_whitespace() || c == ',' || c == '#' {
                break;
            } else {
                item.text.push(c);
                chars.next();
            }
        }
        match fields.last_mut() {
            Some(last) if continue_field => last.push(item),
            _ => fields.push(vec![item]),
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        continue_field = chars.next_if_eq(&',').is_some();
    }
    if continue_field {
        return Err("list ends with a comma");
    }
    Ok(fields)
}

pub(super) fn single(field: Vec<Item>) -> Result<String, &'static str> {
    match <[Item; 1]>::try_from(field) {
        Ok([item]) => Ok(item.text),
        Err(_) => Err("a list where a single value is expected"),
    }
}

pub(super) fn parse_rule(fields: Vec<Vec<Item>>) -> Result<Rule, &'static str> {
    let mut fields = fields.into_iter();
    let mut next = |what| fields.next().ok_or(what);
    let conn = match single(next("missing connection type")?)?.as_str() {
        "local" => ConnType::Local,
        "host" => ConnType::Host,
        "hostssl" => ConnType::HostSsl,
        "hostnossl" => ConnType::HostNoSsl,
        _ => return Err("unknown connection type (local, host, hostssl, hostnossl)"),
    };
    let databases = next("missing database")?;
    let users = next("missing user")?;
    if users.iter().any(|u| !u.quoted && u.text.starts_with('+')) {
        return Err("+group user names are not supported");
    }
    if databases
        .iter()
        .chain(&users)
        .any(|i| !i.quoted && i.text.starts_with('@'))
    {
        return Err("@file includes are not supported");
    }
    if databases
        .iter()
        .any(|d| d.is_keyword("samerole") || d.is_keyword("samegroup"))
    {
        return Err("samerole is not supported");
    }
    let address = if conn == ConnType::Local {
        None
    } else {
        let text = single(next("missing address")?)?;
        Some(parse_address(&text, &mut next)?)
    };
    let method_text = single(next("missing method")?)?;
    let method = HbaMethod::parse(&method_text).ok_or("unsupported authentication method")?;
    // Options follow; `map=NAME` is used by peer and cert, others are ignored.
    let mut map = None;
    while let Ok(option) = next("") {
        for item in option {
            if let Some(name) = item.text.strip_prefix("map=") {
                map = Some(name.to_owned());
            }
        }
    }
    Ok(Rule {
        conn,
        databases,
        users,
        address,
        method,
        map,
    })
}

pub(super) fn parse_address(
    text: &str,
    next: &mut impl FnMut(&'static str) -> Result<Vec<Item>, &'static str>,
) -> Result<Address, &'static str> {
    if text == "all" {
        return Ok(Address::All);
    }
    if let Some((ip, bits)) = text.split_once('/') {
        let ip: IpAddr = ip.parse().map_err(|_| "address is not an IP address")?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = bits
            .parse::<u32>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or("bad CIDR prefix length")?;
        return Ok(Address::Net { ip, prefix });
    }
    let ip: IpAddr = text
        .parse()
        .map_err(|_| "host names, samehost and samenet are not supported")?;
    let mask: IpAddr = single(next("an address without /prefix needs a netmask")?)?
        .parse()
        .map_err(|_| "bad netmask")?;
    let (bits, ones) = match mask {
        IpAddr::V4(m) => (u32::from(m) as u128, 32),
        IpAddr::V6(m) => (u128::from(m), 128),
    };
    if ip.is_ipv4() != mask.is_ipv4() {
        return Err("address and netmask are of different families");
    }
    let prefix = bits.count_ones();
    let width = if ones == 32 { bits << 96 } else { bits };
    if width.leading_ones() != prefix {
        return Err("netmask is not contiguous");
    }
    Ok(Address::Net { ip, prefix })
}
