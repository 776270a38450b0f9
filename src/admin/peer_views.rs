//! SHOW PEERS and SHOW PEER_POOLS (PgBouncer's columns; SHOW PEERS adds where each peer
//! was found and whether the fleet budget counts it live: `-` when no budget is on, since
//! peers are probed only for it).

use std::sync::atomic::Ordering;

use super::result::ResultSet;
use crate::app::App;

/// One row per known peer: id, host, port, pool_size, source, live.
pub fn peers(app: &App) -> ResultSet {
    let mut rs = ResultSet::new(
        "isiiss",
        &["peer_id", "host", "port", "pool_size", "source", "live"],
    );
    let live = app.fleet.members();
    let config = app.config();
    // Peers are probed only for the fleet budget; without it, liveness is unknown.
    let probed = config.settings.fleet_max_db_connections > 0
        || config.settings.fleet_max_user_connections > 0;
    for (id, p) in app.fleet.peers() {
        rs.push(vec![
            id.into(),
            p.host.clone().into(),
            p.port.into(),
            p.pool_size.into(),
            p.source.as_str().into(),
            (match (probed, live.contains(&id)) {
                (false, _) => "-",
                (true, true) => "yes",
                (true, false) => "no",
            })
            .into(),
        ]);
    }
    rs
}

/// One row per peer with its cancel forwards: waiting for a slot and in flight.
pub fn peer_pools(app: &App) -> ResultSet {
    let mut rs = ResultSet::new(
        "iiiii",
        &[
            "peer_id",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active_cancel",
            "sv_login",
        ],
    );
    for (id, p) in app.fleet.peers() {
        let active = p.stats.active.load(Ordering::Relaxed);
        rs.push(vec![
            id.into(),
            active.into(),
            p.stats.waiting.load(Ordering::Relaxed).into(),
            active.into(),
            0usize.into(),
        ]);
    }
    rs
}
