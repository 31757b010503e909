// connpool::mysql against a real MariaDB server (tests/support/mariadb_server.hpp): connecting,
// statements and queries, quoting, reset and validate as the pool drives them, faults (server
// down, killed sessions, wait_timeout, a restart) and cancellation with KILL QUERY.

#include <connpool/mysql.hpp>
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <random>
#include <vector>
#include <stop_token>
#include <string>
#include <thread>

#include "mysql_fixtures.hpp"

namespace {

namespace my = connpool::mysql;
using connpool::testing::MariadbServer;
using connpool::testing::mysql_pool_options;
using connpool::testing::MysqlPool;
using connpool::testing::MysqlTest;
using namespace std::chrono_literals;

class MysqlConnection : public MysqlTest {};

TEST_F(MysqlConnection, connects_with_a_password_over_tcp_and_the_socket_and_speaks_utf8mb4) {
    auto tcp = direct();
    EXPECT_EQ(tcp.query_value("SELECT CURRENT_USER()"), std::optional<std::string>(std::string(MariadbServer::user) + "@%"));
    EXPECT_EQ(tcp.query_value("SELECT @@character_set_client"), std::optional<std::string>("utf8mb4"));
    EXPECT_EQ(tcp.query_value("SELECT DATABASE()"), std::optional<std::string>(db_));
    EXPECT_TRUE(tcp.is_mariadb());
    EXPECT_NE(tcp.server_version().find("MariaDB"), std::string::npos);
    EXPECT_GT(tcp.thread_id(), 0UL);
    auto sock = my::Factory(server().unix_socket(db_)).create();
    EXPECT_EQ(sock.query_value("SELECT @@character_set_connection"), std::optional<std::string>("utf8mb4"));
    EXPECT_NE(sock.thread_id(), tcp.thread_id());
}

TEST_F(MysqlConnection, query_keeps_null_empty_binary_and_utf8mb4_apart) {
    auto c = direct();
    c.exec("CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(20) NULL, b VARBINARY(20) NULL) ENGINE=InnoDB");
    const std::string binary("\0\x01\xff'\"\\`;", 8);
    c.exec("INSERT INTO t VALUES (1, NULL, NULL), (2, '', ''), (3, " + c.quote_string("h\xc3\xa9llo \xf0\x9f\x98\x80") + ", " +
           c.quote_string(binary) + ")");
    const my::Rows rows = c.query("SELECT id, s, b FROM t ORDER BY id");
    ASSERT_EQ(rows.size(), 3U);
    ASSERT_EQ(rows.columns, (std::vector<std::string>{"id", "s", "b"}));
    EXPECT_EQ(rows[0][1], std::nullopt);
    EXPECT_EQ(rows[0][2], std::nullopt);
    EXPECT_EQ(rows[1][1], std::optional<std::string>(""));
    EXPECT_EQ(rows[1][2], std::optional<std::string>(""));
    EXPECT_EQ(rows[2][1], std::optional<std::string>("h\xc3\xa9llo \xf0\x9f\x98\x80"));
    EXPECT_EQ(rows[2][2], std::optional<std::string>(binary));
    EXPECT_EQ(c.query_value("SELECT CHAR_LENGTH(s) FROM t WHERE id = 3"), std::optional<std::string>("7"));
    EXPECT_EQ(c.query_value("SELECT NULL"), std::nullopt);
    EXPECT_EQ(c.query_value("SELECT 1 FROM t WHERE id = 42"), std::nullopt);
}

TEST_F(MysqlConnection, exec_runs_several_statements_and_consumes_every_result) {
    auto c = direct();
    c.exec("CREATE TABLE t (id INT); INSERT INTO t VALUES (1), (2); SELECT * FROM t; SELECT 1, 2; UPDATE t SET id = id + 10");
    EXPECT_EQ(c.query_value("SELECT SUM(id) FROM t"), std::optional<std::string>("23"));
    EXPECT_TRUE(c.query("DO 1").empty());
}

TEST_F(MysqlConnection, a_failed_statement_names_the_server_code_and_sqlstate_and_leaves_the_connection_usable) {
    auto c = direct();
    try {
        c.exec("SELECT * FROM no_such_table");
        FAIL() << "no error";
    } catch (const my::Error& e) {
        EXPECT_EQ(e.code(), 1146U);
        EXPECT_EQ(e.sqlstate(), "42S02");
        const std::string what = e.what();
        EXPECT_NE(what.find("no_such_table"), std::string::npos) << what;
        EXPECT_NE(what.find(db_), std::string::npos) << what;
        EXPECT_NE(what.find("error 1146, SQLSTATE 42S02"), std::string::npos) << what;
        EXPECT_EQ(what.find(MariadbServer::password), std::string::npos) << what;
    }
    EXPECT_EQ(c.query_value("SELECT 7"), std::optional<std::string>("7"));
}

TEST_F(MysqlConnection, hostile_identifiers_work_in_real_create_table_and_select) {
    auto c = direct();
    for (const std::string& name : {std::string("we`ird"), std::string("it's \"quoted\""), std::string("a b; DROP TABLE x; --"),
                                   std::string("``"), std::string("caf\xc3\xa9 \xe2\x82\xac")}) { // names are utf8mb3
        SCOPED_TRACE(name);
        const std::string table = my::quote_identifier(name);
        const std::string column = my::quote_identifier(name + " col");
        c.exec("CREATE TABLE " + table + " (" + column + " VARCHAR(50))");
        c.exec("INSERT INTO " + table + " VALUES (" + c.quote_string(name) + ")");
        EXPECT_EQ(c.query_value("SELECT " + column + " FROM " + table), std::optional<std::string>(name));
        EXPECT_EQ(c.query_value("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = " +
                                c.quote_string(name)),
                  std::optional<std::string>("1"));
        c.exec("DROP TABLE " + table);
    }
    EXPECT_EQ(my::quote_identifier("a`b"), "`a``b`");
    EXPECT_THROW((void)my::quote_identifier(""), std::invalid_argument);
    EXPECT_THROW((void)my::quote_identifier(std::string("a\0b", 3)), std::invalid_argument);
}

TEST_F(MysqlConnection, reset_rolls_back_and_drops_temporary_tables_and_session_variables) {
    my::FactoryOptions o;
    o.init_sql = "SET SESSION sql_mode = 'ANSI_QUOTES'";
    auto f = factory(o);
    auto c = f.create();
    c.exec("CREATE TABLE t (id INT) ENGINE=InnoDB");
    const unsigned long id = c.thread_id();
    c.exec("CREATE TEMPORARY TABLE tmp (x INT); SET @v = 42; SET SESSION sql_mode = ''; SET NAMES latin1; "
           "START TRANSACTION; INSERT INTO t VALUES (1)");
    ASSERT_TRUE(c.in_transaction());
    ASSERT_TRUE(f.reset(c));
    EXPECT_FALSE(c.in_transaction());
    EXPECT_EQ(c.thread_id(), id); // the same session, not a new connection
    EXPECT_EQ(c.query_value("SELECT @v"), std::nullopt);
    EXPECT_EQ(c.query_value("SELECT COUNT(*) FROM t"), std::optional<std::string>("0"));
    EXPECT_THROW(c.exec("SELECT * FROM tmp"), my::Error);
    EXPECT_EQ(c.query_value("SELECT @@character_set_client"), std::optional<std::string>("utf8mb4"));
    EXPECT_EQ(c.query_value("SELECT @@SESSION.sql_mode"), std::optional<std::string>("ANSI_QUOTES")); // init_sql again
}

TEST_F(MysqlConnection, reset_without_reset_connection_only_rolls_back) {
    my::FactoryOptions o;
    o.reset_connection = false;
    auto f = factory(o);
    auto c = f.create();
    c.exec("CREATE TABLE t (id INT) ENGINE=InnoDB; SET @v = 1; START TRANSACTION; INSERT INTO t VALUES (1)");
    ASSERT_TRUE(f.reset(c));
    EXPECT_FALSE(c.in_transaction());
    EXPECT_EQ(c.query_value("SELECT COUNT(*) FROM t"), std::optional<std::string>("0"));
    EXPECT_EQ(c.query_value("SELECT @v"), std::optional<std::string>("1"));
}

TEST_F(MysqlConnection, reset_retires_a_connection_left_with_unread_results_and_cleans_an_abandoned_stream) {
    auto f = factory();
    // A multi-statement whose second result nobody read.
    auto multi = f.create();
    ASSERT_EQ(mysql_query(multi.handle(), "SELECT 10; SELECT 11"), 0);
    mysql_free_result(mysql_store_result(multi.handle()));
    EXPECT_FALSE(f.reset(multi));
    // A statement sent without reading its reply (the reply is on the socket by now).
    auto sent = f.create();
    ASSERT_EQ(mysql_send_query(sent.handle(), "SELECT 5", 8), 0);
    std::this_thread::sleep_for(100ms);
    EXPECT_FALSE(f.reset(sent));
    // A streamed result freed half-way: mysql_free_result reads out the rest, so it is reusable.
    auto stream = f.create();
    ASSERT_EQ(mysql_query(stream.handle(), "SELECT * FROM seq_1_to_100000"), 0);
    MYSQL_RES* result = mysql_use_result(stream.handle());
    ASSERT_NE(result, nullptr);
    ASSERT_NE(mysql_fetch_row(result), nullptr);
    mysql_free_result(result);
    EXPECT_TRUE(f.reset(stream));
    EXPECT_EQ(stream.query_value("SELECT 3"), std::optional<std::string>("3"));
}

TEST_F(MysqlConnection, a_failed_reset_sql_retires_the_connection) {
    my::FactoryOptions o;
    o.reset_sql = "SELECT * FROM no_such_table";
    auto f = factory(o);
    MysqlPool pool(f, mysql_pool_options(1));
    { auto lease = pool.acquire(); }
    const auto s = pool.stats();
    EXPECT_EQ(s.open, 0U);
    EXPECT_EQ(s.destroyed, 1U);
}

} // namespace

