// The PostgreSQL test server and the adapter's Connection and Factory, against a real server:
// SCRAM login, parameterised queries, validate() noticing sessions the server ended, reset()
// rolling back what a lease left open, and passwords kept out of every message.

#include <connpool/pool.hpp>
#include <connpool/postgres.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>

#include "pg_fixtures.hpp"

namespace {

using namespace std::chrono_literals;
using connpool::postgres::Connection;
using connpool::postgres::Factory;
using connpool::postgres::FactoryOptions;
using connpool::testing::PgServer;
using connpool::testing::PgTest;
using connpool::testing::PgPool;
using connpool::testing::pg_pool_options;

class PostgresConnection : public PgTest {};

TEST_F(PostgresConnection, the_test_server_takes_scram_logins_over_tcp_and_refuses_a_wrong_password) {
    Connection c = direct();
    EXPECT_EQ(c.query_value("SELECT current_setting('server_version_num')::int / 10000"), "15");
    EXPECT_EQ(c.query_value("SELECT current_setting('fsync')"), "off");
    EXPECT_EQ(c.query_value("SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' LIMIT 1"),
              "scram-sha-256");
    EXPECT_EQ(c.query_value("SELECT inet_server_addr()::text"), "127.0.0.1/32");
    std::string conninfo = server().conninfo(db_);
    conninfo.replace(conninfo.find(PgServer::password), std::string(PgServer::password).size(), "wrong-one");
    EXPECT_THROW((void)Factory(conninfo).create(), connpool::postgres::Error);
}

TEST_F(PostgresConnection, parameterised_queries_take_any_text_and_null_without_quoting) {
    Connection c = direct();
    const std::string hostile = "it's a \"test\"; DROP TABLE x; --\t\n\\";
    const auto r = c.query("SELECT $1::text, $2::text IS NULL, length($1)", {hostile, std::nullopt});
    ASSERT_EQ(r.rows(), 1);
    EXPECT_EQ(r.get(0, 0), hostile);
    EXPECT_EQ(r.get(0, 1), "t");
    EXPECT_TRUE(c.query("SELECT NULL::int", {}).is_null(0, 0));
    EXPECT_EQ(c.exec("CREATE TABLE t(a int); INSERT INTO t VALUES (1), (2)").affected(), 2u);
}

TEST_F(PostgresConnection, errors_carry_the_servers_message_and_sqlstate) {
    Connection c = direct();
    try {
        c.exec("SELECT * FROM no_such_table");
        FAIL() << "no error";
    } catch (const connpool::postgres::Error& e) {
        EXPECT_EQ(e.sqlstate(), "42P01");
        EXPECT_NE(std::string(e.what()).find("no_such_table"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(db_), std::string::npos) << e.what();
    }
}

TEST_F(PostgresConnection, sessions_carry_the_application_name) {
    FactoryOptions o;
    o.application_name = "connpool-test-app";
    Connection c = factory(o).create();
    EXPECT_EQ(c.query_value("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"),
              "connpool-test-app");
}

TEST_F(PostgresConnection, validate_notices_a_session_the_server_terminated_while_idle) {
    for (const bool ping : {true, false}) {
        FactoryOptions o;
        o.ping = ping;
        const Factory f = factory(o);
        Connection victim = f.create();
        EXPECT_TRUE(f.validate(victim));
        const std::string pid = *victim.query_value("SELECT pg_backend_pid()");
        Connection killer = f.create();
        EXPECT_EQ(killer.query_value("SELECT pg_terminate_backend($1::int, 5000)", {pid}), "t");
        // The backend is gone; PQstatus alone still says OK until someone reads the socket.
        EXPECT_EQ(PQstatus(victim.handle()), CONNECTION_OK);
        EXPECT_FALSE(f.validate(victim)) << "ping=" << ping;
    }
}

TEST_F(PostgresConnection, a_pool_never_hands_out_a_connection_terminated_while_idle) {
    auto options = pg_pool_options(1);
    options.validate_after_idle = 0ms;
    PgPool pool(factory(), options);
    std::string first_pid;
    {
        auto lease = pool.acquire();
        first_pid = *lease->query_value("SELECT pg_backend_pid()");
    }
    Connection killer = direct();
    ASSERT_EQ(killer.query_value("SELECT pg_terminate_backend($1::int, 5000)", {first_pid}), "t");
    auto lease = pool.acquire();
    const auto pid = lease->query_value("SELECT pg_backend_pid()");
    EXPECT_NE(pid, first_pid);
    EXPECT_EQ(pool.stats().validation_failures, 1u);
}

TEST_F(PostgresConnection, reset_rolls_back_an_open_or_failed_transaction_then_runs_the_reset_sql) {
    FactoryOptions o;
    o.reset_sql = "RESET ALL";
    const Factory f = factory(o);
    Connection c = f.create();
    c.exec("CREATE TABLE t(a int)");
    c.exec("BEGIN; INSERT INTO t VALUES (1); SET work_mem = '7MB'");
    EXPECT_TRUE(c.in_transaction());
    ASSERT_TRUE(f.reset(c));
    EXPECT_FALSE(c.in_transaction());
    c.exec("SET work_mem = '7MB'");
    c.exec("BEGIN");
    EXPECT_THROW(c.exec("SELECT 1/0"), connpool::postgres::Error);
    EXPECT_EQ(PQtransactionStatus(c.handle()), PQTRANS_INERROR);
    ASSERT_TRUE(f.reset(c));
    EXPECT_EQ(c.query_value("SELECT count(*) FROM t"), "0");
    EXPECT_EQ(c.query_value("SHOW work_mem"), "4MB"); // RESET ALL ran
}

TEST_F(PostgresConnection, reset_refuses_a_connection_with_a_query_in_flight) {
    const Factory f = factory();
    Connection c = f.create();
    ASSERT_EQ(PQsendQuery(c.handle(), "SELECT pg_sleep(0.2)"), 1);
    EXPECT_FALSE(f.reset(c));
}

TEST_F(PostgresConnection, the_password_never_appears_in_a_connection_error) {
    const std::string secret = PgServer::password;
    // Wrong database, closed port, unparsable string, URI form: none may echo the password.
    const std::string port = std::to_string(server().port());
    for (const std::string& conninfo :
         {server().conninfo("no_such_db"),
          "host=127.0.0.1 port=1 user=connpool password=" + secret + " dbname=x",
          "host=127.0.0.1 password=" + secret + " dbname",
          "host=127.0.0.1 password='" + secret + " dbname=x",
          "postgresql://connpool:" + secret + "@127.0.0.1:" + port + "/no_such_db",
          "postgresql://connpool:" + secret + "@127.0.0.1:" + port + "/x?bogus_option=" + secret}) {
        std::string message;
        try {
            FactoryOptions o;
            o.connect_timeout = std::chrono::seconds{2};
            (void)Factory(conninfo, o).create();
            ADD_FAILURE() << "connected?";
        } catch (const std::exception& e) {
            message = e.what();
        }
        EXPECT_FALSE(message.empty());
        EXPECT_EQ(message.find(secret), std::string::npos) << message;
        EXPECT_EQ(message.find("s3cr3t"), std::string::npos) << message;
    }
}

/// Returns the message of the AcquireTimeout that acquiring from `pool` must end in ("" and a
/// failure when it acquires).
std::string acquire_timeout_message(PgPool& pool) {
    try {
        (void)pool.acquire();
        ADD_FAILURE() << "acquired";
    } catch (const connpool::AcquireTimeout& e) {
        return e.what();
    }
    return "";
}

TEST_F(PostgresConnection, an_acquire_timeout_says_why_connecting_fails_without_the_password) {
    auto options = pg_pool_options(1);
    options.acquire_timeout = 1500ms;
    PgPool pool(Factory(server().conninfo("no_such_db")), options);
    const std::string message = acquire_timeout_message(pool);
    EXPECT_NE(message.find("no_such_db"), std::string::npos) << message;
    EXPECT_EQ(message.find(PgServer::password), std::string::npos) << message;
}

TEST_F(PostgresConnection, a_server_that_is_down_at_start_gives_an_acquire_timeout_with_libpqs_reason_and_later_serves) {
    auto options = pg_pool_options(2);
    options.acquire_timeout = 1500ms;
    // Nothing listens on the port: the timeout carries libpq's "Connection refused".
    {
        const std::string conninfo = "host=127.0.0.1 port=" + std::to_string(connpool::testing::free_loopback_port()) +
                                     " user=connpool password=" + std::string(PgServer::password) + " dbname=x";
        PgPool pool(Factory(conninfo), options);
        const std::string message = acquire_timeout_message(pool);
        EXPECT_NE(message.find("Connection refused"), std::string::npos) << message;
        EXPECT_NE(message.find("127.0.0.1"), std::string::npos) << message;
        EXPECT_EQ(message.find(PgServer::password), std::string::npos) << message;
    }
    // The test server itself stopped: the same, and once it is back the same pool serves.
    PgPool pool(factory(), options);
    server().stop();
    const std::string message = acquire_timeout_message(pool);
    EXPECT_NE(message.find("Connection refused"), std::string::npos) << message;
    EXPECT_EQ(message.find(PgServer::password), std::string::npos) << message;
    std::printf("server down: %s\n", message.c_str());
    ASSERT_TRUE(server().start()) << server().log();
    auto lease = pool.acquire_for(10s); // the pool retries creation with back-off (at most 1 s apart)
    EXPECT_EQ(lease->query_value("SELECT 1"), "1");
    EXPECT_GE(pool.stats().create_failures, 1u);
}

TEST_F(PostgresConnection, after_a_server_restart_dead_connections_are_replaced_and_work_goes_on) {
    auto options = pg_pool_options(2);
    options.validate_after_idle = 0ms;
    PgPool pool(factory(), options);
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        EXPECT_EQ(a->query_value("SELECT 1"), "1");
        EXPECT_EQ(b->query_value("SELECT 1"), "1");
    }
    auto held = pool.acquire(); // leased across the restart: its next statement fails
    ASSERT_TRUE(server().restart()) << server().log();
    EXPECT_THROW(held->exec("SELECT 1"), connpool::postgres::Error);
    held.discard();
    // The idle one is found dead by validate() and replaced; both leases work.
    auto a = pool.acquire();
    auto b = pool.acquire();
    EXPECT_EQ(a->query_value("SELECT 1"), "1");
    EXPECT_EQ(b->query_value("SELECT 1"), "1");
    EXPECT_GE(pool.stats().validation_failures, 1u);
}

} // namespace
