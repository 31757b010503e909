// One test per bug that a review trying to break the pool found (issue 7), each named after the
// behaviour it pins. Each failed (hung, timed out, or counted wrong) before its fix.
#include <connpool/bounded_queue.hpp>
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "counting_connection.hpp"
#include "eventually.hpp"
#include "manual_clock.hpp"

using namespace std::chrono_literals;
using connpool::testing::eventually;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;
using connpool::testing::ManualClock;
using FakePool = connpool::Pool<FakeConnection, FakeFactory>;
using ClockedPool = connpool::Pool<FakeConnection, FakeFactory, ManualClock>;

namespace {

constexpr auto never = std::chrono::milliseconds::max();

connpool::PoolOptions foreground(std::size_t n) {
    connpool::PoolOptions o;
    o.max_size = n;
    o.acquire_timeout = 5s;
    o.maintenance_interval = 0ms;
    return o;
}

// CPU time this process has used, for "does not busy-loop" checks (a loop burns a whole core).
std::chrono::milliseconds process_cpu_time() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return std::chrono::milliseconds(ts.tv_sec * 1000 + ts.tv_nsec / 1'000'000);
}

// A factory whose validate() blocks until the test opens the gate, to look at the pool while
// a validation is in progress.
struct GatedValidateFactory {
    struct Gate {
        std::mutex m;
        std::condition_variable cv;
        bool open = false;
        bool validating = false;
    };
    std::shared_ptr<Gate> gate = std::make_shared<Gate>();
    std::shared_ptr<std::atomic<int>> next = std::make_shared<std::atomic<int>>(0);

    int create() { return next->fetch_add(1) + 1; }
    bool validate(int&) {
        std::unique_lock lock(gate->m);
        gate->validating = true;
        gate->cv.notify_all();
        gate->cv.wait(lock, [&] { return gate->open; });
        return true;
    }
};

} // namespace

// Bug 1: both closers joined the maintenance thread (a hang or std::system_error).
TEST(PoolRegression, two_threads_closing_at_once_both_return) {
    for (int round = 0; round < 50; ++round) {
        FakeFactory f;
        connpool::PoolOptions o; // defaults: a maintenance thread runs
        o.max_size = 2;
        FakePool pool{f, o};
        { auto l = pool.acquire(); }
        std::atomic<bool> go{false};
        std::thread a([&] {
            while (!go.load()) {
            }
            pool.close();
        });
        std::thread b([&] {
            while (!go.load()) {
            }
            pool.close();
        });
        go.store(true);
        a.join();
        b.join();
        EXPECT_TRUE(pool.closed());
        EXPECT_EQ(f.registry->alive_count(), 0u);
    }
}

// Bug 2: milliseconds::max() for max_lifetime made every connection born expired; acquire()
// then created and destroyed connections for ever, ignoring its deadline.
TEST(PoolRegression, max_lifetime_of_milliseconds_max_means_never) {
    FakeFactory f;
    auto o = foreground(1);
    o.max_lifetime = never;
    FakePool pool{f, o};
    for (int i = 0; i < 5; ++i) {
        auto l = pool.acquire_for(2s);
        EXPECT_EQ(l->id(), 1u);
    }
    EXPECT_EQ(f.registry->created.load(), 1u);
    EXPECT_EQ(pool.stats().destroyed, 0u);
}

// Bug 2: for validate_after_idle it validated on every acquire.
TEST(PoolRegression, validate_after_idle_of_milliseconds_max_never_validates) {
    FakeFactory f;
    auto o = foreground(1);
    o.validate_after_idle = never;
    ClockedPool pool{f, o};
    { auto warm = pool.acquire(); }
    ManualClock::advance(24h);
    for (int i = 0; i < 3; ++i) (void)pool.acquire();
    EXPECT_EQ(f.registry->validate_calls.load(), 0u);
}

// Bug 2: for maintenance_interval the maintenance thread busy-looped.
TEST(PoolRegression, maintenance_interval_of_milliseconds_max_does_not_spin) {
    FakeFactory f;
    connpool::PoolOptions o;
    o.max_size = 1;
    o.leak_threshold = 1s; // needs maintenance: a thread exists
    o.maintenance_interval = never;
    FakePool pool{f, o};
    const auto before = process_cpu_time();
    std::this_thread::sleep_for(300ms);
    EXPECT_LT(process_cpu_time() - before, 150ms) << "the maintenance thread spins";
}