namespace {

/// What a statement run under a CancelOnStop did.
struct Cancelled {
    std::optional<my::Error> error;           // what it threw, if anything
    bool fired = false;                       // the guard sent the KILL
    bool shut_down = false;                   // no KILL could be sent: the socket was shut down
    std::chrono::steady_clock::duration took{}; // how long the statement ran
};

/// Runs `sql` on `c` under a CancelOnStop watching `stop`.
Cancelled run_cancelled(const my::Factory& f, my::Connection& c, const std::string& sql, std::stop_source& stop) {
    Cancelled out;
    const auto start = std::chrono::steady_clock::now();
    try {
        my::CancelOnStop guard{f, c, stop.get_token()};
        try {
            c.exec(sql);
        } catch (...) {
            out.fired = guard.fired();
            out.shut_down = guard.killed_by_shutdown();
            throw;
        }
        out.fired = guard.fired();
        out.shut_down = guard.killed_by_shutdown();
    } catch (const my::Error& e) {
        out.error = e;
    }
    out.took = std::chrono::steady_clock::now() - start;
    return out;
}

TEST_F(MysqlConnection, a_stop_kills_a_long_select_sleep_within_a_second_and_the_connection_stays_usable) {
    auto f = factory();
    auto c = f.create();
    // SELECT SLEEP fails with ER_QUERY_INTERRUPTED; DO SLEEP ends early without an error (DO
    // drops the result), which is why the guard says whether it fired.
    for (const std::string sql : {"SELECT SLEEP(30)", "DO SLEEP(30)"}) {
        SCOPED_TRACE(sql);
        std::stop_source stop;
        std::jthread stopper([&] {
            std::this_thread::sleep_for(300ms);
            stop.request_stop();
        });
        const Cancelled r = run_cancelled(f, c, sql, stop);
        EXPECT_TRUE(r.fired);
        if (sql.starts_with("SELECT")) {
            ASSERT_TRUE(r.error.has_value()) << "the statement was not interrupted";
            EXPECT_EQ(r.error->code(), my::errc::query_interrupted) << r.error->what();
        } else {
            EXPECT_FALSE(r.error.has_value()) << r.error->what();
        }
        EXPECT_LT(r.took, 300ms + 1s);
        EXPECT_EQ(c.query_value("SELECT 5"), std::optional<std::string>("5"));
        EXPECT_TRUE(f.validate(c));
        EXPECT_TRUE(f.reset(c));
    }
}

TEST_F(MysqlConnection, a_stop_from_a_job_cancel_kills_the_statement_and_the_job_ends_cancelled_keeping_its_connection) {
    auto f = factory();
    MysqlPool pool(f, mysql_pool_options(1));
    connpool::testing::MysqlRunner runner(pool);
    std::atomic<unsigned int> code{0};
    connpool::Job<my::Connection> job{"sleeper", connpool::JobKind::backup, [&](my::Connection& c, connpool::ProgressReporter& r) {
                                          try {
                                              my::CancelOnStop guard{f, c, r};
                                              c.exec("SELECT SLEEP(30)");
                                          } catch (const my::Error& e) {
                                              code = e.code();
                                              if (!r.stop_requested()) throw;
                                              return; // cancelled: the connection is idle and usable
                                          }
                                      }};
    const auto start = std::chrono::steady_clock::now();
    auto h = runner.submit(job);
    std::this_thread::sleep_for(300ms);
    h.cancel();
    EXPECT_EQ(h.wait(), connpool::JobState::cancelled) << h.error();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 300ms + 1s);
    EXPECT_EQ(code.load(), my::errc::query_interrupted);
    EXPECT_EQ(pool.stats().discarded, 0U);
    auto lease = pool.acquire();
    EXPECT_EQ(lease->query_value("SELECT 9"), std::optional<std::string>("9"));
    EXPECT_EQ(pool.stats().created, 1U); // the same connection
}

