// pgjdbc through pgfunnel in transaction mode with prepareThreshold=1 (a PreparedStatement is a
// named server statement from its first execution), batches (many Bind/Execute before one
// Sync), CopyManager and getNotifications. Run by tests/it/drivers as
// `java -cp postgresql.jar PgjdbcSuite.java`; exits non-zero on the first failed check.

import java.io.StringReader;
import java.io.StringWriter;
import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;

public class PgjdbcSuite {
    static final String HOST = env("PGFUNNEL_HOST");
    static final String PORT = env("PGFUNNEL_PORT");
    static final String USER = env("PGFUNNEL_USER");
    static final String PASSWORD = env("PGFUNNEL_PASSWORD");
    static final String DB = env("PGFUNNEL_DB");
    static final String PREFIX = env("PGFUNNEL_PREFIX");
    static final int CLIENTS = Integer.parseInt(System.getenv().getOrDefault("PGFUNNEL_CLIENTS", "12"));
    static final int POOL_SIZE = Integer.parseInt(System.getenv().getOrDefault("PGFUNNEL_POOL_SIZE", "2"));
    static final int ROUNDS = 15;
    static final int BIG_ROWS = 50_000;
    static final String BIG_VALUE = "0123456789abcdef".repeat(5 * 1024 * 1024 / 16); // 5 MiB
    static final int NOTIFY_TIMEOUT_MS = 10_000;
    static final long PHASE_TIMEOUT_S = 60;
    static final String ITEMS = PREFIX + "_items", BIG = PREFIX + "_big", COPY = PREFIX + "_copy";
    static final AtomicInteger checks = new AtomicInteger();