// Bug 2: the create back-off doubled past what a clock can hold.
TEST(PoolRegression, create_retry_of_milliseconds_max_times_out_cleanly) {
    FakeFactory f;
    f.fail_next->store(1'000'000);
    auto o = foreground(1);
    o.create_retry_initial = never;
    o.create_retry_max = never;
    FakePool pool{f, o};
    EXPECT_THROW((void)pool.acquire_for(100ms), connpool::AcquireTimeout);
    EXPECT_THROW((void)pool.acquire_for(50ms), connpool::AcquireTimeout);
    EXPECT_EQ(f.registry->create_calls.load(), 1u) << "backing off for ever after the first failure";
}

// Bug 2: negative and huge acquire timeouts.
TEST(PoolRegression, acquire_for_negative_or_huge_timeouts_do_not_overflow) {
    FakeFactory f;
    auto o = foreground(1);
    o.acquire_timeout = never;
    FakePool pool{f, o};
    auto held = pool.acquire(); // acquire_timeout = never: waits, and it need not
    EXPECT_THROW((void)pool.acquire_for(std::chrono::milliseconds::min()), connpool::AcquireTimeout);
    EXPECT_THROW((void)pool.acquire_for(-1ms), connpool::AcquireTimeout);
    std::thread giver([&] {
        std::this_thread::sleep_for(30ms);
        held.release();
    });
    auto got = pool.acquire_for(never);
    EXPECT_TRUE(got);
    giver.join();
}

// Bug 2: BoundedBlockingQueue::pop_for with a huge negative timeout underflowed its deadline.
TEST(PoolRegression, queue_pop_for_with_the_most_negative_timeout_does_not_wait) {
    connpool::BoundedBlockingQueue<int> q(2);
    EXPECT_FALSE(q.pop_for(std::chrono::nanoseconds::min()).has_value());
    EXPECT_FALSE(q.pop_for(std::chrono::milliseconds::min()).has_value());
    q.push(7);
    EXPECT_EQ(q.pop_for(std::chrono::nanoseconds::min()), 7);
}

// Bug 3: freed capacity handed to sleeping waiters as tickets bypassed max_concurrent_creates:
// with a limit of 1, eight creates ran at once after eight discards.
TEST(PoolRegression, discards_with_waiters_still_create_within_the_limit) {
    FakeFactory f;
    f.create_delay = 5ms; // long enough for creations to overlap if nothing stops them
    auto o = foreground(8);
    o.max_concurrent_creates = 1;
    FakePool pool{f, o};
    std::vector<connpool::Lease<FakeConnection>> held;
    for (int i = 0; i < 8; ++i) held.push_back(pool.acquire());
    std::vector<std::thread> waiters;
    std::atomic<int> served{0};
    for (int i = 0; i < 8; ++i) {
        waiters.emplace_back([&] {
            auto l = pool.acquire_for(10s);
            if (l) served.fetch_add(1);
            std::this_thread::sleep_for(20ms);
        });
    }
    ASSERT_TRUE(eventually([&] { return pool.stats().waiting == 8; }));
    f.registry->most_creating_at_once.store(0);
    for (auto& l : held) l.discard();
    for (auto& t : waiters) t.join();
    EXPECT_EQ(served.load(), 8);
    EXPECT_LE(f.registry->most_creating_at_once.load(), 1);
}

// Bug 4: a waiter handed a ticket during a create back-off that then timed out left the free
// slot unknown to everyone: a younger waiter slept with free capacity until its deadline.
TEST(PoolRegression, a_waiter_timing_out_during_back_off_leaves_the_capacity_to_the_next) {
    FakeFactory f;
    f.fail_next->store(1);
    f.create_delay = 100ms;
    auto o = foreground(1);
    o.create_retry_initial = 500ms;
    o.create_retry_max = 500ms;
    FakePool pool{f, o};
    // X's creation fails at 100 ms, backing off until 600 ms; X and A give up before that.
    std::thread x([&] { EXPECT_THROW((void)pool.acquire_for(150ms), connpool::AcquireTimeout); });
    ASSERT_TRUE(eventually([&] { return f.registry->creating_now.load() == 1; }));
    std::thread a([&] { EXPECT_THROW((void)pool.acquire_for(200ms), connpool::AcquireTimeout); });
    std::this_thread::sleep_for(20ms);
    std::atomic<bool> served{false};
    std::thread b([&] {
        auto l = pool.acquire_for(30s); // the retry after the back-off succeeds: B gets it
        served.store(static_cast<bool>(l));
    });
    x.join();
    a.join();
    // Served once the back-off ends (~0.7 s), not at its own deadline: a liveness bound with a
    // wide margin, not a speed check.
    EXPECT_TRUE(eventually([&] { return served.load(); }, 10s)) << "B slept with free capacity";
    b.join();
    EXPECT_EQ(f.registry->created.load(), 1u);
}

