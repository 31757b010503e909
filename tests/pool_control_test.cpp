// Run-time control of a pool: cancelling a waiting acquire, resize, pause/resume, retire_all.
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "counting_connection.hpp"
#include "eventually.hpp"

using namespace std::chrono_literals;
using connpool::testing::eventually;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;
using FakePool = connpool::Pool<FakeConnection, FakeFactory>;

namespace {

class PoolControl : public ::testing::Test {
protected:
    connpool::PoolOptions options(std::size_t n) {
        connpool::PoolOptions o;
        o.max_size = n;
        o.acquire_timeout = 5s;
        o.maintenance_interval = 0ms;
        o.on_event = [this](const connpool::PoolEvent& e) {
            std::lock_guard lock(events_mutex);
            events.push_back(e.kind);
            if (e.kind == connpool::PoolEventKind::destroyed) reasons.emplace_back(e.detail);
        };
        return o;
    }

    void expect_balanced_after(FakePool& pool) {
        pool.close();
        EXPECT_EQ(f.registry->alive_count(), 0u);
        EXPECT_EQ(f.registry->double_destroys.load(), 0u);
        const auto s = pool.stats();
        EXPECT_EQ(s.created, s.destroyed);
    }

    bool saw(connpool::PoolEventKind kind) {
        std::lock_guard lock(events_mutex);
        for (auto k : events) {
            if (k == kind) return true;
        }
        return false;
    }

    std::size_t destroyed_because(const std::string& why) {
        std::lock_guard lock(events_mutex);
        std::size_t n = 0;
        for (const auto& r : reasons) n += r == why ? 1 : 0;
        return n;
    }

    FakeFactory f;
    std::mutex events_mutex;
    std::vector<connpool::PoolEventKind> events;
    std::vector<std::string> reasons;
};

} // namespace

// ---- cancellation ------------------------------------------------------------------------

TEST_F(PoolControl, a_stop_request_wakes_a_waiting_acquire_with_acquire_cancelled) {
    FakePool pool{f, options(1)};
    auto held = pool.acquire();
    std::stop_source stop;
    std::atomic<bool> cancelled{false};
    std::thread waiter([&] {
        try {
            (void)pool.acquire_for(30s, stop.get_token());
        } catch (const connpool::AcquireCancelled&) {
            cancelled.store(true);
        }
    });
    ASSERT_TRUE(eventually([&] { return pool.stats().waiting == 1; }));
    stop.request_stop();
    waiter.join();
    EXPECT_TRUE(cancelled.load());
    const auto s = pool.stats();
    EXPECT_EQ(s.waiting, 0u);
    EXPECT_EQ(s.cancelled, 1u);
    EXPECT_EQ(s.timeouts, 0u);
    EXPECT_TRUE(saw(connpool::PoolEventKind::cancelled));
    held.release(); // nothing was lost: the connection is idle and the next acquire gets it
    EXPECT_EQ(pool.stats().idle, 1u);
    EXPECT_EQ(pool.acquire()->id(), 1u);
    expect_balanced_after(pool);
}

// A monitor that reads stats() on the cancelled event must not count the waiter called off:
// before the fix the event came while the waiter was still counted (waiting was 1).
TEST_F(PoolControl, the_cancelled_event_comes_after_the_waiter_has_left_the_count) {
    std::atomic<FakePool*> self{nullptr};
    std::atomic<long> waiting_at_event{-1};
    auto o = options(1);
    o.on_event = [&](const connpool::PoolEvent& e) {
        if (e.kind == connpool::PoolEventKind::cancelled)
            waiting_at_event.store(static_cast<long>(self.load()->stats().waiting));
    };
    FakePool pool{f, o};
    self.store(&pool);
    auto held = pool.acquire();
    std::stop_source stop;
    std::thread waiter([&] {
        try {
            (void)pool.acquire_for(30s, stop.get_token());
        } catch (const connpool::AcquireCancelled&) {
        }
    });
    ASSERT_TRUE(eventually([&] { return pool.stats().waiting == 1; }));
    stop.request_stop();
    waiter.join();
    EXPECT_EQ(waiting_at_event.load(), 0);
    EXPECT_EQ(pool.stats().cancelled, 1u);
    held.release();
    expect_balanced_after(pool);
}

TEST_F(PoolControl, acquire_cancelled_is_a_connpool_error) {
    FakePool pool{f, options(1)};
    auto held = pool.acquire();
    std::stop_source stop;
    stop.request_stop();
    EXPECT_THROW((void)pool.acquire(stop.get_token()), connpool::Error);
}

TEST_F(PoolControl, an_already_stopped_token_still_gets_a_connection_that_is_ready) {
    FakePool pool{f, options(1)};
    { auto warm = pool.acquire(); }
    std::stop_source stop;
    stop.request_stop();
    auto l = pool.acquire(stop.get_token());
    EXPECT_TRUE(l);
}

