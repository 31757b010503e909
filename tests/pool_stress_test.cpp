// 16 threads hammer a pool of 4 with ~1 % discards and ~1 % create failures, checking after
// every acquire that nobody else holds the same connection, and at the end that the books
// balance. Runs under ThreadSanitizer in CI.
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "counting_connection.hpp"

using namespace std::chrono_literals;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;

namespace {
long scaled(long n) {
    const char* s = std::getenv("CONNPOOL_STRESS_SCALE");
    const double k = s != nullptr ? std::atof(s) : 1.0;
    return static_cast<long>(static_cast<double>(n) * (k > 0 ? k : 1.0));
}
} // namespace

TEST(PoolStress, SixteenThreadsOnFourConnectionsNeverShareAndBalanceTheBooks) {
    FakeFactory f;
    f.fail_every->store(100); // ~1 % of create() calls throw
    const long cycles_per_thread = scaled(20'000); // 320k cycles in all
    std::atomic<long> violations{0};
    std::atomic<long> timeouts{0};
    std::atomic<long> discards{0};
    {
        connpool::PoolOptions o;
        o.max_size = 4;
        o.acquire_timeout = 10s;
        o.create_retry_initial = 1ms;
        o.create_retry_max = 2ms;
        o.validate_after_idle = 1ms;
        connpool::Pool<FakeConnection, FakeFactory> pool{f, o};
        std::vector<std::thread> threads;
        for (int t = 0; t < 16; ++t) {
            threads.emplace_back([&, t] {
                std::minstd_rand rng(static_cast<unsigned>(t) + 1);
                for (long i = 0; i < cycles_per_thread; ++i) {
                    try {
                        auto lease = pool.acquire();
                        if (lease->enter() != 0) violations.fetch_add(1);
                        lease->uses++; // a plain write: TSan flags it if two threads share
                        lease->leave();
                        if (rng() % 100 == 0) {
                            lease.discard();
                            discards.fetch_add(1);
                        }
                    } catch (const connpool::AcquireTimeout&) {
                        timeouts.fetch_add(1);
                    }
                }
            });
        }
        // Invariants that hold at any instant, checked while the threads run.
        for (int i = 0; i < 50; ++i) {
            auto s = pool.stats();
            EXPECT_LE(s.open, 4u);
            EXPECT_LE(s.idle + s.in_use, 4u);
            std::this_thread::sleep_for(1ms);
        }
        for (auto& t : threads) t.join();
        auto s = pool.stats();
        EXPECT_EQ(s.open, s.idle + s.in_use);
        EXPECT_EQ(s.in_use, 0u);
        EXPECT_EQ(s.created - s.destroyed, s.open);
        EXPECT_EQ(s.waiting, 0u);
        EXPECT_EQ(s.discarded, static_cast<std::uint64_t>(discards.load()));
        EXPECT_EQ(s.acquired + s.timeouts, static_cast<std::uint64_t>(16 * cycles_per_thread));
        EXPECT_EQ(s.created, f.registry->created.load());
        EXPECT_GT(s.create_failures, 0u);
        EXPECT_EQ(f.registry->alive_count(), s.open);
    }
    EXPECT_EQ(violations.load(), 0);
    EXPECT_EQ(timeouts.load(), 0);
    EXPECT_EQ(f.registry->created.load(), f.registry->destroyed.load());
    EXPECT_EQ(f.registry->double_destroys.load(), 0u);
    EXPECT_EQ(f.registry->alive_count(), 0u);
}
