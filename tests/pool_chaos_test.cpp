// Chaos: many threads do everything at once (acquire with and without deadlines and stop
// tokens, try_acquire, discard, resize, pause/resume, retire_all, maintain, close), with a
// factory that fails and dawdles. Run under ThreadSanitizer in CI. At the end every create is
// matched by exactly one destroy, no connection was ever held by two threads, and the stats
// agree with each other.
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <stop_token>
#include <thread>
#include <vector>

#include "counting_connection.hpp"

using namespace std::chrono_literals;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;
using FakePool = connpool::Pool<FakeConnection, FakeFactory>;

namespace {

// Uses a lease as a client would, checking that nobody else holds the same connection.
bool use(connpool::Lease<FakeConnection>& lease, std::atomic<std::uint64_t>& shared) {
    const bool exclusive = lease->enter() == 0;
    lease->uses++; // a plain write: ThreadSanitizer flags two holders at once
    lease->leave();
    if (!exclusive) shared.fetch_add(1);
    return exclusive;
}

} // namespace

TEST(PoolChaos, everything_at_once_balances_the_books) {
    FakeFactory f;
    f.fail_every->store(17); // every 17th create() throws
    f.create_delay = 50us;
    connpool::PoolOptions o;
    o.max_size = 4;
    o.min_idle = 1;
    o.acquire_timeout = 2s;
    o.max_concurrent_creates = 2;
    o.create_retry_initial = 1ms;
    o.create_retry_max = 4ms;
    o.validate_after_idle = 0ms;
    o.idle_timeout = 50ms;
    o.max_lifetime = 200ms;
    o.leak_threshold = 100ms;
    o.maintenance_interval = 5ms;
    std::atomic<std::uint64_t> shared{0};
    std::atomic<std::uint64_t> served{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<bool> stop{false};
    {
        FakePool pool{f, o};
        std::vector<std::thread> users;
        for (int t = 0; t < 10; ++t) {
            users.emplace_back([&, t] {
                std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1u);
                std::uniform_int_distribution<int> pick(0, 99);
                while (!stop.load(std::memory_order_relaxed)) {
                    try {
                        std::optional<connpool::Lease<FakeConnection>> lease;
                        const int op = pick(rng);
                        if (op < 40) {
                            lease.emplace(pool.acquire_for(std::chrono::milliseconds(pick(rng) % 20)));
                        } else if (op < 60) {
                            std::stop_source source;
                            std::thread canceller([&source, delay = pick(rng) % 3] {
                                std::this_thread::sleep_for(std::chrono::milliseconds(delay));
                                source.request_stop();
                            });
                            try {
                                lease.emplace(pool.acquire_for(50ms, source.get_token()));
                            } catch (...) {
                                canceller.join();
                                throw;
                            }
                            canceller.join();
                        } else if (op < 80) {
                            lease = pool.try_acquire();
                        } else {
                            lease.emplace(pool.acquire());
                        }
                        if (lease && *lease) {
                            served.fetch_add(1, std::memory_order_relaxed);
                            use(*lease, shared);
                            if (pick(rng) < 5) std::this_thread::sleep_for(100us);
                            if (pick(rng) < 3) lease->discard();
                        }
                    } catch (const connpool::Error&) {
                        failed.fetch_add(1, std::memory_order_relaxed); // timeouts, cancels, closed
                    }
                }
            });
        }
        std::thread controller([&] {
            std::mt19937 rng(4242);
            std::uniform_int_distribution<int> pick(0, 99);
            const auto until = std::chrono::steady_clock::now() + 1500ms;
            while (std::chrono::steady_clock::now() < until) {
                const int op = pick(rng);
                if (op < 30) {
                    pool.resize(1 + static_cast<std::size_t>(pick(rng) % 8));
                } else if (op < 50) {
                    pool.pause();
                    std::this_thread::sleep_for(std::chrono::microseconds(pick(rng) * 10));
                    pool.resume();
                } else if (op < 65) {
                    pool.retire_all();
                } else {
                    pool.maintain();
                }
                std::this_thread::sleep_for(std::chrono::microseconds(200 + pick(rng) * 20));
            }
            pool.resume();
            pool.resize(4);
        });
        controller.join();
        stop.store(true);
        for (auto& t : users) t.join();
        // Quiescent now (the maintenance thread aside): the books must balance.
        pool.maintain();
        const auto s = pool.stats();
        EXPECT_EQ(s.in_use, 0u);
        EXPECT_EQ(s.waiting, 0u);
        EXPECT_LE(s.open, s.max_size);
        EXPECT_GT(served.load(), 100u) << "the chaos mostly failed instead of serving";
        std::thread a([&] { pool.close(); });
        std::thread b([&] { pool.close(); });
        a.join();
        b.join();
        const auto closed = pool.stats();
        EXPECT_EQ(closed.open, 0u);
        EXPECT_EQ(closed.created, closed.destroyed);
    }
    EXPECT_EQ(shared.load(), 0u) << "a connection was held by two threads";
    EXPECT_EQ(f.registry->created.load(), f.registry->destroyed.load());
    EXPECT_EQ(f.registry->double_destroys.load(), 0u);
    EXPECT_EQ(f.registry->alive_count(), 0u);
}
