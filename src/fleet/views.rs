//! The fleet as /metrics text (hand-written exposition lines appended to the registry's):
//! peer id, live members, current budget shares, and cancel forwards per peer.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::Fleet;

/// Prometheus text for the fleet gauges and counters.
pub fn metrics_text(fleet: &Fleet) -> String {
    let mut out = String::new();
    let (db, user) = fleet.shares();
    let gauges: [(&str, &str, u64); 4] = [
        (
            "pgfunnel_fleet_peer_id",
            "This instance's peer_id (0 = peering off).",
            fleet.peer_id().into(),
        ),
        (
            "pgfunnel_fleet_live_members",
            "Instances the fleet budget is divided among (this one included).",
            fleet.members().len() as u64,
        ),
        (
            "pgfunnel_fleet_db_connections_share",
            "This instance's share of fleet_max_db_connections per database (0 = budget off).",
            db.into(),
        ),
        (
            "pgfunnel_fleet_user_connections_share",
            "This instance's share of fleet_max_user_connections per user (0 = budget off).",
            user.into(),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    let peers = fleet.peers();
    let _ = writeln!(out, "# HELP pgfunnel_fleet_cancel_forwards_total Cancel requests forwarded to a peer, by outcome.\n# TYPE pgfunnel_fleet_cancel_forwards_total counter");
    for (id, p) in &peers {
        let sent = p.stats.forwarded.load(Ordering::Relaxed);
        let failed = p.stats.failed.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "pgfunnel_fleet_cancel_forwards_total{{peer=\"{id}\",outcome=\"sent\"}} {sent}"
        );
        let _ = writeln!(
            out,
            "pgfunnel_fleet_cancel_forwards_total{{peer=\"{id}\",outcome=\"failed\"}} {failed}"
        );
    }
    out
}

/// SHOW CONFIG rows for the current budget shares (computed, not settable).
pub fn config_rows(fleet: &Fleet, rs: &mut crate::admin::result::ResultSet) {
    let (db, user) = fleet.shares();
    for (key, value) in [
        ("fleet_db_connections_share", db),
        ("fleet_user_connections_share", user),
    ] {
        rs.push(vec![
            key.into(),
            value.to_string().into(),
            "0".into(),
            "no".into(),
        ]);
    }
}
