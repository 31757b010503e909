// connpool::mysql against a real MariaDB server (tests/support/mariadb_server.hpp): connecting,
// statements and queries, quoting, reset and validate as the pool drives them, faults (server
// down, killed sessions, wait_timeout, a restart) and cancellation with KILL QUERY.

#include <connpool/mysql.hpp>
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
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
            throw;
        }
        out.fired = guard.fired();
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

} // namespace