TEST_F(MysqlConnection, a_kill_racing_the_statements_end_never_reaches_the_next_statement) {
    auto f = factory();
    auto c = f.create();
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> delay_us(0, 8000);
    int interrupted = 0;
    int fired_after_end = 0;
    int shut_down = 0;
    for (int i = 0; i < 150; ++i) {
        std::stop_source stop;
        const auto delay = std::chrono::microseconds(delay_us(rng));
        std::jthread stopper([&] {
            std::this_thread::sleep_for(delay);
            stop.request_stop();
        });
        const Cancelled r = run_cancelled(f, c, "SELECT SLEEP(0.004)", stop);
        stopper.join(); // the stop may come after the guard is gone: then no KILL at all
        if (r.shut_down) {
            // The KILL's own connection took longer than kill_timeout (a loaded machine): the
            // documented fallback. The connection is dead, noticed as such, and replaced.
            ASSERT_TRUE(r.error.has_value());
            EXPECT_EQ(r.error->code(), my::errc::server_lost) << r.error->what();
            EXPECT_FALSE(f.validate(c));
            c = f.create();
            ++shut_down;
            continue;
        }
        if (r.error) {
            ASSERT_EQ(r.error->code(), my::errc::query_interrupted) << r.error->what();
            ++interrupted;
        } else if (r.fired) {
            ++fired_after_end; // the statement had ended; the KILL hit an idle session
        }
        // Whatever the KILL hit, the next statements run to their end.
        ASSERT_EQ(c.query_value("SELECT SLEEP(0.001) + 1"), std::optional<std::string>("1")) << "iteration " << i;
        ASSERT_EQ(c.query_value("SELECT 2"), std::optional<std::string>("2")) << "iteration " << i;
    }
    std::printf("kill race: %d interrupted, %d fired after the statement ended, %d shut down, %d not fired\n", interrupted,
                fired_after_end, shut_down, 150 - interrupted - fired_after_end - shut_down);
}

