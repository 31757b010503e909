// Time-dependent behaviour (idle timeout, max lifetime, leaks, min_idle) under a manual clock:
// the tests move time and run a maintenance pass instead of sleeping.
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <dirent.h>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "counting_connection.hpp"
#include "manual_clock.hpp"

using namespace std::chrono_literals;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;
using connpool::testing::ManualClock;
using ClockedPool = connpool::Pool<FakeConnection, FakeFactory, ManualClock>;

namespace {
connpool::PoolOptions manual(std::size_t n) {
    connpool::PoolOptions o;
    o.max_size = n;
    o.acquire_timeout = 2s;
    o.maintenance_interval = 0ms; // the test calls maintain()
    o.idle_timeout = 0ms;
    o.max_lifetime = 0ms;
    return o;
}

std::size_t thread_count() {
    std::size_t n = 0;
    if (DIR* d = opendir("/proc/self/task")) {
        while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
        closedir(d);
    }
    return n;
}
} // namespace

TEST(PoolMaintenance, IdleTimeoutRetiresIdleConnectionsDownToMinIdle) {
    FakeFactory f;
    auto o = manual(5);
    o.idle_timeout = 10min;
    o.min_idle = 2;
    ClockedPool pool{f, o};
    {
        std::vector<connpool::Lease<FakeConnection>> all;
        for (int i = 0; i < 5; ++i) all.push_back(pool.acquire());
    }
    ManualClock::advance(9min);
    EXPECT_EQ(pool.maintain(), 0u);
    EXPECT_EQ(pool.stats().open, 5u);
    ManualClock::advance(2min);
    EXPECT_EQ(pool.maintain(), 3u);
    auto s = pool.stats();
    EXPECT_EQ(s.open, 2u);
    EXPECT_EQ(s.idle, 2u);
    EXPECT_EQ(f.registry->alive_count(), 2u);
}

TEST(PoolMaintenance, IdleTimeCountsFromTheEndOfALongLeaseSeenByMaintenance) {
    FakeFactory f;
    auto o = manual(2);
    o.idle_timeout = 10min;
    ClockedPool pool{f, o};
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
        ManualClock::advance(30min);
        pool.maintain(); // sees both leases still running
    }
    ManualClock::advance(5min);
    EXPECT_EQ(pool.maintain(), 0u) << "idle for 5 min only, though handed out 35 min ago";
    ManualClock::advance(6min);
    EXPECT_EQ(pool.maintain(), 2u);
}

TEST(PoolMaintenance, IdleTimeoutSparesConnectionsInUse) {
    FakeFactory f;
    auto o = manual(2);
    o.idle_timeout = 1min;
    ClockedPool pool{f, o};
    auto held = pool.acquire();
    ManualClock::advance(5min);
    EXPECT_EQ(pool.maintain(), 0u);
    EXPECT_EQ(held->id(), 1u);
}

TEST(PoolMaintenance, MostRecentlyUsedConnectionsAreReusedSoSurplusOnesAgeOut) {
    FakeFactory f;
    auto o = manual(4);
    o.idle_timeout = 10min;
    ClockedPool pool{f, o};
    {
        std::vector<connpool::Lease<FakeConnection>> burst;
        for (int i = 0; i < 4; ++i) burst.push_back(pool.acquire());
    }
    // Light load afterwards: one connection at a time, every minute, for 15 minutes.
    for (int minute = 0; minute < 15; ++minute) {
        ManualClock::advance(1min);
        (void)pool.acquire();
        pool.maintain();
    }
    EXPECT_EQ(pool.stats().open, 1u) << "the three surplus connections should have aged out";
}

TEST(PoolMaintenance, MaxLifetimeRetiresIdleConnections) {
    FakeFactory f;
    auto o = manual(2);
    o.max_lifetime = 30min;
    ClockedPool pool{f, o};
    { auto l = pool.acquire(); }
    ManualClock::advance(31min);
    EXPECT_EQ(pool.maintain(), 1u);
    EXPECT_EQ(pool.stats().open, 0u);
}

TEST(PoolMaintenance, MaxLifetimeIsCheckedWhenHandedOut) {
    FakeFactory f;
    auto o = manual(1);
    o.max_lifetime = 30min;
    ClockedPool pool{f, o};
    { auto l = pool.acquire(); }
    ManualClock::advance(31min);
    auto l = pool.acquire(); // no maintenance ran: the hand-out itself must refuse the old one
    EXPECT_EQ(l->id(), 2u);
}