// Bug 5: a slot going vacant while a waiter prepared to sleep could be missed; the waiter then
// slept its whole timeout with nothing in use.
TEST(PoolRegression, a_discard_racing_a_waiter_going_to_sleep_is_never_missed) {
    FakeFactory f;
    FakePool pool{f, foreground(1)};
    for (int round = 0; round < 200; ++round) {
        auto held = pool.acquire();
        std::thread waiter([&] {
            auto l = pool.acquire_for(5s);
            EXPECT_TRUE(l);
        });
        if (round % 2 == 0) std::this_thread::yield();
        held.discard();
        waiter.join();
    }
    EXPECT_EQ(pool.stats().timeouts, 0u);
}

// Bug 6: try_acquire() busy-looped while another thread's create() ran. The old pool handed
// freed capacity to waiters as tickets through the idle queue: while a waiter created from one
// ticket, a second discard left another ticket in the queue, which try_acquire() popped and
// pushed back (a waiter was still counted) until that create ended.
TEST(PoolRegression, try_acquire_returns_while_another_thread_creates) {
    FakeFactory f;
    f.create_delay = 300ms;
    FakePool pool{f, foreground(2)};
    auto first = pool.acquire();
    auto second = pool.acquire();
    std::thread waiter([&] {
        auto l = pool.acquire_for(5s);
        EXPECT_TRUE(l);
    });
    ASSERT_TRUE(eventually([&] { return pool.stats().waiting == 1; }));
    first.discard(); // capacity for the waiter: a create starts and runs 300 ms
    ASSERT_TRUE(eventually([&] { return f.registry->creating_now.load() == 1; }));
    second.discard(); // more capacity, freed while that create runs
    const auto cpu = process_cpu_time();
    EXPECT_FALSE(pool.try_acquire().has_value());
    EXPECT_EQ(f.registry->creating_now.load(), 1) << "it returned only after the create";
    EXPECT_LT(process_cpu_time() - cpu, 100ms);
    waiter.join();
}

// Bug 7: connections created by the min_idle top-up skipped validation on their first hand-out
// however long they sat idle (exactly the ones a server's idle timeout kills).
TEST(PoolRegression, min_idle_connections_are_validated_after_sitting_idle) {
    FakeFactory f;
    auto o = foreground(2);
    o.min_idle = 1;
    o.idle_timeout = 0ms;
    o.max_lifetime = 0ms;
    o.validate_after_idle = 1s;
    ClockedPool pool{f, o};
    pool.maintain();
    ASSERT_EQ(pool.stats().idle, 1u);
    ManualClock::advance(10min);
    f.all_unhealthy->store(true); // the server dropped it meanwhile
    {
        auto l = pool.acquire();
        EXPECT_EQ(f.registry->validate_calls.load(), 1u);
        EXPECT_EQ(l->id(), 2u) << "the dead one was replaced";
    }
    f.all_unhealthy->store(false);
    EXPECT_EQ(pool.stats().validation_failures, 1u);
}

// Bug 8: during a slow validate(), maintenance saw the previous lease's hand-out time and call
// site: a false leak report naming the wrong code, and a stale "held by" in AcquireTimeout.
TEST(PoolRegression, a_slow_validation_is_neither_a_leak_nor_a_holder) {
    GatedValidateFactory f;
    connpool::PoolOptions o;
    o.max_size = 1;
    o.maintenance_interval = 0ms;
    o.idle_timeout = 0ms;
    o.max_lifetime = 0ms;
    o.leak_threshold = 1s;
    o.validate_after_idle = 0ms;
    std::atomic<int> leaks{0};
    o.on_event = [&](const connpool::PoolEvent& e) {
        if (e.kind == connpool::PoolEventKind::leak) leaks.fetch_add(1);
    };
    connpool::Pool<int, GatedValidateFactory, ManualClock> pool{f, o};
    { auto first = pool.acquire(); } // the previous lease, long over
    ManualClock::advance(1h);
    std::thread validating([&] { auto l = pool.acquire(); });
    {
        std::unique_lock lock(f.gate->m);
        f.gate->cv.wait(lock, [&] { return f.gate->validating; });
    }
    pool.maintain();
    EXPECT_EQ(leaks.load(), 0) << "the lease that ended an hour ago was reported";
    try {
        (void)pool.acquire_for(0ms);
        ADD_FAILURE() << "expected AcquireTimeout";
    } catch (const connpool::AcquireTimeout& e) {
        EXPECT_EQ(std::string(e.what()).find("held by"), std::string::npos) << e.what();
    }
    {
        std::lock_guard lock(f.gate->m);
        f.gate->open = true;
    }
    f.gate->cv.notify_all();
    validating.join();
}