TEST_F(MysqlConnection, when_no_kill_can_be_sent_the_socket_is_shut_down_and_the_connection_is_retired) {
    // A user allowed one connection: the guard's KILL connection is refused.
    auto root = server().root();
    root.exec("CREATE USER 'one_conn'@'%' IDENTIFIED BY 'one-Pa55' WITH MAX_USER_CONNECTIONS 1");
    root.exec("GRANT ALL PRIVILEGES ON " + my::quote_identifier(db_) + ".* TO 'one_conn'@'%'");
    auto options = server().tcp(db_);
    options.user = "one_conn";
    options.password = "one-Pa55";
    const my::Factory f(options);
    {
        auto c = f.create();
        const unsigned long id = c.thread_id();
        std::stop_source stop;
        std::jthread stopper([&] {
            std::this_thread::sleep_for(300ms);
            stop.request_stop();
        });
        const auto start = std::chrono::steady_clock::now();
        std::string guard_error;
        bool shut_down = false;
        try {
            my::CancelOnStop guard{f, c, stop.get_token()};
            try {
                c.exec("SELECT SLEEP(30)");
            } catch (...) {
                guard_error = guard.error();
                shut_down = guard.killed_by_shutdown();
                throw;
            }
            ADD_FAILURE() << "the statement ran to its end";
        } catch (const my::Error& e) {
            EXPECT_EQ(e.code(), my::errc::server_lost) << e.what();
        }
        EXPECT_LT(std::chrono::steady_clock::now() - start, 300ms + 1s);
        EXPECT_TRUE(shut_down);
        EXPECT_NE(guard_error.find("max_user_connections"), std::string::npos) << guard_error;
        EXPECT_EQ(guard_error.find("one-Pa55"), std::string::npos) << guard_error;
        EXPECT_FALSE(f.validate(c));
        EXPECT_FALSE(f.reset(c));
        root.exec("KILL " + std::to_string(id)); // its SLEEP still runs on the server
    }
    root.exec("DROP USER 'one_conn'@'%'");
}

