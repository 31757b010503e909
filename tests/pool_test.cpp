#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "counting_connection.hpp"

using namespace std::chrono_literals;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;

namespace {

using FakePool = connpool::Pool<FakeConnection, FakeFactory>;

connpool::PoolOptions quiet(std::size_t max_size) {
    connpool::PoolOptions o;
    o.max_size = max_size;
    o.acquire_timeout = 2s;
    o.maintenance_interval = 0ms; // no background thread: these tests are about the foreground
    return o;
}

void expect_balanced(const FakeFactory& f) {
    EXPECT_EQ(f.registry->created.load(), f.registry->destroyed.load());
    EXPECT_EQ(f.registry->double_destroys.load(), 0u);
    EXPECT_EQ(f.registry->alive_count(), 0u);
}

void expect_invariants(const connpool::PoolStats& s) {
    EXPECT_EQ(s.open, s.idle + s.in_use);
    EXPECT_EQ(s.created - s.destroyed, s.open);
    EXPECT_LE(s.open, s.max_size);
}

} // namespace

TEST(Pool, AcquireCreatesAConnectionAndReleaseMakesItIdle) {
    FakeFactory f;
    {
        FakePool pool{f, quiet(2)};
        {
            auto lease = pool.acquire();
            ASSERT_TRUE(lease);
            EXPECT_EQ(lease->id(), 1u);
            auto s = pool.stats();
            EXPECT_EQ(s.open, 1u);
            EXPECT_EQ(s.in_use, 1u);
            EXPECT_EQ(s.idle, 0u);
        }
        auto s = pool.stats();
        EXPECT_EQ(s.in_use, 0u);
        EXPECT_EQ(s.idle, 1u);
        EXPECT_EQ(s.acquired, 1u);
        expect_invariants(s);
    }
    expect_balanced(f);
}

TEST(Pool, ReleasedConnectionIsReusedInsteadOfCreatingAnother) {
    FakeFactory f;
    FakePool pool{f, quiet(4)};
    for (int i = 0; i < 100; ++i) {
        auto lease = pool.acquire();
        EXPECT_EQ(lease->id(), 1u);
    }
    EXPECT_EQ(pool.stats().created, 1u);
    EXPECT_EQ(pool.stats().acquired, 100u);
}

TEST(Pool, DeductionGuideInfersConnectionTypeFromFactory) {
    FakeFactory f;
    connpool::Pool pool{f, quiet(1)};
    static_assert(std::is_same_v<decltype(pool), connpool::Pool<FakeConnection, FakeFactory>>);
    EXPECT_EQ(pool.acquire()->id(), 1u);
}

TEST(Pool, NeverOpensMoreThanMaxSize) {
    FakeFactory f;
    FakePool pool{f, quiet(3)};
    std::vector<connpool::Lease<FakeConnection>> held;
    for (int i = 0; i < 3; ++i) held.push_back(pool.acquire());
    EXPECT_THROW((void)pool.acquire_for(20ms), connpool::AcquireTimeout);
    EXPECT_EQ(pool.stats().open, 3u);
    EXPECT_EQ(f.registry->created.load(), 3u);
}

TEST(Pool, AcquireTimeoutMessageDescribesWaitStateAndHolders) {
    FakeFactory f;
    FakePool pool{f, quiet(2)};
    auto a = pool.acquire(); const int line_a = __LINE__;
    auto b = pool.acquire();
    try {
        (void)pool.acquire_for(30ms);
        FAIL() << "expected AcquireTimeout";
    } catch (const connpool::AcquireTimeout& e) {
        const std::string m = e.what();
        EXPECT_GE(e.waited(), 30ms);
        EXPECT_NE(m.find("timed out after"), std::string::npos) << m;
        EXPECT_NE(m.find("max_size 2"), std::string::npos) << m;
        EXPECT_NE(m.find("open 2"), std::string::npos) << m;
        EXPECT_NE(m.find("in use 2"), std::string::npos) << m;
        EXPECT_NE(m.find("waiting 1"), std::string::npos) << m;
        EXPECT_NE(m.find("pool_test.cpp:" + std::to_string(line_a)), std::string::npos) << m;
        EXPECT_NE(m.find("held by"), std::string::npos) << m;
    }
    EXPECT_EQ(pool.stats().timeouts, 1u);
}

