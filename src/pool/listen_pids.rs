//! The pid a notification shows when it comes from the server of a client that listens
//! through the shared listener (transaction mode): Postgres shows a session's own
//! notifications with its own pid, and the pid this client knows as its own is the one
//! pgfunnel gave it, not that of whichever server ran its transaction.
//!
//! While such a client holds a server, that server's pid is mapped to the client's pid.
//! When the link ends, a round trip on the shared listening connection (see
//! `Subscription::notify`) makes sure every notification the server committed during the
//! link has reached the hub (Postgres delivers pending notifications before it answers),
//! and only then is the mapping dropped and the server given back. Notifications of
//! other backends keep their pids. Clients that do not listen never touch this map.

use std::collections::HashMap;
use std::sync::Mutex;

/// Server pids lent to listening clients, with the pid each client was given.
#[derive(Debug, Default)]
pub struct OwnServers {
    by_pid: Mutex<HashMap<i32, i32>>,
}

impl OwnServers {
    /// From now on notifications of server `server_pid` show `as_pid`.
    pub fn claim(&self, server_pid: i32, as_pid: i32) {
        crate::panic::lock(&self.by_pid).insert(server_pid, as_pid);
    }

    /// Stops showing `as_pid` for `server_pid` (if the mapping is still this client's).
    pub fn release(&self, server_pid: i32, as_pid: i32) {
        let mut map = crate::panic::lock(&self.by_pid);
        if map.get(&server_pid) == Some(&as_pid) {
            map.remove(&server_pid);
        }
    }

    /// Rewrites the pid of a NotificationResponse body sent by a lent server.
    pub fn rewrite(&self, body: &mut [u8]) {
        let Some(head) = body.get_mut(..4) else {
            return;
        };
        let pid = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let map = crate::panic::lock(&self.by_pid);
        if let Some(as_pid) = map.get(&pid) {
            head.copy_from_slice(&as_pid.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lent_servers_notifications_show_the_clients_pid_until_released() {
        let own = OwnServers::default();
        let mut body = 77i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"chan\0payload\0");
        let mut other = 78i32.to_be_bytes().to_vec();
        other.extend_from_slice(b"chan\0\0");
        own.claim(77, 5);
        own.rewrite(&mut body);
        own.rewrite(&mut other);
        assert_eq!(&body[..4], &5i32.to_be_bytes(), "own server: the given pid");
        assert_eq!(
            &other[..4],
            &78i32.to_be_bytes(),
            "another backend keeps its pid"
        );
        own.claim(77, 6);
        own.release(77, 5);
        let mut again = 77i32.to_be_bytes().to_vec();
        own.rewrite(&mut again);
        assert_eq!(
            &again[..4],
            &6i32.to_be_bytes(),
            "a later client's claim stays"
        );
        own.release(77, 6);
        let mut last = 77i32.to_be_bytes().to_vec();
        own.rewrite(&mut last);
        assert_eq!(&last[..4], &77i32.to_be_bytes());
    }
}
