//! A fleet of pgfunnels: PgBouncer-compatible peering (cancel keys that name their issuer,
//! CancelRequests for another peer forwarded to it at most one hop), peers from `[peers]`
//! and from DNS (`peers_dns`, ids learned over `/fleet/peer` on `metrics_listen`), and one
//! upstream budget (`fleet_max_db_connections`, `fleet_max_user_connections`) divided among
//! the live peers.
//!
//! Files: `key` (the key layout), `peers` (peer list, forwarding), `budget` (the division,
//! pure), `discovery` (liveness probes, DNS), `views` (console rows and metrics text).

pub mod budget;
pub mod discovery;
pub mod key;
pub mod peers;
pub mod views;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tracing::{debug, info, warn};

use crate::app::App;
use crate::config::{Config, PeerIdSetting, Settings, MAX_PEER_ID};
use crate::pool::LimitGroup;
use budget::Membership;
use key::CancelKey;
use peers::{Peer, PeerMap, PeerSource};

/// Resolves a DNS name to addresses (swappable for tests).
pub type Resolver = Arc<dyn Fn(&str) -> Vec<std::net::IpAddr> + Send + Sync>;

/// The fleet state of one pgfunnel.
pub struct Fleet {
    peer_id: u16,
    /// `[peers]` entries (without this instance).
    configured: ArcSwap<PeerMap>,
    /// Peers found through `peers_dns`.
    discovered: ArcSwap<PeerMap>,
    membership: Mutex<Membership>,
    /// Current shares (db, user); 0 = that budget is off.
    shares: Mutex<(u32, u32)>,
    db_groups: DashMap<String, Arc<LimitGroup>>,
    user_groups: DashMap<String, Arc<LimitGroup>>,
    resolver: ArcSwap<Option<Resolver>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// This instance's peer id from `peer_id` (0 = peering off). `auto` takes the low 14 bits
/// of the host name's first non-loopback IPv4 address (unique within a /18, e.g. the pod
/// network of one Kubernetes node or cluster up to that size).
pub fn own_peer_id(settings: &Settings) -> u16 {
    match settings.peer_id {
        PeerIdSetting::Off => 0,
        PeerIdSetting::Fixed(id) => id,
        PeerIdSetting::Auto => match host_ipv4() {
            Some(ip) => auto_peer_id(ip),
            None => {
                warn!("peer_id = auto: the host name has no IPv4 address; peering is off");
                0
            }
        },
    }
}

/// The `auto` peer id of an address: its low 14 bits, 0 mapped to 16383.
pub fn auto_peer_id(ip: std::net::Ipv4Addr) -> u16 {
    let low = (u32::from(ip) & u32::from(MAX_PEER_ID)) as u16;
    if low == 0 {
        MAX_PEER_ID
    } else {
        low
    }
}

fn host_ipv4() -> Option<std::net::Ipv4Addr> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(name, 0)).ok()?;
    addrs
        .filter_map(|a| match a.ip() {
            std::net::IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .next()
}

fn configured_peers(config: &Config, me: u16, old: &PeerMap) -> PeerMap {
    let default_size = config.settings.default_pool_size.max(1);
    config
        .peers
        .iter()
        .filter(|p| p.id != me)
        .map(|p| {
            let size = p.pool_size.unwrap_or(default_size);
            let new = Peer::new(p.id, p.host.clone(), p.port, size, PeerSource::Config);
            let kept = old.get(&p.id).filter(|o| o.same_as(&new)).cloned();
            (p.id, kept.unwrap_or_else(|| Arc::new(new)))
        })
        .collect()
}

impl Fleet {
    /// The fleet state for `config`.
    pub fn new(config: &Config) -> Arc<Fleet> {
        let s = &config.settings;
        let peer_id = own_peer_id(s);
        let now = Instant::now();
        let expect_peers = config.peers.iter().any(|p| p.id != peer_id) || s.peers_dns.is_some();
        let join_delay = refresh_period(s) * JOIN_PERIODS;
        let mut membership =
            Membership::new(peer_id, s.fleet_grace_period, join_delay, now, expect_peers);
        // Configured peers count as live until they fail to answer for a grace period.
        for p in &config.peers {
            membership.saw(p.id, now);
        }
        let fleet = Fleet {
            peer_id,
            configured: ArcSwap::from_pointee(configured_peers(config, peer_id, &PeerMap::new())),
            discovered: ArcSwap::from_pointee(PeerMap::new()),
            membership: Mutex::new(membership),
            shares: Mutex::new((0, 0)),
            db_groups: DashMap::new(),
            user_groups: DashMap::new(),
            resolver: ArcSwap::from_pointee(None),
        };
        if peer_id > 0 {
            info!(peer_id, peers = config.peers.len(), "peering on");
        }
        let fleet = Arc::new(fleet);
        fleet.recompute(config, now);
        fleet
    }

    /// This instance's peer id (0 = peering off).
    pub fn peer_id(&self) -> u16 {
        self.peer_id
    }

    /// Applies a reloaded config: the `[peers]` list and the budget.
    pub fn reload(&self, config: &Config) {
        let old = self.configured.load_full();
        self.configured
            .store(Arc::new(configured_peers(config, self.peer_id, &old)));
        crate::panic::lock(&self.membership).set_grace(config.settings.fleet_grace_period);
        self.recompute(config, Instant::now());
    }

    /// Replaces the DNS resolver used for `peers_dns` (tests use a fixed table).
    pub fn set_resolver(&self, resolver: Resolver) {
        self.resolver.store(Arc::new(Some(resolver)));
    }

    /// Every known peer (configured ones win over discovered ones with the same id).
    pub fn peers(&self) -> PeerMap {
        let mut all = (**self.discovered.load()).clone();
        all.extend(self.configured.load().iter().map(|(k, v)| (*k, v.clone())));
        all
    }

    /// Live members (with this instance) as the budget counts them now.
    pub fn members(&self) -> Vec<u16> {
        crate::panic::lock(&self.membership).members(Instant::now())
    }

    /// Current shares (db, user) of the fleet budgets; 0 = that budget is off.
    pub fn shares(&self) -> (u32, u32) {
        *crate::panic::lock(&self.shares)
    }

    /// True while a fleet budget is on and this instance still waits for its peers to see
    /// it (readiness reports it, so a Service sends no clients yet).
    pub fn joining(&self, config: &Config) -> bool {
        let s = &config.settings;
        let budget_on = s.fleet_max_db_connections > 0 || s.fleet_max_user_connections > 0;
        budget_on && crate::panic::lock(&self.membership).joining(Instant::now())
    }

    /// The fleet limit groups a new pool of (`database`, `user`) joins: one per budget
    /// that is on, sized to this instance's current share.
    pub fn limit_groups(
        &self,
        config: &Config,
        database: &str,
        user: &str,
    ) -> Vec<Arc<LimitGroup>> {
        let (db_share, user_share) = self.shares();
        let mut groups = Vec::new();
        if config.settings.fleet_max_db_connections > 0 {
            let g = self.db_groups.entry(database.to_owned());
            groups.push(
                g.or_insert_with(|| LimitGroup::new(db_share as usize))
                    .clone(),
            );
        }
        if config.settings.fleet_max_user_connections > 0 {
            let g = self.user_groups.entry(user.to_owned());
            groups.push(
                g.or_insert_with(|| LimitGroup::new(user_share as usize))
                    .clone(),
            );
        }
        groups
    }

    /// Recomputes this instance's shares and resizes the limit groups when they changed.
    pub fn recompute(&self, config: &Config, now: Instant) {
        let s = &config.settings;
        let (db, user) = {
            let mut m = crate::panic::lock(&self.membership);
            (
                m.my_share(s.fleet_max_db_connections, now),
                m.my_share(s.fleet_max_user_connections, now),
            )
        };
        let old = std::mem::replace(&mut *crate::panic::lock(&self.shares), (db, user));
        if old != (db, user) {
            info!(db, user, members = ?self.members(), "fleet budget shares changed");
        }
        for g in self.db_groups.iter() {
            if g.max() != db as usize {
                g.resize(db as usize);
            }
            g.settle();
        }
        for g in self.user_groups.iter() {
            if g.max() != user as usize {
                g.resize(user as usize);
            }
            g.settle();
        }
    }

    /// Takes back slots owed after a shrink (see [`LimitGroup::settle`]).
    pub fn settle(&self) {
        for g in self.db_groups.iter() {
            g.settle();
        }
        for g in self.user_groups.iter() {
            g.settle();
        }
    }

    fn saw(&self, id: u16) {
        crate::panic::lock(&self.membership).saw(id, Instant::now());
    }
}

/// Refresh periods a new instance waits before taking a budget share, so every peer has
/// probed it and shrunk (and closed its idle connections above the new share).
const JOIN_PERIODS: u32 = 3;

/// How often peers are probed and `peers_dns` resolved: `dns_max_ttl`, between 100 ms and
/// 5 s (a new instance waits three of them before taking a budget share).
pub fn refresh_period(s: &Settings) -> Duration {
    s.dns_max_ttl
        .clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Serves a CancelRequest: a key naming another peer goes to that peer (if it is known and
/// the key has a hop left), anything else to the local registry. Unknown peers: dropped.
pub async fn serve_cancel(app: &App, pid: i32, secret: &[u8]) {
    let me = app.fleet.peer_id();
    let key = CancelKey::from_request(pid, secret);
    match key {
        Some(key) if me > 0 && key.peer_id() != me => {
            if key.ttl() == 0 {
                debug!(
                    peer = key.peer_id(),
                    "cancel request with no hop left dropped"
                );
                return;
            }
            let Some(peer) = app.fleet.peers().get(&key.peer_id()).cloned() else {
                debug!(
                    peer = key.peer_id(),
                    "cancel request for unknown peer dropped"
                );
                return;
            };
            let wait = app.config().settings.cancel_wait_timeout;
            peers::forward(&peer, key, &app.tls, &app.dns, wait).await;
        }
        _ => {
            // A session-mode client's key may carry its server's real pid (peering off).
            crate::client::context::cancel_here(&app.cancel, &app.session_keys, pid, secret).await;
        }
    }
}

/// How often owed slots are taken back between refresh rounds.
const SETTLE_TICK: Duration = Duration::from_millis(25);

/// Starts the refresh loop: probes peers, resolves `peers_dns`, re-divides the budget.
pub fn spawn(app: &Arc<App>) {
    let app2 = app.clone();
    app.tasks.spawn(async move {
        refresh(&app2).await;
        let mut next = Instant::now() + refresh_period(&app2.config().settings);
        loop {
            // Between rounds, keep taking back slots owed after a shrink (idle connections
            // above the share are closed soon after they are released).
            tokio::select! {
                _ = app2.shutdown.cancelled() => break,
                _ = tokio::time::sleep(SETTLE_TICK) => {}
            }
            app2.fleet.settle();
            if Instant::now() >= next {
                refresh(&app2).await;
                next = Instant::now() + refresh_period(&app2.config().settings);
            }
        }
    });
}

/// One refresh round (also run by tests).
pub async fn refresh(app: &App) {
    let config = app.config();
    let fleet = &app.fleet;
    if let Some(name) = config.settings.peers_dns.clone() {
        let resolver = (**fleet.resolver.load()).clone();
        let found = discovery::discover(app, &name, resolver).await;
        fleet.discovered.store(Arc::new(found));
    } else if !fleet.discovered.load().is_empty() {
        fleet.discovered.store(Arc::new(PeerMap::new()));
    }
    let budget_on = config.settings.fleet_max_db_connections > 0
        || config.settings.fleet_max_user_connections > 0;
    if budget_on {
        for id in discovery::live_peers(fleet.peers().values().cloned().collect()).await {
            fleet.saw(id);
        }
    }
    fleet.recompute(&config, Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_peer_ids_are_the_low_14_bits_of_the_address() {
        assert_eq!(auto_peer_id("10.1.2.3".parse().expect("ip")), 0x0203);
        assert_eq!(auto_peer_id("10.1.66.3".parse().expect("ip")), 0x0203);
        assert_eq!(auto_peer_id("10.1.255.255".parse().expect("ip")), 16383);
        assert_eq!(
            auto_peer_id("10.1.64.0".parse().expect("ip")),
            16383,
            "0 is taken as 16383"
        );
    }
}