TEST(Pool, AcquireTimeoutIsAnErrorAndARuntimeError) {
    static_assert(std::is_base_of_v<connpool::Error, connpool::AcquireTimeout>);
    static_assert(std::is_base_of_v<connpool::Error, connpool::PoolClosed>);
    static_assert(std::is_base_of_v<std::runtime_error, connpool::Error>);
}

TEST(Pool, TryAcquireNeverBlocksAndNeverCreates) {
    FakeFactory f;
    FakePool pool{f, quiet(1)};
    EXPECT_FALSE(pool.try_acquire().has_value()); // nothing idle yet, and it does not create
    EXPECT_EQ(f.registry->created.load(), 0u);
    { auto warm = pool.acquire(); }
    auto got = pool.try_acquire();
    ASSERT_TRUE(got.has_value());
    EXPECT_FALSE(pool.try_acquire().has_value()); // the only one is held
}

TEST(Pool, DiscardDestroysTheConnectionAndAllowsAReplacement) {
    FakeFactory f;
    FakePool pool{f, quiet(1)};
    {
        auto lease = pool.acquire();
        lease.discard();
        EXPECT_FALSE(lease);
    }
    EXPECT_EQ(f.registry->destroyed.load(), 1u);
    auto again = pool.acquire();
    EXPECT_EQ(again->id(), 2u);
    auto s = pool.stats();
    EXPECT_EQ(s.discarded, 1u);
    EXPECT_EQ(s.created, 2u);
    EXPECT_EQ(s.destroyed, 1u);
}

TEST(Pool, DiscardWakesAWaiterToCreateAReplacement) {
    FakeFactory f;
    FakePool pool{f, quiet(1)};
    auto held = pool.acquire();
    std::thread waiter([&] {
        auto lease = pool.acquire_for(5s);
        EXPECT_EQ(lease->id(), 2u);
    });
    while (pool.stats().waiting == 0) std::this_thread::sleep_for(1ms);
    held.discard();
    waiter.join();
}

TEST(Pool, ResetIsCalledOnReturnAndFalseDestroysTheConnection) {
    FakeFactory f;
    FakePool pool{f, quiet(1)};
    {
        auto lease = pool.acquire();
        lease->resettable = false;
    }
    EXPECT_EQ(f.registry->reset_calls.load(), 1u);
    EXPECT_EQ(f.registry->destroyed.load(), 1u);
    EXPECT_EQ(f.registry->factory_destroy_calls.load(), 1u);
    EXPECT_EQ(pool.acquire()->id(), 2u);
}

TEST(Pool, ValidateRunsOnlyAfterValidateAfterIdleAndFalseDestroysAndRetries) {
    FakeFactory f;
    auto options = quiet(2);
    options.validate_after_idle = 0ms; // every hand-out of an idle connection validates
    FakePool pool{f, options};
    { auto warm = pool.acquire(); }
    EXPECT_EQ(f.registry->validate_calls.load(), 0u) << "a brand-new connection needs no validation";
    { auto again = pool.acquire(); EXPECT_EQ(again->id(), 1u); }
    EXPECT_EQ(f.registry->validate_calls.load(), 1u);
    f.all_unhealthy->store(true);
    {
        auto fresh = pool.acquire();
        EXPECT_EQ(fresh->id(), 2u); // the dead one was destroyed, a new one created
    }
    f.all_unhealthy->store(false);
    EXPECT_EQ(pool.stats().validation_failures, 1u);
}

