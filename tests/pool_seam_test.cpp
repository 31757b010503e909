// Interleavings forced through the pool's test seam (CONNPOOL_POOL_TEST_POINT): the thread that
// reaches a named point is held there while another gets into the position the race needs.
#include <string_view>

// Declared before the pool is included: the core calls it at its named points.
void pool_seam_test_point(std::string_view point);
#define CONNPOOL_POOL_TEST_POINT(point) ::pool_seam_test_point(point)

#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "counting_connection.hpp"
#include "eventually.hpp"

using namespace std::chrono_literals;
using connpool::testing::eventually;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;
using FakePool = connpool::Pool<FakeConnection, FakeFactory>;

namespace {

// Set by a test while only its own threads use the pool; read-only while they run.
std::function<void(std::string_view)> g_hook;

} // namespace

void pool_seam_test_point(std::string_view point) {
    if (g_hook) g_hook(point);
}

namespace {

struct ClearHook {
    ~ClearHook() { g_hook = nullptr; }
};

} // namespace

// Bug 5 of issue 7: a slot going vacant while a waiter prepared to sleep could be missed, and the
// waiter slept its whole timeout with nothing in use. The interleaving, forced: the discard is
// held just before its slot is freed; only then does the waiter arrive, find the pool full and
// register; it is held there until the slot has been freed, and only then looks for a
// connection and sleeps. The freed capacity must still reach it. (The old pool's vacate() read
// the waiter count, then made the slot vacant; with the same two points placed there and between
// the waiter's first look and its flagging sweep, this waiter slept until its deadline.)
TEST(PoolSeam, a_slot_freed_while_a_waiter_goes_to_sleep_reaches_the_waiter) {
    // Declared before the pool, so they outlive it: its destructor frees slots, and the hook
    // is cleared (ClearHook, declared after the pool) before that.
    std::atomic<bool> served{false};
    std::thread waiter;
    std::atomic<bool> freeing{false};   // the discard is held before freeing its slot
    std::atomic<bool> registered{false}; // the waiter is held after registering
    std::atomic<bool> freed{false};      // the discard went on to free the slot
    FakeFactory f;
    connpool::PoolOptions o;
    o.max_size = 1;
    o.maintenance_interval = 0ms;
    FakePool pool{f, o};
    const ClearHook clear;
    auto held = pool.acquire();
    g_hook = [&](std::string_view point) {
        if (point == "free_slot: about to vacate" && !freeing.exchange(true)) {
            waiter = std::thread([&] {
                try {
                    auto l = pool.acquire_for(60s);
                    served = static_cast<bool>(l);
                } catch (const connpool::PoolClosed&) {
                    // closed below after the guard: it was never served
                }
            });
            ASSERT_TRUE(eventually([&] { return registered.load(); }));
            freed = true;
        } else if (point == "acquire: registered as a waiter" && freeing.load() && !registered.exchange(true)) {
            ASSERT_TRUE(eventually([&] { return freed.load(); }));
            std::this_thread::sleep_for(20ms); // the discard frees the slot meanwhile
        }
    };
    held.discard();
    ASSERT_TRUE(freeing.load());
    // A liveness guard, far below the waiter's 60 s: it is served as soon as the creation that
    // the freed capacity allows has run, or it sleeps until its deadline.
    const bool in_time = eventually([&] { return served.load(); }, 10s);
    if (!in_time) pool.close();
    waiter.join();
    EXPECT_TRUE(registered.load());
    EXPECT_TRUE(in_time) << "the waiter slept through the freed capacity";
}