TEST(PoolMaintenance, LeaseThatOutlivesMaxLifetimeIsRetiredWhenGivenBack) {
    FakeFactory f;
    auto o = manual(1);
    o.max_lifetime = 30min;
    ClockedPool pool{f, o};
    {
        auto l = pool.acquire();
        ManualClock::advance(31min);
        pool.maintain(); // flags it: releases read no clock
        EXPECT_EQ(l->id(), 1u) << "the lease itself is not disturbed";
    }
    EXPECT_EQ(f.registry->alive_count(), 0u);
    EXPECT_EQ(pool.stats().open, 0u);
}

TEST(PoolMaintenance, MaxLifetimeHasJitterSoConnectionsDoNotAllExpireTogether) {
    FakeFactory f;
    auto o = manual(40);
    o.max_lifetime = 40min; // jitter up to 2.5 % = 1 min
    ClockedPool pool{f, o};
    {
        std::vector<connpool::Lease<FakeConnection>> all;
        for (int i = 0; i < 40; ++i) all.push_back(pool.acquire());
    }
    ManualClock::advance(39min + 30s);
    const auto early = pool.maintain();
    EXPECT_GT(early, 0u) << "some retire before the nominal lifetime";
    EXPECT_LT(early, 40u) << "but not all at once";
    ManualClock::advance(31s);
    pool.maintain();
    EXPECT_EQ(pool.stats().open, 0u) << "none outlives max_lifetime";
}

TEST(PoolMaintenance, LeakIsReportedOnceWithCallSiteAndHoldTime) {
    struct Seen {
        std::mutex m;
        std::vector<connpool::PoolEvent> leaks;
        std::vector<std::string> files;
    };
    auto seen = std::make_shared<Seen>();
    FakeFactory f;
    auto o = manual(2);
    o.leak_threshold = 5s;
    o.on_event = [seen](const connpool::PoolEvent& e) {
        if (e.kind != connpool::PoolEventKind::leak) return;
        std::lock_guard lock(seen->m);
        seen->leaks.push_back(e);
        seen->files.emplace_back(e.site.file);
    };
    ClockedPool pool{f, o};
    auto leaked = pool.acquire(); const auto line = __LINE__;
    ManualClock::advance(4s);
    pool.maintain();
    EXPECT_EQ(pool.stats().leaks, 0u);
    ManualClock::advance(2s);
    pool.maintain();
    pool.maintain();
    ASSERT_EQ(seen->leaks.size(), 1u);
    EXPECT_EQ(pool.stats().leaks, 1u);
    EXPECT_EQ(seen->leaks[0].site.line, line);
    EXPECT_NE(seen->files[0].find("pool_maintenance_test.cpp"), std::string::npos);
    EXPECT_GE(seen->leaks[0].duration, 6s);
    EXPECT_GE(leaked.held_for(), 6s);
}

TEST(PoolMaintenance, MinIdleIsReplenished) {
    FakeFactory f;
    auto o = manual(4);
    o.min_idle = 3;
    ClockedPool pool{f, o};
    pool.maintain();
    auto s = pool.stats();
    EXPECT_EQ(s.idle, 3u);
    EXPECT_EQ(s.open, 3u);
    {
        auto a = pool.acquire();
        a.discard();
    }
    pool.maintain();
    EXPECT_EQ(pool.stats().idle, 3u);
}

TEST(PoolMaintenance, BackgroundThreadTopsUpMinIdle) {
    FakeFactory f;
    connpool::PoolOptions o;
    o.max_size = 3;
    o.min_idle = 2;
    o.maintenance_interval = 5ms;
    connpool::Pool<FakeConnection, FakeFactory> pool{f, o};
    for (int i = 0; i < 2000 && pool.stats().idle < 2; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_EQ(pool.stats().idle, 2u);
}

TEST(PoolMaintenance, ThreadExistsOnlyWhenAnOptionNeedsItAndStopsOnClose) {
    std::thread([] {}).join(); // runtimes that start a helper thread (ThreadSanitizer's) do it now
    const std::size_t before = thread_count();
    FakeFactory f;
    {
        auto o = manual(2);
        o.maintenance_interval = 1s; // interval set, but no option needs maintenance
        connpool::Pool<FakeConnection, FakeFactory> idle_free{f, o};
        EXPECT_EQ(thread_count(), before);
    }
    {
        auto o = manual(2);
        o.maintenance_interval = 1s;
        o.leak_threshold = 1s;
        connpool::Pool<FakeConnection, FakeFactory> watched{f, o};
        EXPECT_EQ(thread_count(), before + 1);
        watched.close();
        // pthread_join returns once the kernel clears the thread's tid, a moment before the
        // task leaves /proc/self/task: allow that moment.
        for (int i = 0; i < 1000 && thread_count() != before; ++i) std::this_thread::sleep_for(1ms);
        EXPECT_EQ(thread_count(), before);
    }
}