TEST(Pool, ValidateIsSkippedForRecentlyUsedConnections) {
    FakeFactory f;
    auto options = quiet(1);
    options.validate_after_idle = 1h;
    FakePool pool{f, options};
    for (int i = 0; i < 10; ++i) (void)pool.acquire();
    EXPECT_EQ(f.registry->validate_calls.load(), 0u);
}

TEST(Pool, FailingCreateIsRetriedWithinTheDeadline) {
    FakeFactory f;
    f.fail_next->store(3);
    FakePool pool{f, quiet(1)};
    auto lease = pool.acquire_for(5s);
    EXPECT_EQ(lease->id(), 1u);
    EXPECT_EQ(f.registry->create_calls.load(), 4u);
    EXPECT_EQ(pool.stats().create_failures, 3u);
}

TEST(Pool, TimeoutWhileCreateKeepsFailingReportsTheLastCreationError) {
    FakeFactory f;
    f.fail_next->store(1'000'000);
    FakePool pool{f, quiet(1)};
    try {
        (void)pool.acquire_for(100ms);
        FAIL() << "expected AcquireTimeout";
    } catch (const connpool::AcquireTimeout& e) {
        EXPECT_NE(std::string(e.what()).find("database unreachable"), std::string::npos) << e.what();
    }
    const auto calls = f.registry->create_calls.load();
    EXPECT_GE(calls, 2u) << "it retried";
    EXPECT_LE(calls, 20u) << "with back-off, not in a hot loop";
}

TEST(Pool, ConcurrentCreationsAreBounded) {
    FakeFactory f;
    f.create_delay = 20ms;
    auto options = quiet(8);
    options.max_concurrent_creates = 2;
    FakePool pool{f, options};
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) threads.emplace_back([&] { auto l = pool.acquire_for(5s); std::this_thread::sleep_for(50ms); });
    for (auto& t : threads) t.join();
    EXPECT_LE(f.registry->most_creating_at_once.load(), 2);
    EXPECT_GE(f.registry->created.load(), 2u);
}

TEST(Pool, InvalidOptionsThrowNamingTheFieldAndTheValue) {
    auto expect_invalid = [](connpool::PoolOptions o, const std::string& field, const std::string& value) {
        try {
            FakePool pool{FakeFactory{}, std::move(o)};
            ADD_FAILURE() << "expected std::invalid_argument for " << field;
        } catch (const std::invalid_argument& e) {
            const std::string m = e.what();
            EXPECT_NE(m.find(field), std::string::npos) << m;
            EXPECT_NE(m.find("got " + value), std::string::npos) << m;
        }
    };
    expect_invalid({.max_size = 0}, "max_size", "0");
    expect_invalid({.max_size = 2, .min_idle = 3}, "min_idle", "3");
    expect_invalid({.acquire_timeout = -1ms}, "acquire_timeout", "-1");
    expect_invalid({.idle_timeout = -5ms}, "idle_timeout", "-5");
    expect_invalid({.max_lifetime = -1ms}, "max_lifetime", "-1");
    expect_invalid({.leak_threshold = -2ms}, "leak_threshold", "-2");
    expect_invalid({.max_concurrent_creates = 0}, "max_concurrent_creates", "0");
    expect_invalid({.create_retry_initial = 50ms, .create_retry_max = 10ms}, "create_retry_max", "10");
}

TEST(Pool, EventsReportCreateAcquireReleaseDestroyAndTimeout) {
    struct Log {
        std::mutex m;
        std::vector<connpool::PoolEventKind> kinds;
    };
    auto log = std::make_shared<Log>();
    auto options = quiet(1);
    options.on_event = [log](const connpool::PoolEvent& e) {
        std::lock_guard lock(log->m);
        log->kinds.push_back(e.kind);
    };
    FakeFactory f;
    {
        FakePool pool{f, options};
        {
            auto l = pool.acquire();
            EXPECT_THROW((void)pool.acquire_for(5ms), connpool::AcquireTimeout);
        }
    }
    using K = connpool::PoolEventKind;
    std::vector<K> expected{K::created, K::acquired, K::timeout, K::released, K::destroyed};
    EXPECT_EQ(log->kinds, expected);
}

