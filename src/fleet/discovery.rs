//! Finding peers and telling live ones: `peers_dns` names every instance (the A/AAAA records
//! of a Kubernetes headless Service); each address is asked its peer id over
//! `GET /fleet/peer` on the `metrics_listen` port (the same port on every instance), and its
//! cancel address is that address with our `listen_port`. A peer is live while its listener
//! accepts a connection (probed each refresh period; the probe sends nothing).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::peers::{Peer, PeerMap, PeerSource};
use super::Resolver;
use crate::app::App;

/// Longest wait for one probe or id request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The peers behind `name`, without this instance. Addresses that do not answer with an id
/// are left out (not started yet, or not a pgfunnel).
pub async fn discover(app: &App, name: &str, resolver: Option<Resolver>) -> PeerMap {
    let config = app.config();
    let s = &config.settings;
    let Some(metrics_port) = s.metrics_listen.as_deref().and_then(port_of) else {
        warn!("peers_dns needs metrics_listen (peer ids are learned over it)");
        return PeerMap::new();
    };
    let ips: Vec<IpAddr> = match resolver {
        Some(r) => r(name),
        None => match tokio::net::lookup_host((name, 0)).await {
            Ok(a) => a.map(|a| a.ip()).collect(),
            Err(e) => {
                debug!(name, error = %e, "peers_dns does not resolve");
                Vec::new()
            }
        },
    };
    let old = app.fleet.peers();
    let mut asks = tokio::task::JoinSet::new();
    for ip in ips {
        asks.spawn(async move { (ip, ask_peer_id(SocketAddr::new(ip, metrics_port)).await) });
    }
    let mut found = PeerMap::new();
    while let Some(Ok((ip, id))) = asks.join_next().await {
        let Some(id) = id.filter(|&id| id != app.fleet.peer_id() && id > 0) else {
            continue;
        };
        let size = s.default_pool_size.max(1);
        let new = Peer::new(id, ip.to_string(), s.listen_port, size, PeerSource::Dns);
        let kept = old.get(&id).filter(|o| o.same_as(&new)).cloned();
        found.insert(id, kept.unwrap_or_else(|| Arc::new(new)));
    }
    found
}

fn port_of(listen: &str) -> Option<u16> {
    listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

/// Asks the pgfunnel at `addr` (its metrics listener) for its peer id.
pub async fn ask_peer_id(addr: SocketAddr) -> Option<u16> {
    let exchange = async {
        let mut sock = tokio::net::TcpStream::connect(addr).await.ok()?;
        sock.write_all(b"GET /fleet/peer HTTP/1.0\r\nHost: peer\r\n\r\n")
            .await
            .ok()?;
        let mut reply = Vec::new();
        sock.take(4096).read_to_end(&mut reply).await.ok()?;
        parse_peer_reply(&reply)
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// The id in a `/fleet/peer` reply: status 200 and a body that is one number.
pub fn parse_peer_reply(reply: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(reply).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    body.trim().parse().ok()
}

/// The ids of the peers whose listener accepts a connection now.
pub async fn live_peers(peers: Vec<Arc<Peer>>) -> Vec<u16> {
    let mut probes = tokio::task::JoinSet::new();
    for p in peers {
        probes.spawn(async move {
            let ok = tokio::time::timeout(PROBE_TIMEOUT, probe(&p))
                .await
                .unwrap_or(false);
            ok.then_some(p.id)
        });
    }
    let mut live = Vec::new();
    while let Some(r) = probes.join_next().await {
        if let Ok(Some(id)) = r {
            live.push(id);
        }
    }
    live
}

async fn probe(peer: &Peer) -> bool {
    if peer.host.starts_with('/') {
        let path = std::path::Path::new(&peer.host).join(format!(".s.PGSQL.{}", peer.port));
        return tokio::net::UnixStream::connect(path).await.is_ok();
    }
    let Ok(addrs) = tokio::net::lookup_host((peer.host.as_str(), peer.port)).await else {
        return false;
    };
    for a in addrs {
        if tokio::net::TcpStream::connect(a).await.is_ok() {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_replies_need_status_200_and_a_number() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n12\n";
        assert_eq!(parse_peer_reply(ok), Some(12));
        assert_eq!(parse_peer_reply(b"HTTP/1.1 404 Not Found\r\n\r\n12"), None);
        assert_eq!(parse_peer_reply(b"HTTP/1.1 200 OK\r\n\r\nabc"), None);
        assert_eq!(parse_peer_reply(b"garbage"), None);
        assert_eq!(port_of("0.0.0.0:9127"), Some(9127));
        assert_eq!(port_of("[::]:9127"), Some(9127));
    }
}