TEST_F(PoolControl, a_cancelled_waiter_leaves_the_creation_it_asked_for_to_the_pool) {
    f.create_delay = 100ms;
    FakePool pool{f, options(1)};
    std::stop_source stop;
    std::thread waiter([&] { EXPECT_THROW((void)pool.acquire(stop.get_token()), connpool::AcquireCancelled); });
    ASSERT_TRUE(eventually([&] { return f.registry->creating_now.load() == 1; }));
    stop.request_stop();
    waiter.join();
    ASSERT_TRUE(eventually([&] { return pool.stats().idle == 1; })) << "the connection went idle";
    EXPECT_EQ(pool.acquire()->id(), 1u);
    EXPECT_EQ(f.registry->created.load(), 1u);
    expect_balanced_after(pool);
}

TEST_F(PoolControl, many_cancelled_waiters_leave_no_trace) {
    FakePool pool{f, options(2)};
    auto a = pool.acquire();
    auto b = pool.acquire();
    std::vector<std::stop_source> stops(16);
    std::vector<std::thread> waiters;
    std::atomic<int> cancelled{0};
    for (auto& s : stops) {
        waiters.emplace_back([&, token = s.get_token()] {
            try {
                (void)pool.acquire(token);
            } catch (const connpool::AcquireCancelled&) {
                cancelled.fetch_add(1);
            }
        });
    }
    ASSERT_TRUE(eventually([&] { return pool.stats().waiting == 16; }));
    for (auto& s : stops) s.request_stop();
    for (auto& t : waiters) t.join();
    EXPECT_EQ(cancelled.load(), 16);
    a.release();
    b.discard(); // capacity freed with no waiter: nobody creates for nobody
    std::this_thread::sleep_for(20ms);
    const auto s = pool.stats();
    EXPECT_EQ(s.waiting, 0u);
    EXPECT_EQ(s.open, 1u);
    EXPECT_EQ(s.idle, 1u);
    EXPECT_EQ(f.registry->created.load(), 2u);
    auto x = pool.acquire(); // both still usable: the idle one and a new one in the freed slot
    auto y = pool.acquire();
    EXPECT_TRUE(x && y);
}

TEST_F(PoolControl, a_stop_request_wakes_a_waiter_of_a_paused_pool) {
    FakePool pool{f, options(1)};
    { auto warm = pool.acquire(); }
    pool.pause();
    std::stop_source stop;
    std::thread waiter([&] { EXPECT_THROW((void)pool.acquire(stop.get_token()), connpool::AcquireCancelled); });
    ASSERT_TRUE(eventually([&] { return pool.stats().waiting == 1; }));
    stop.request_stop();
    waiter.join();
    pool.resume();
    EXPECT_TRUE(pool.try_acquire().has_value());
}

// ---- resize ------------------------------------------------------------------------------

TEST_F(PoolControl, growing_serves_waiters_at_once) {
    FakePool pool{f, options(1)};
    auto held = pool.acquire();
    std::thread waiter([&] {
        auto l = pool.acquire_for(5s);
        EXPECT_EQ(l->id(), 2u);
    });
    ASSERT_TRUE(eventually([&] { return pool.stats().waiting == 1; }));
    pool.resize(2);
    waiter.join();
    EXPECT_EQ(pool.stats().max_size, 2u);
    EXPECT_TRUE(saw(connpool::PoolEventKind::resized));
}

TEST_F(PoolControl, growing_past_the_first_size_gives_every_new_lease_a_connection) {
    FakePool pool{f, options(2)};
    pool.resize(300);
    std::vector<connpool::Lease<FakeConnection>> leases;
    for (int i = 0; i < 300; ++i) leases.push_back(pool.acquire());
    EXPECT_EQ(pool.stats().in_use, 300u);
    EXPECT_FALSE(pool.try_acquire().has_value());
    leases.clear();
    EXPECT_EQ(pool.stats().idle, 300u);
    expect_balanced_after(pool);
}

TEST_F(PoolControl, shrinking_destroys_surplus_idle_now_and_surplus_leased_on_return) {
    FakePool pool{f, options(4)};
    std::vector<connpool::Lease<FakeConnection>> leases;
    for (int i = 0; i < 4; ++i) leases.push_back(pool.acquire());
    leases.resize(2); // two idle, two leased
    pool.resize(1);
    auto s = pool.stats();
    EXPECT_EQ(s.max_size, 1u);
    EXPECT_EQ(s.idle, 0u) << "surplus idle connections go at once";
    EXPECT_EQ(s.open, 2u) << "leases keep theirs";
    leases.pop_back();
    EXPECT_EQ(pool.stats().open, 1u) << "a surplus lease's connection is destroyed on return";
    leases.pop_back();
    s = pool.stats();
    EXPECT_EQ(s.open, 1u);
    EXPECT_EQ(s.idle, 1u) << "the one within max_size is kept";
    EXPECT_EQ(destroyed_because("pool shrunk by resize()"), 3u);
    expect_balanced_after(pool);
}