TEST(Pool, ThrowingEventHookDoesNotBreakThePool) {
    auto options = quiet(1);
    options.on_event = [](const connpool::PoolEvent&) { throw std::runtime_error("hook failed"); };
    FakeFactory f;
    FakePool pool{f, options};
    for (int i = 0; i < 3; ++i) EXPECT_NO_THROW((void)pool.acquire());
    EXPECT_EQ(pool.stats().acquired, 3u);
}

TEST(Pool, StatsInvariantsHoldWithMixedIdleAndInUse) {
    FakeFactory f;
    FakePool pool{f, quiet(5)};
    std::vector<connpool::Lease<FakeConnection>> held;
    for (int i = 0; i < 5; ++i) held.push_back(pool.acquire());
    held.resize(2);
    auto s = pool.stats();
    expect_invariants(s);
    EXPECT_EQ(s.in_use, 2u);
    EXPECT_EQ(s.idle, 3u);
}

TEST(Pool, AcquireWaitPercentilesCountFastAcquiresAsZeroAndRecordRealWaits) {
    FakeFactory f;
    FakePool pool{f, quiet(1)};
    for (int i = 0; i < 200; ++i) (void)pool.acquire();
    auto held = pool.acquire();
    std::thread t([&] { (void)pool.acquire_for(5s); });
    std::this_thread::sleep_for(30ms);
    held.release();
    t.join();
    auto s = pool.stats();
    EXPECT_EQ(s.acquire_wait_p50, 0ns);
    EXPECT_GE(s.acquire_wait_max, 20ms);
    EXPECT_LE(s.acquire_wait_p99, s.acquire_wait_max);
}

TEST(Pool, UniquePtrConnectionsAreReachedThroughTheArrow) {
    struct Db {
        int answer() const { return 42; }
    };
    struct Factory {
        std::unique_ptr<Db> create() { return std::make_unique<Db>(); }
    };
    connpool::Pool pool{Factory{}, quiet(1)};
    auto lease = pool.acquire();
    EXPECT_EQ(lease->answer(), 42);
    EXPECT_NE((*lease).get(), nullptr);
}

TEST(Pool, AcquireForWithTheLargestTimeoutWaitsInsteadOfOverflowing) {
    FakeFactory f;
    FakePool pool{f, quiet(1)};
    auto held = pool.acquire();
    std::thread waiter([&] { EXPECT_EQ(pool.acquire_for(std::chrono::milliseconds::max())->id(), 1u); });
    while (pool.stats().waiting == 0) std::this_thread::sleep_for(1ms);
    held.release();
    waiter.join();
}

TEST(Pool, WaiterTakesOverWhenAnotherThreadsCreateFails) {
    // The only slot is being created by another thread (here a maintenance pass) and that
    // create() fails: the sleeping waiter must be handed the free capacity and retry, not
    // sleep on until its deadline.
    FakeFactory f;
    f.create_delay = 50ms;
    f.fail_next->store(1);
    auto o = quiet(1);
    o.min_idle = 1;
    FakePool pool{f, o};
    std::thread maintenance([&] { pool.maintain(); });
    while (f.registry->create_calls.load() == 0) std::this_thread::sleep_for(1ms);
    std::thread waiter([&] { EXPECT_EQ(pool.acquire_for(60s)->id(), 1u); });
    // Liveness, with a margin of minutes: the waiter's own create() call comes long before
    // its 60 s deadline.
    for (int i = 0; i < 30'000 && f.registry->create_calls.load() < 2; ++i) std::this_thread::sleep_for(1ms);
    EXPECT_GE(f.registry->create_calls.load(), 2u);
    maintenance.join();
    waiter.join();
}
