//! Every stats_period: rotate the pools' snapshots (SHOW STATS averages) and, with
//! log_stats, log PgBouncer's summary line.

use std::sync::Arc;

use tracing::info;

use crate::app::App;
use crate::pool::StatsTotals;

/// PgBouncer's stats line (`stats.c` refresh_stats), from the averages of one window.
pub fn summary_line(avg: &StatsTotals) -> String {
    format!(
        "stats: {} xacts/s, {} queries/s, {} client parses/s, {} server parses/s, {} binds/s, {} client logins/s, in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
        avg.xact_count,
        avg.query_count,
        avg.client_parse_count,
        avg.server_parse_count,
        avg.bind_count,
        avg.client_login_count,
        avg.bytes_received,
        avg.bytes_sent,
        avg.xact_time,
        avg.query_time,
        avg.wait_time
    )
}

/// Spawns the stats_period task; it stops at shutdown.
pub fn spawn_stats_period(app: &Arc<App>) {
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            let period = app
                .config()
                .settings
                .stats_period
                .max(std::time::Duration::from_secs(1));
            tokio::select! {
                _ = app.shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let (mut now, mut older) = (StatsTotals::default(), StatsTotals::default());
            app.metrics.rotate_window();
            app.control.console.rotate();
            for p in app.pools.iter() {
                p.stats.rotate();
                now.add(&p.stats.totals());
                older.add(&p.stats.older());
            }
            if app.config().settings.log_stats {
                let avg = now.averages(&older, app.metrics.window());
                info!("{}", summary_line(&avg));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_reads_like_pgbouncer() {
        let avg = StatsTotals {
            xact_count: 3,
            query_count: 4,
            wait_time: 12,
            ..Default::default()
        };
        let line = summary_line(&avg);
        assert!(
            line.starts_with("stats: 3 xacts/s, 4 queries/s, 0 client parses/s"),
            "{line}"
        );
        assert!(line.ends_with("wait 12 us"), "{line}");
    }
}
