#pragma once

// What the MySQL tests share: a fixture that requires the binary's MariaDB server
// (mariadb_server.hpp) and gives each test its own database (dropped afterwards), pool options
// that only guard against deadlocks, and direct connections for looking at the server without
// going through the pool.

#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/mysql.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>

#include <unistd.h>

#include "mariadb_server.hpp"

namespace connpool::testing {

using MysqlPool = connpool::Pool<connpool::mysql::Connection, connpool::mysql::Factory>;
using MysqlRunner = connpool::JobRunner<MysqlPool>;

/// Pool options for the MySQL tests: no maintenance thread, a generous acquire timeout that only
/// guards against deadlocks.
inline connpool::PoolOptions mysql_pool_options(std::size_t max_size) {
    connpool::PoolOptions o;
    o.max_size = max_size;
    o.acquire_timeout = std::chrono::seconds{60};
    o.maintenance_interval = std::chrono::milliseconds{0};
    return o;
}

/// A fixture with a fresh database per test: `db_` is its name, factory() makes connections to it
/// as the password-authenticated test user over TCP.
class MysqlTest : public ::testing::Test {
protected:
    void SetUp() override {
        CONNPOOL_REQUIRE_MARIADB_SERVER();
        static std::atomic<int> counter{0};
        db_ = "t" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
        server().root().exec("CREATE DATABASE " + db_ + " CHARACTER SET utf8mb4");
    }

    void TearDown() override {
        if (!db_.empty() && server().error().empty()) {
            try {
                server().root().exec("DROP DATABASE IF EXISTS " + db_);
            } catch (const std::exception&) {
                // a fault test may have left the server down: its own assertions say so
            }
        }
    }

    static MariadbServer& server() { return MariadbServer::instance(); }

    /// A factory for this test's database over TCP with the password.
    [[nodiscard]] connpool::mysql::Factory factory(connpool::mysql::FactoryOptions options = {}) const {
        return connpool::mysql::Factory(server().tcp(db_), std::move(options));
    }

    /// A connection made directly (no pool), for setting up and checking.
    [[nodiscard]] connpool::mysql::Connection direct() const { return factory().create(); }

    std::string db_;
};

} // namespace connpool::testing
