//! TCP socket options PgBouncer sets on client and server sockets: `tcp_keepalive`,
//! `tcp_keepcnt`, `tcp_keepidle`, `tcp_keepintvl` and `tcp_user_timeout`. Zero leaves the
//! operating system's default, as in PgBouncer.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::config::Settings;

/// The keepalive and user-timeout options of one config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpTuning {
    /// SO_KEEPALIVE.
    pub keepalive: bool,
    /// TCP_KEEPCNT (0 = OS default).
    pub keepcnt: u32,
    /// TCP_KEEPIDLE (0 = OS default), whole seconds.
    pub keepidle: Duration,
    /// TCP_KEEPINTVL (0 = OS default), whole seconds.
    pub keepintvl: Duration,
    /// TCP_USER_TIMEOUT (0 = OS default), milliseconds.
    pub user_timeout: Duration,
}

impl TcpTuning {
    /// The options `settings` asks for.
    pub fn from_settings(s: &Settings) -> TcpTuning {
        TcpTuning {
            keepalive: s.tcp_keepalive,
            keepcnt: s.tcp_keepcnt,
            keepidle: s.tcp_keepidle,
            keepintvl: s.tcp_keepintvl,
            user_timeout: s.tcp_user_timeout,
        }
    }

    /// Sets the options on `socket`. The keepalive details apply only with keepalive on.
    pub fn apply(&self, socket: &impl AsRawFd) -> io::Result<()> {
        let fd = socket.as_raw_fd();
        set_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            self.keepalive as i32,
        )?;
        if self.keepalive {
            let secs = |d: Duration| d.as_secs().clamp(1, i32::MAX as u64) as i32;
            if !self.keepidle.is_zero() {
                set_int(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_KEEPIDLE,
                    secs(self.keepidle),
                )?;
            }
            if !self.keepintvl.is_zero() {
                set_int(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_KEEPINTVL,
                    secs(self.keepintvl),
                )?;
            }
            if self.keepcnt > 0 {
                let cnt = self.keepcnt.min(i32::MAX as u32) as i32;
                set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, cnt)?;
            }
        }
        if !self.user_timeout.is_zero() {
            let ms = self.user_timeout.as_millis().min(i32::MAX as u128) as i32;
            set_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)?;
        }
        Ok(())
    }
}

fn set_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt reads exactly size_of::<i32>() bytes from `value`, which lives
    // for the call; a bad fd or option is reported as an error, not undefined behaviour.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an integer socket option (tests and diagnostics).
pub fn get_int(socket: &impl AsRawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value` and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&mut value as *mut i32).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (a, b)
    }

    #[test]
    fn keepalive_details_and_user_timeout_are_set_as_configured() {
        let (sock, _peer) = pair();
        let tuning = TcpTuning {
            keepalive: true,
            keepcnt: 4,
            keepidle: Duration::from_secs(33),
            keepintvl: Duration::from_secs(7),
            user_timeout: Duration::from_millis(1500),
        };
        tuning.apply(&sock).expect("apply");
        let get = |level, name| get_int(&sock, level, name).expect("getsockopt");
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 4);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 33);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 7);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 1500);
    }

    #[test]
    fn keepalive_off_clears_so_keepalive_and_zero_keeps_os_defaults() {
        let (sock, _peer) = pair();
        let before = get_int(&sock, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE).expect("get");
        TcpTuning {
            keepalive: true,
            ..TcpTuning::default()
        }
        .apply(&sock)
        .expect("apply");
        assert_eq!(
            get_int(&sock, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE).expect("get"),
            before
        );
        TcpTuning::default().apply(&sock).expect("apply");
        assert_eq!(
            get_int(&sock, libc::SOL_SOCKET, libc::SO_KEEPALIVE).expect("get"),
            0
        );
    }
}