TEST_F(MysqlConnection, validate_notices_a_session_killed_while_idle_and_the_pool_never_hands_it_out) {
    auto f = factory();
    auto victim = f.create();
    EXPECT_TRUE(f.validate(victim));
    direct().exec("KILL CONNECTION " + std::to_string(victim.thread_id()));
    EXPECT_FALSE(f.validate(victim));

    auto options = mysql_pool_options(1);
    options.validate_after_idle = 0ms;
    MysqlPool pool(f, options);
    unsigned long first = 0;
    {
        auto lease = pool.acquire();
        first = lease->thread_id();
    }
    direct().exec("KILL CONNECTION " + std::to_string(first));
    auto lease = pool.acquire();
    EXPECT_NE(lease->thread_id(), first);
    EXPECT_EQ(lease->query_value("SELECT 1"), std::optional<std::string>("1"));
    EXPECT_EQ(pool.stats().validation_failures, 1U);
}

TEST_F(MysqlConnection, connections_the_server_closed_after_wait_timeout_are_never_handed_out) {
    my::FactoryOptions o;
    o.init_sql = "SET SESSION wait_timeout = 1"; // run again by every reset, so it stays 1 s
    auto options = mysql_pool_options(2);        // validate_after_idle: the default 500 ms
    MysqlPool pool(factory(o), options);
    unsigned long first = 0;
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        first = a->thread_id();
        EXPECT_EQ(a->query_value("SELECT @@SESSION.wait_timeout"), std::optional<std::string>("1"));
    }
    std::this_thread::sleep_for(2500ms);
    for (int i = 0; i < 2; ++i) {
        auto lease = pool.acquire();
        EXPECT_NE(lease->thread_id(), first);
        EXPECT_EQ(lease->query_value("SELECT 1"), std::optional<std::string>("1"));
        EXPECT_EQ(lease->query_value("SELECT @@SESSION.wait_timeout"), std::optional<std::string>("1"));
    }
    EXPECT_EQ(pool.stats().validation_failures, 2U);
}

/// Returns the message of the AcquireTimeout that acquiring from `pool` must end in.
std::string acquire_timeout_message(MysqlPool& pool) {
    try {
        (void)pool.acquire();
        ADD_FAILURE() << "acquired";
    } catch (const connpool::AcquireTimeout& e) {
        return e.what();
    }
    return "";
}

