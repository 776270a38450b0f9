//! Checks against the system: the client certificate's name (`cert`) and the peer's OS user
//! name (`peer`), each optionally through a user-name map.

use super::*;

/// `auth_type = cert` / HBA `cert`: a verified client certificate whose subject CN is the
/// user name, or maps to it through the rule's `map=` (TLS verification already checked
/// the chain against client_tls_ca_file).
pub(super) fn check_certificate(
    stream: &Stream,
    user: &str,
    allowed: impl Fn(&str) -> bool,
) -> Result<(), Denied> {
    let cn = stream
        .client_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| subject_common_name(leaf));
    match cn {
        Some(cn) if allowed(&cn) => Ok(()),
        _ => Err(Denied::Certificate(user.to_owned())),
    }
}

/// HBA `peer`: the OS user at the other end of the Unix socket must have this name, or
/// map to it through the rule's `map=`.
pub(super) fn check_peer(
    stream: &Stream,
    user: &str,
    allowed: impl Fn(&str) -> bool,
) -> Result<(), Denied> {
    let fail = || Denied::Peer(user.to_owned());
    let Stream::Unix(unix) = stream else {
        return Err(fail());
    };
    let uid = unix.peer_cred().map_err(|_| fail())?.uid();
    match os_user_name(uid) {
        Some(name) if allowed(&name) => Ok(()),
        _ => Err(fail()),
    }
}

pub(super) fn os_user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r writes only into `pwd` and `buf` (whose length we pass) and
    // sets `result` to null or to `&pwd`; pw_name then points into `buf`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pwd.pw_name);
        name.to_str().ok().map(str::to_owned)
    }
}
