use super::*;

#[test]
fn bind_formats_are_found_after_parameters() {
    // 1 param format (text), 1 param of 2 bytes, 2 result formats (binary, text)
    let body = [0, 1, 0, 0, 0, 1, 0, 0, 0, 2, b'h', b'i', 0, 2, 0, 1, 0, 0];
    assert_eq!(parse_bind_formats(&body), Some(vec![1, 0]));
    assert_eq!(parse_bind_formats(&[0, 0, 0, 0, 0, 0]), Some(vec![]));
    assert_eq!(parse_bind_formats(&[0, 1]), None);
}
