#pragma once

// What the PostgreSQL tests share: a fixture that requires the binary's server (pg_server.hpp)
// and gives each test its own database (created from template0, dropped afterwards), pool
// options that only guard against deadlocks, and a raw libpq connection for looking at the
// server without going through the pool.

#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>
#include <connpool/postgres.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "pg_server.hpp"

namespace connpool::testing {

using PgPool = connpool::Pool<connpool::postgres::Connection, connpool::postgres::Factory>;
using PgRunner = connpool::JobRunner<PgPool>;

/// Pool options for the PostgreSQL tests: no maintenance thread, a generous acquire timeout that
/// only guards against deadlocks.
inline connpool::PoolOptions pg_pool_options(std::size_t max_size) {
    connpool::PoolOptions o;
    o.max_size = max_size;
    o.acquire_timeout = std::chrono::seconds{60};
    o.maintenance_interval = std::chrono::milliseconds{0};
    return o;
}

/// A fixture with a fresh database per test: `db_` is its name, factory() makes connections to it.
class PgTest : public ::testing::Test {
protected:
    void SetUp() override {
        CONNPOOL_REQUIRE_PG_SERVER();
        static std::atomic<int> counter{0};
        db_ = "t" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
        ASSERT_EQ(server().psql("CREATE DATABASE " + db_ + " TEMPLATE template0 ENCODING 'UTF8'"), 0)
            << server().log();
    }

    void TearDown() override {
        if (!db_.empty() && server().error().empty())
            server().psql("DROP DATABASE IF EXISTS " + db_ + " WITH (FORCE)");
    }

    static PgServer& server() { return PgServer::instance(); }

    /// A factory for this test's database.
    [[nodiscard]] connpool::postgres::Factory factory(connpool::postgres::FactoryOptions options = {}) const {
        return connpool::postgres::Factory(server().conninfo(db_), std::move(options));
    }

    /// A connection made directly (no pool), for setting up and checking.
    [[nodiscard]] connpool::postgres::Connection direct() const { return factory().create(); }

    std::string db_;
};

} // namespace connpool::testing