TEST_F(MysqlConnection, the_password_never_appears_in_errors_events_or_what) {
    const std::string secret = MariadbServer::password;
    // Where the client or server would echo a value, put the password there: as the database
    // ("Unknown database '...'"), the user ("Access denied for user '...'"), the host.
    std::vector<my::ConnectOptions> cases;
    auto wrong_db = server().tcp(secret);
    cases.push_back(wrong_db);
    auto wrong_user = server().tcp(db_);
    wrong_user.user = secret;
    cases.push_back(wrong_user);
    auto wrong_password = server().tcp(db_);
    wrong_password.password = secret + "-wrong";
    cases.push_back(wrong_password);
    auto bad_host = server().tcp(db_);
    bad_host.host = secret + ".invalid";
    cases.push_back(bad_host);
    auto bad_socket = server().unix_socket(db_);
    bad_socket.unix_socket = "/nonexistent/" + secret + ".sock";
    cases.push_back(bad_socket);
    for (auto& c : cases) {
        if (c.user != secret && c.password.find(secret) == std::string::npos) c.password = secret;
        my::FactoryOptions o;
        o.connect_timeout = 2s;
        std::string message;
        unsigned int code = 0;
        try {
            (void)my::Factory(c, o).create();
            ADD_FAILURE() << "connected?";
        } catch (const my::Error& e) {
            message = e.what();
            code = e.code();
        }
        EXPECT_FALSE(message.empty());
        EXPECT_NE(code, 0U) << message;
        EXPECT_EQ(message.find(secret), std::string::npos) << message;
        EXPECT_EQ(message.find("s3cr3t"), std::string::npos) << message;
        std::printf("connect error: %s\n", message.c_str());
    }
    // Through a pool: the create_failed events and the AcquireTimeout.
    std::mutex mu;
    std::vector<std::string> details;
    auto options = mysql_pool_options(1);
    options.acquire_timeout = 800ms;
    options.on_event = [&](const connpool::PoolEvent& e) {
        std::lock_guard lock(mu);
        details.emplace_back(e.detail);
    };
    MysqlPool pool(my::Factory(wrong_db), options);
    const std::string message = acquire_timeout_message(pool);
    EXPECT_NE(message.find("Unknown database"), std::string::npos) << message;
    EXPECT_EQ(message.find(secret), std::string::npos) << message;
    std::lock_guard lock(mu);
    EXPECT_FALSE(details.empty());
    for (const auto& d : details) EXPECT_EQ(d.find(secret), std::string::npos) << d;
}

TEST_F(MysqlConnection, a_server_down_at_start_gives_an_acquire_timeout_with_the_clients_reason_and_later_serves) {
    auto options = mysql_pool_options(2);
    options.acquire_timeout = 1500ms;
    {
        auto nowhere = server().tcp(db_);
        nowhere.port = static_cast<unsigned int>(connpool::testing::free_loopback_port());
        MysqlPool pool(my::Factory(nowhere), options);
        const std::string message = acquire_timeout_message(pool);
        EXPECT_NE(message.find("Can't connect to server on '127.0.0.1'"), std::string::npos) << message;
        EXPECT_NE(message.find("error 2002"), std::string::npos) << message;
        EXPECT_EQ(message.find(MariadbServer::password), std::string::npos) << message;
    }
    // The test server itself stopped: the same, and once it is back the same pool serves.
    MysqlPool pool(factory(), options);
    server().stop();
    const std::string message = acquire_timeout_message(pool);
    EXPECT_NE(message.find("Can't connect"), std::string::npos) << message;
    EXPECT_EQ(message.find(MariadbServer::password), std::string::npos) << message;
    std::printf("server down: %s\n", message.c_str());
    ASSERT_TRUE(server().start()) << server().log_tail();
    auto lease = pool.acquire_for(10s); // the pool retries creation with back-off (at most 1 s apart)
    EXPECT_EQ(lease->query_value("SELECT 1"), std::optional<std::string>("1"));
    EXPECT_GE(pool.stats().create_failures, 1U);
}

TEST_F(MysqlConnection, after_a_server_restart_dead_connections_are_replaced_and_work_goes_on) {
    auto options = mysql_pool_options(2);
    options.validate_after_idle = 0ms;
    MysqlPool pool(factory(), options);
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        EXPECT_EQ(a->query_value("SELECT 1"), std::optional<std::string>("1"));
        EXPECT_EQ(b->query_value("SELECT 1"), std::optional<std::string>("1"));
    }
    auto held = pool.acquire(); // leased across the restart: its next statement fails
    ASSERT_TRUE(server().restart()) << server().log_tail();
    try {
        held->exec("SELECT 1");
        ADD_FAILURE() << "a statement on a connection from before the restart worked";
    } catch (const my::Error& e) {
        EXPECT_TRUE(e.code() == my::errc::server_gone || e.code() == my::errc::server_lost) << e.what();
    }
    held.release(); // returned, not discarded: reset() must refuse it
    auto a = pool.acquire();
    auto b = pool.acquire();
    EXPECT_EQ(a->query_value("SELECT 1"), std::optional<std::string>("1"));
    EXPECT_EQ(b->query_value("SELECT 1"), std::optional<std::string>("1"));
    EXPECT_GE(pool.stats().validation_failures, 1U);
    EXPECT_EQ(pool.stats().created, 4U);
}

} // namespace