// Bug 9: min_idle and idle_timeout fought: with leases held, every pass destroyed idle
// connections and the same pass recreated them.
TEST(PoolRegression, idle_timeout_keeps_min_idle_idle_connections_while_others_are_leased) {
    FakeFactory f;
    auto o = foreground(4);
    o.min_idle = 2;
    o.idle_timeout = 1min;
    o.max_lifetime = 0ms;
    ClockedPool pool{f, o};
    std::vector<connpool::Lease<FakeConnection>> leases;
    for (int i = 0; i < 4; ++i) leases.push_back(pool.acquire());
    leases.resize(2); // two back, two still held
    ASSERT_EQ(pool.stats().idle, 2u);
    for (int pass = 0; pass < 3; ++pass) {
        ManualClock::advance(2min);
        pool.maintain();
    }
    EXPECT_EQ(pool.stats().destroyed, 0u);
    EXPECT_EQ(f.registry->created.load(), 4u);
    EXPECT_EQ(pool.stats().idle, 2u);
}

// Weakness: acquire_for(100ms) returned after 1 s because a slow create() ran past its deadline.
// Now it returns at its deadline, and the connection, once made, is idle for the next acquire.
TEST(PoolRegression, acquire_returns_by_its_deadline_while_a_slow_create_runs_on) {
    FakeFactory f;
    f.create_delay = 1s;
    FakePool pool{f, foreground(1)};
    EXPECT_THROW((void)pool.acquire_for(100ms), connpool::AcquireTimeout);
    EXPECT_EQ(f.registry->creating_now.load(), 1) << "it waited for the create";
    ASSERT_TRUE(eventually([&] { return pool.stats().idle == 1; }));
    auto l = pool.try_acquire();
    ASSERT_TRUE(l.has_value());
    EXPECT_EQ((*l)->id(), 1u);
}

// Weakness: the `released` event fired before the connection was back.
TEST(PoolRegression, released_event_sees_the_connection_back_in_the_pool) {
    FakeFactory f;
    auto o = foreground(1);
    std::atomic<FakePool*> self{nullptr};
    std::atomic<int> idle_when_released{-1};
    o.on_event = [&](const connpool::PoolEvent& e) {
        if (e.kind != connpool::PoolEventKind::released) return;
        if (FakePool* p = self.load()) idle_when_released.store(static_cast<int>(p->stats().idle));
    };
    FakePool pool{f, o};
    self.store(&pool);
    { auto l = pool.acquire(); }
    EXPECT_EQ(idle_when_released.load(), 1);
}

// Found by the pool fuzzer's strict rest check (open 1 != idle 0 + in_use 0 right after the
// pool looked at rest): stats() read `open` and `creating` at different moments, and a
// creation ending in between was counted in neither (or in both). Each snapshot now takes the
// two together, so open + creating never exceeds max_size while nothing is resized.
TEST(PoolRegression, stats_count_a_creation_that_is_ending_exactly_once) {
    FakeFactory factory;
    FakePool pool(factory, foreground(1));
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> torn{0};
    std::thread watcher([&] {
        while (!stop.load(std::memory_order_relaxed)) {
            const connpool::PoolStats st = pool.stats();
            if (st.open + st.creating > st.max_size) torn.fetch_add(1, std::memory_order_relaxed);
        }
    });
    for (int i = 0; i < 20'000 && torn.load(std::memory_order_relaxed) == 0; ++i) {
        pool.acquire().discard(); // each cycle creates a connection on a creator thread
    }
    stop = true;
    watcher.join();
    EXPECT_EQ(torn.load(), 0u) << "a stats() snapshot counted one connection as open and as being created";
}