TEST_F(PoolControl, shrinking_never_takes_a_connection_from_a_lease) {
    FakePool pool{f, options(3)};
    auto a = pool.acquire();
    auto b = pool.acquire();
    auto c = pool.acquire();
    pool.resize(1);
    a->uses++;
    b->uses++;
    c->uses++;
    EXPECT_EQ(pool.stats().in_use, 3u);
    EXPECT_FALSE(pool.try_acquire().has_value());
}

TEST_F(PoolControl, invalid_sizes_throw_naming_the_value) {
    auto o = options(4);
    o.min_idle = 2;
    FakePool pool{f, o};
    EXPECT_THROW(pool.resize(0), std::invalid_argument);
    EXPECT_THROW(pool.resize((std::size_t{1} << 20) + 1), std::invalid_argument);
    try {
        pool.resize(1);
        FAIL() << "expected std::invalid_argument";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("min_idle"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("got 1"), std::string::npos) << e.what();
    }
    EXPECT_EQ(pool.stats().max_size, 4u);
}

// ---- pause / resume ----------------------------------------------------------------------

TEST_F(PoolControl, while_paused_acquires_wait_and_try_acquire_gets_nothing) {
    FakePool pool{f, options(2)};
    { auto warm = pool.acquire(); } // parked in this thread's cache
    pool.pause();
    EXPECT_TRUE(pool.paused());
    EXPECT_TRUE(pool.stats().paused);
    EXPECT_FALSE(pool.try_acquire().has_value());
    EXPECT_THROW((void)pool.acquire_for(30ms), connpool::AcquireTimeout) << "not even the cached one";
    EXPECT_EQ(f.registry->created.load(), 1u) << "nothing is created while paused";
    pool.resume();
    EXPECT_FALSE(pool.paused());
    EXPECT_EQ(pool.acquire()->id(), 1u);
    EXPECT_TRUE(saw(connpool::PoolEventKind::paused));
    EXPECT_TRUE(saw(connpool::PoolEventKind::resumed));
}

TEST_F(PoolControl, leases_keep_working_while_paused_and_their_connections_wait_idle) {
    FakePool pool{f, options(1)};
    auto l = pool.acquire();
    pool.pause();
    l->uses++;
    l.release();
    EXPECT_EQ(pool.stats().idle, 1u);
    std::atomic<bool> served{false};
    std::thread waiter([&] {
        auto got = pool.acquire_for(5s);
        served.store(got && got->id() == 1u);
    });
    ASSERT_TRUE(eventually([&] { return pool.stats().waiting == 1; }));
    std::this_thread::sleep_for(20ms);
    EXPECT_FALSE(served.load());
    pool.resume();
    waiter.join();
    EXPECT_TRUE(served.load());
}

TEST_F(PoolControl, pause_and_resume_are_idempotent) {
    FakePool pool{f, options(1)};
    pool.pause();
    pool.pause();
    pool.resume();
    pool.resume();
    EXPECT_FALSE(pool.paused());
    { auto l = pool.acquire(); }
    EXPECT_TRUE(pool.try_acquire().has_value());
}

// ---- retire_all --------------------------------------------------------------------------

TEST_F(PoolControl, retire_all_replaces_idle_connections_now_and_leased_ones_on_return) {
    FakePool pool{f, options(3)};
    auto leased = pool.acquire();
    {
        auto a = pool.acquire();
        auto b = pool.acquire();
    }
    pool.retire_all();
    auto s = pool.stats();
    EXPECT_EQ(s.idle, 0u);
    EXPECT_EQ(s.open, 1u);
    EXPECT_EQ(s.retirements, 1u);
    leased->uses++; // still works
    leased.release();
    EXPECT_EQ(pool.stats().open, 0u);
    EXPECT_EQ(destroyed_because("replaced by retire_all()"), 3u);
    EXPECT_GT(pool.acquire()->id(), 3u) << "a new connection";
    EXPECT_TRUE(saw(connpool::PoolEventKind::retired_all));
    expect_balanced_after(pool);
}

TEST_F(PoolControl, retire_all_also_replaces_a_connection_being_created) {
    f.create_delay = 100ms;
    FakePool pool{f, options(1)};
    std::thread waiter([&] {
        auto l = pool.acquire_for(5s);
        EXPECT_EQ(l->id(), 2u) << "the one created before retire_all() was not handed out";
    });
    ASSERT_TRUE(eventually([&] { return f.registry->creating_now.load() == 1; }));
    pool.retire_all();
    waiter.join();
    EXPECT_EQ(destroyed_because("replaced by retire_all()"), 1u);
    expect_balanced_after(pool);
}
