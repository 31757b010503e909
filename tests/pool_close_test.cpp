// Closing and destroying a pool while other threads use it.
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include "counting_connection.hpp"

using namespace std::chrono_literals;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;
using FakePool = connpool::Pool<FakeConnection, FakeFactory>;

namespace {
connpool::PoolOptions options(std::size_t n) {
    connpool::PoolOptions o;
    o.max_size = n;
    o.acquire_timeout = 10s;
    return o;
}
} // namespace

TEST(PoolClose, NewAcquiresThrowPoolClosed) {
    FakeFactory f;
    FakePool pool{f, options(2)};
    pool.close();
    EXPECT_TRUE(pool.closed());
    EXPECT_THROW((void)pool.acquire(), connpool::PoolClosed);
    EXPECT_THROW((void)pool.try_acquire(), connpool::PoolClosed);
}

TEST(PoolClose, IsIdempotent) {
    FakeFactory f;
    FakePool pool{f, options(2)};
    { auto l = pool.acquire(); }
    pool.close();
    pool.close();
    EXPECT_EQ(f.registry->destroyed.load(), 1u);
}

TEST(PoolClose, DestroysIdleConnectionsAtOnce) {
    FakeFactory f;
    FakePool pool{f, options(3)};
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        auto c = pool.acquire();
    }
    pool.close();
    EXPECT_EQ(f.registry->alive_count(), 0u);
    EXPECT_EQ(pool.stats().open, 0u);
}

TEST(PoolClose, WakesWaitersWithPoolClosed) {
    FakeFactory f;
    FakePool pool{f, options(1)};
    auto held = pool.acquire();
    std::atomic<int> closed_seen{0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < 4; ++i) {
        waiters.emplace_back([&] {
            try {
                (void)pool.acquire();
            } catch (const connpool::PoolClosed&) {
                closed_seen.fetch_add(1);
            }
        });
    }
    while (pool.stats().waiting < 4) std::this_thread::sleep_for(1ms);
    pool.close();
    for (auto& t : waiters) t.join();
    EXPECT_EQ(closed_seen.load(), 4);
}

TEST(PoolClose, OutstandingLeasesStayUsableAndAreDestroyedOnReturn) {
    FakeFactory f;
    FakePool pool{f, options(2)};
    auto lease = pool.acquire();
    pool.close();
    EXPECT_EQ(lease->id(), 1u);
    lease->uses++;
    EXPECT_EQ(f.registry->alive_count(), 1u);
    lease.release();
    EXPECT_EQ(f.registry->alive_count(), 0u);
}

TEST(PoolClose, DestroyingThePoolWithOutstandingLeasesIsSafe) {
    FakeFactory f;
    std::optional<connpool::Lease<FakeConnection>> survivor;
    {
        FakePool pool{f, options(2)};
        survivor = pool.acquire();
        auto idle = pool.acquire();
    }
    EXPECT_EQ(f.registry->alive_count(), 1u);
    EXPECT_EQ((*survivor)->id(), 1u);
    survivor.reset();
    EXPECT_EQ(f.registry->alive_count(), 0u);
    EXPECT_EQ(f.registry->double_destroys.load(), 0u);
}

TEST(PoolClose, DestroyingThePoolWhileOtherThreadsReturnLeasesLosesNothing) {
    for (int round = 0; round < 50; ++round) {
        FakeFactory f;
        std::vector<std::thread> users;
        {
            auto pool = std::make_unique<FakePool>(f, options(4));
            std::vector<connpool::Lease<FakeConnection>> leases;
            for (int i = 0; i < 4; ++i) leases.push_back(pool->acquire());
            for (auto& l : leases) {
                users.emplace_back([l = std::move(l)]() mutable {
                    l->uses++;
                    l.release();
                });
            }
            pool.reset(); // races with the releases above
        }
        for (auto& t : users) t.join();
        ASSERT_EQ(f.registry->alive_count(), 0u) << "round " << round;
        ASSERT_EQ(f.registry->double_destroys.load(), 0u);
        ASSERT_EQ(f.registry->created.load(), f.registry->destroyed.load());
    }
}

TEST(PoolClose, CloseRacingWithAcquireAndReleaseLeavesNothingAlive) {
    for (int round = 0; round < 20; ++round) {
        FakeFactory f;
        {
            FakePool pool{f, options(3)};
            std::atomic<bool> stop{false};
            std::vector<std::thread> users;
            for (int i = 0; i < 6; ++i) {
                users.emplace_back([&] {
                    while (!stop.load()) {
                        try {
                            auto l = pool.acquire_for(50ms);
                            ASSERT_EQ(l->enter(), 0);
                            l->leave();
                        } catch (const connpool::PoolClosed&) {
                            return;
                        } catch (const connpool::AcquireTimeout&) {
                        }
                    }
                });
            }
            std::this_thread::sleep_for(2ms);
            pool.close();
            stop.store(true);
            for (auto& t : users) t.join();
            EXPECT_EQ(pool.stats().open, 0u);
        }
        ASSERT_EQ(f.registry->alive_count(), 0u) << "round " << round;
        ASSERT_EQ(f.registry->double_destroys.load(), 0u);
    }
}

TEST(PoolClose, TryAcquireRacingCloseNeverLeavesAConnectionBehind) {
    // try_acquire pops a queued connection while close() sweeps the slots and drains the
    // queue: whichever wins, nothing may stay open, and nothing may be acquired after close.
    int acquired_after_close = 0;
    for (int round = 0; round < 3000; ++round) {
        FakeFactory f;
        {
            connpool::PoolOptions o;
            o.max_size = 2;
            o.maintenance_interval = 0ms;
            FakePool pool{f, o};
            {
                auto l1 = pool.acquire();
                auto l2 = pool.acquire();
                l1.release(); // parked, in this thread's cache
                l2.release(); // takes the cache; l1's slot moves to the idle queue
            }
            std::atomic<int> ready{0};
            std::atomic<bool> closed{false};
            std::thread racer([&] {
                ready.fetch_add(1);
                while (ready.load() < 2) {
                }
                std::optional<connpool::Lease<FakeConnection>> lease;
                try {
                    lease = pool.try_acquire();
                } catch (const connpool::PoolClosed&) {
                }
                while (!closed.load()) {
                }
                if (lease) {
                    lease.reset(); // given back after close: must be destroyed
                    try {
                        auto again = pool.acquire_for(0ms);
                        ++acquired_after_close;
                    } catch (const connpool::Error&) {
                    }
                }
            });
            ready.fetch_add(1);
            while (ready.load() < 2) {
            }
            pool.close();
            closed.store(true);
            racer.join();
            ASSERT_EQ(pool.stats().open, 0u) << "round " << round;
        }
        ASSERT_EQ(f.registry->alive_count(), 0u) << "round " << round;
    }
    EXPECT_EQ(acquired_after_close, 0);
}