    interface Phase {
        void run() throws Exception;
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null) throw new IllegalStateException(name + " is not set (run through tests/it/drivers)");
        return v;
    }

    static Connection connect() throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", USER);
        p.setProperty("password", PASSWORD);
        p.setProperty("prepareThreshold", "1");
        p.setProperty("sslmode", "disable");
        p.setProperty("connectTimeout", "20");
        return DriverManager.getConnection("jdbc:postgresql://" + HOST + ":" + PORT + "/" + DB, p);
    }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError("check failed: " + what);
    }

    static String shorten(Object v) {
        String s = String.valueOf(v);
        return s.length() > 300 ? s.substring(0, 300) + "... (" + s.length() + " chars)" : s;
    }

    static void checkEq(Object got, Object want, String what) {
        if (!Objects.equals(got, want)) throw new AssertionError(what + ": got " + shorten(got) + ", want " + shorten(want));
    }

    static void ok(int n) {
        checks.addAndGet(n);
    }

    static String md5(String text) throws Exception {
        byte[] d = MessageDigest.getInstance("MD5").digest(text.getBytes("UTF-8"));
        StringBuilder sb = new StringBuilder();
        for (byte b : d) sb.append(String.format("%02x", b));
        return sb.toString();
    }

    static String clientTimeout(int ci) {
        return (10_001 + ci) + "ms"; // never a whole second: Postgres would print "10s"
    }

    interface Sql {
        void run() throws SQLException;
    }

    static void expectError(String sqlstate, String what, Sql body) {
        try {
            body.run();
        } catch (SQLException e) {
            checkEq(e.getSQLState(), sqlstate, "error of " + what + " (" + e.getMessage() + ")");
            ok(1);
            return;
        }
        throw new AssertionError(what + " succeeded, expected " + sqlstate);
    }

    static void createTables() throws Exception {
        try (Connection c = connect(); Statement s = c.createStatement()) {
            for (String t : new String[] {ITEMS, BIG, COPY}) s.execute("drop table if exists " + t);
            s.execute("create table " + ITEMS + " (id int primary key, client int not null, val text not null)");
            s.execute("create table " + BIG + " (id int primary key, data text not null)");
            s.execute("create table " + COPY + " (id int primary key, note text not null)");
        }
    }

    static void worker(int ci, Set<Integer> pids) throws Exception {
        try (Connection c = connect()) {
            try (Statement s = c.createStatement()) {
                s.execute("set statement_timeout = '" + clientTimeout(ci) + "'");
            }
            PreparedStatement select = c.prepareStatement(
                    "select ?::int * 2, pg_backend_pid(), current_setting('statement_timeout')");
            PreparedStatement insert = c.prepareStatement(
                    "insert into " + ITEMS + " (id, client, val) values (?, ?, ?) returning id, val");
            PreparedStatement countId = c.prepareStatement("select count(*) from " + ITEMS + " where id = ?");
            PreparedStatement div = c.prepareStatement("select 1 / ?::int");
            for (int r = 0; r < ROUNDS; r++) {
                int key = ci * 1000 + r;
                select.setInt(1, key);
                try (ResultSet rs = select.executeQuery()) {
                    check(rs.next(), "a row");
                    checkEq(rs.getInt(1), key * 2, "prepared select");
                    pids.add(rs.getInt(2));
                    checkEq(rs.getString(3), clientTimeout(ci), "client " + ci + " statement_timeout");
                }
                insert.setInt(1, key);
                insert.setInt(2, ci);
                insert.setString(3, "v" + key);
                try (ResultSet rs = insert.executeQuery()) {
                    check(rs.next(), "a row");
                    checkEq(rs.getInt(1) + "/" + rs.getString(2), key + "/v" + key, "prepared insert returning");
                }
                if (r % 5 == 0) {
                    c.setAutoCommit(false);
                    insert.setInt(1, -key - 1);
                    insert.setString(3, "rolled back");
                    insert.executeQuery().close();
                    c.rollback();
                    c.setAutoCommit(true);
                    countId.setInt(1, -key - 1);
                    try (ResultSet rs = countId.executeQuery()) {
                        rs.next();
                        checkEq(rs.getLong(1), 0L, "row of a rolled back transaction");
                    }
                    div.setInt(1, 0);
                    expectError("22012", "division by zero", () -> div.executeQuery().close());
                    insert.setInt(1, key);
                    insert.setString(3, "dup");
                    expectError("23505", "duplicate key", () -> insert.executeQuery().close());
                    c.setAutoCommit(false);
                    expectError("22012", "division by zero in a transaction", () -> div.executeQuery().close());
                    expectError("25P02", "query in an aborted transaction", () -> select.executeQuery().close());
                    c.rollback();
                    c.setAutoCommit(true);
                    div.setInt(1, 1);
                    try (ResultSet rs = div.executeQuery()) {
                        rs.next();
                        checkEq(rs.getInt(1), 1, "prepared query after an aborted transaction");
                    }
                }
                ok(4);
            }
            // A batch: many Bind/Execute of one statement before a single Sync.
            try (PreparedStatement batch = c.prepareStatement(
                    "insert into " + ITEMS + " (id, client, val) values (?, ?, 'batch')")) {
                for (int i = 0; i < 20; i++) {
                    batch.setInt(1, 1_000_000 + ci * 100 + i);
                    batch.setInt(2, ci);
                    batch.addBatch();
                }
                int[] counts = batch.executeBatch();
                checkEq(counts.length, 20, "batch results");
                for (int n : counts) checkEq(n, 1, "batch row count");
            }
            try (PreparedStatement count = c.prepareStatement("select count(*) from " + ITEMS + " where client = ?")) {
                count.setInt(1, ci);
                try (ResultSet rs = count.executeQuery()) {
                    rs.next();
                    checkEq(rs.getLong(1), (long) ROUNDS + 20, "rows of client " + ci);
                }
            }
        }
    }

    static void concurrentClients() throws Exception {
        Set<Integer> pids = ConcurrentHashMap.newKeySet();
        ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
        List<Future<Object>> futures = new ArrayList<>();
        for (int ci = 0; ci < CLIENTS; ci++) {
            final int id = ci;
            futures.add(pool.submit(() -> {
                worker(id, pids);
                return null;
            }));
        }
        pool.shutdown();
        for (Future<Object> f : futures) f.get(); // rethrows a worker's failure
        check(pids.size() >= 1 && pids.size() <= POOL_SIZE,
                CLIENTS + " clients saw " + pids.size() + " server pids, pool is " + POOL_SIZE);
        try (Connection c = connect(); Statement s = c.createStatement();
                ResultSet rs = s.executeQuery("select count(*), count(distinct client) from " + ITEMS)) {
            rs.next();
            checkEq(rs.getLong(1) + "/" + rs.getLong(2), (CLIENTS * (ROUNDS + 20)) + "/" + CLIENTS, "rows of all clients");
        }
        ok(1);
    }

    static void largeResults() throws Exception {
        try (Connection c = connect()) {
            try (PreparedStatement p = c.prepareStatement("select g, md5(g::text) from generate_series(1, ?) g")) {
                p.setInt(1, BIG_ROWS);
                long n = 0, sum = 0;
                String last = null;
                try (ResultSet rs = p.executeQuery()) {
                    while (rs.next()) {
                        n++;
                        sum += rs.getInt(1);
                        last = rs.getString(2);
                    }
                }
                checkEq(n, (long) BIG_ROWS, "rows of a large result");
                checkEq(sum, (long) BIG_ROWS * (BIG_ROWS + 1) / 2, "sum of a large result");
                checkEq(last, md5(String.valueOf(BIG_ROWS)), "last row of a large result");
            }
            try (PreparedStatement p = c.prepareStatement(
                    "select length(v), md5(v), v from (select repeat(?::text, ?) v) s")) {
                p.setString(1, "0123456789abcdef");
                p.setInt(2, BIG_VALUE.length() / 16);
                try (ResultSet rs = p.executeQuery()) {
                    rs.next();
                    checkEq(rs.getInt(1) + "/" + rs.getString(2), BIG_VALUE.length() + "/" + md5(BIG_VALUE), "5 MiB result value");
                    check(BIG_VALUE.equals(rs.getString(3)), "5 MiB result value differs");
                }
            }
            // Fetch in pieces: a portal suspended and resumed inside a transaction.
            c.setAutoCommit(false);
            try (PreparedStatement p = c.prepareStatement("select g from generate_series(1, ?) g")) {
                p.setFetchSize(5000);
                p.setInt(1, BIG_ROWS);
                long sum = 0;
                try (ResultSet rs = p.executeQuery()) {
                    while (rs.next()) sum += rs.getInt(1);
                }
                checkEq(sum, (long) BIG_ROWS * (BIG_ROWS + 1) / 2, "sum over a fetch-size cursor");
            }
            c.commit();
            c.setAutoCommit(true);
        }
        ok(6);
    }

    static void largeParameter() throws Exception {
        try (Connection c = connect()) {
            try (PreparedStatement p = c.prepareStatement("insert into " + BIG + " (id, data) values (?, ?)")) {
                p.setInt(1, 1);
                p.setString(2, BIG_VALUE);
                checkEq(p.executeUpdate(), 1, "insert of a 5 MiB parameter");
            }
            try (PreparedStatement p = c.prepareStatement("select length(data), md5(data), data from " + BIG + " where id = ?")) {
                p.setInt(1, 1);
                try (ResultSet rs = p.executeQuery()) {
                    rs.next();
                    checkEq(rs.getInt(1) + "/" + rs.getString(2), BIG_VALUE.length() + "/" + md5(BIG_VALUE), "5 MiB parameter stored");
                    check(BIG_VALUE.equals(rs.getString(3)), "5 MiB parameter read back differs");
                }
            }
        }
        ok(3);
    }

    static void copyInOut() throws Exception {
        StringBuilder text = new StringBuilder();
        for (int i = 1; i <= 1000; i++) text.append(i).append("\tcopy row ").append(i).append(" with tab\\t\n");
        try (Connection c = connect()) {
            CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
            long n = copy.copyIn("copy " + COPY + " (id, note) from stdin", new StringReader(text.toString()));
            checkEq(n, 1000L, "COPY FROM row count");
            StringWriter out = new StringWriter();
            long m = copy.copyOut("copy (select id, note from " + COPY + " order by id) to stdout", out);
            checkEq(m, 1000L, "COPY TO row count");
            checkEq(out.toString(), text.toString(), "COPY TO output");
            expectError("22P02", "COPY of bad data", () -> {
                try {
                    copy.copyIn("copy " + COPY + " (id, note) from stdin", new StringReader("not a number\tx\n"));
                } catch (java.io.IOException e) {
                    throw new SQLException(e);
                }
            });
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("select count(*) from " + COPY)) {
                rs.next();
                checkEq(rs.getLong(1), 1000L, "rows after a failed COPY");
            }
        }
        ok(4);
    }

    static void listenNotify() throws Exception {
        String channel = PREFIX + "_chan";
        try (Connection listener = connect(); Connection sender = connect()) {
            try (Statement s = listener.createStatement()) {
                s.execute("listen " + channel);
            }
            try (PreparedStatement p = sender.prepareStatement("select pg_notify(?, ?)")) {
                p.setString(1, channel);
                p.setString(2, "hello from pgjdbc");
                p.executeQuery().close();
            }
            // Blocks until a notification arrives or the timeout passes.
            PGNotification[] got = listener.unwrap(PGConnection.class).getNotifications(NOTIFY_TIMEOUT_MS);
            check(got != null && got.length == 1, "one notification within " + NOTIFY_TIMEOUT_MS + " ms");
            checkEq(got[0].getName() + "/" + got[0].getParameter(), channel + "/hello from pgjdbc", "notification");
        }
        ok(2);
    }

    static void statementTimeoutHolds() throws Exception {
        try (Connection c = connect(); Connection other = connect()) {
            try (Statement s = c.createStatement()) {
                s.execute("set statement_timeout = '150ms'");
            }
            PreparedStatement setting = other.prepareStatement("select current_setting('statement_timeout')");
            PreparedStatement sleep = c.prepareStatement("select pg_sleep(?)");
            for (int i = 0; i < 3; i++) {
                try (ResultSet rs = setting.executeQuery()) {
                    rs.next();
                    checkEq(rs.getString(1), "0", "statement_timeout of a client that never set it");
                }
                sleep.setInt(1, 5);
                expectError("57014", "pg_sleep past statement_timeout", () -> sleep.executeQuery().close());
            }
            try (Statement s = c.createStatement()) {
                s.execute("reset statement_timeout");
                try (ResultSet rs = s.executeQuery("select current_setting('statement_timeout')")) {
                    rs.next();
                    checkEq(rs.getString(1), "0", "after RESET");
                }
            }
        }
        ok(2);
    }

    static void runPhase(String name, Phase phase) {
        ExecutorService ex = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r);
            t.setDaemon(true);
            return t;
        });
        long started = System.nanoTime();
        Future<Object> f = ex.submit(() -> {
            phase.run();
            return null;
        });
        try {
            f.get(PHASE_TIMEOUT_S, TimeUnit.SECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
            System.out.println("FAILED: phase '" + name + "' did not finish within " + PHASE_TIMEOUT_S + " s");
            System.out.flush();
            System.exit(1);
        } catch (java.util.concurrent.ExecutionException e) {
            StringWriter trace = new StringWriter();
            e.getCause().printStackTrace(new java.io.PrintWriter(trace));
            System.out.println("FAILED: phase '" + name + "': " + trace);
            System.out.flush();
            System.exit(1);
        } catch (InterruptedException e) {
            System.exit(1);
        }
        ex.shutdown();
        System.out.println("phase " + name + ": ok (" + (System.nanoTime() - started) / 1_000_000 + " ms)");
    }

    public static void main(String[] args) {
        runPhase("create tables", PgjdbcSuite::createTables);
        runPhase("concurrent clients", PgjdbcSuite::concurrentClients);
        runPhase("large results", PgjdbcSuite::largeResults);
        runPhase("copy", PgjdbcSuite::copyInOut);
        runPhase("listen/notify", PgjdbcSuite::listenNotify);
        runPhase("statement_timeout", PgjdbcSuite::statementTimeoutHolds);
        runPhase("large parameter", PgjdbcSuite::largeParameter);
        System.out.println("DRIVER OK pgjdbc checks=" + checks.get());
        System.out.flush();
        System.exit(0);
    }
}
