#include <connpool/lease.hpp>
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>
#include <type_traits>

#include "counting_connection.hpp"
#include "manual_clock.hpp"

using namespace std::chrono_literals;
using connpool::Lease;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;
using connpool::testing::ManualClock;

namespace {
connpool::PoolOptions small() {
    connpool::PoolOptions o;
    o.max_size = 2;
    o.maintenance_interval = 0ms;
    return o;
}
} // namespace

static_assert(!std::is_copy_constructible_v<Lease<FakeConnection>>);
static_assert(!std::is_copy_assignable_v<Lease<FakeConnection>>);
static_assert(std::is_nothrow_move_constructible_v<Lease<FakeConnection>>);
static_assert(std::is_nothrow_move_assignable_v<Lease<FakeConnection>>);

TEST(Lease, DefaultConstructedLeaseIsEmpty) {
    Lease<FakeConnection> lease;
    EXPECT_FALSE(lease);
    EXPECT_EQ(lease.get(), nullptr);
    EXPECT_EQ(lease.held_for(), 0ns);
    lease.release(); // no-op
    lease.discard(); // no-op
}

TEST(Lease, GivesAccessThroughArrowStarAndGet) {
    FakeFactory f;
    connpool::Pool pool{f, small()};
    auto lease = pool.acquire();
    EXPECT_EQ(lease->id(), 1u);
    EXPECT_EQ((*lease).id(), 1u);
    EXPECT_EQ(lease.get()->id(), 1u);
    EXPECT_TRUE(lease);
}

TEST(Lease, DestructionReturnsTheConnection) {
    FakeFactory f;
    connpool::Pool pool{f, small()};
    { auto lease = pool.acquire(); }
    EXPECT_EQ(pool.stats().idle, 1u);
}

TEST(Lease, ReleaseReturnsNowAndEmptiesTheLease) {
    FakeFactory f;
    connpool::Pool pool{f, small()};
    auto lease = pool.acquire();
    lease.release();
    EXPECT_FALSE(lease);
    EXPECT_EQ(pool.stats().in_use, 0u);
    lease.release(); // twice is harmless
    EXPECT_EQ(pool.stats().acquired, 1u);
}

TEST(Lease, MovedFromLeaseReturnsNothing) {
    FakeFactory f;
    connpool::Pool pool{f, small()};
    auto a = pool.acquire();
    Lease<FakeConnection> b = std::move(a);
    EXPECT_FALSE(a); // NOLINT(bugprone-use-after-move): the contract under test
    a.release();
    EXPECT_EQ(pool.stats().in_use, 1u);
    b.release();
    EXPECT_EQ(pool.stats().in_use, 0u);
}

TEST(Lease, MoveAssignmentReturnsTheConnectionItHeld) {
    FakeFactory f;
    connpool::Pool pool{f, small()};
    auto a = pool.acquire();
    auto b = pool.acquire();
    a = std::move(b);
    EXPECT_EQ(a->id(), 2u);
    EXPECT_EQ(pool.stats().in_use, 1u);
}

TEST(Lease, CanBeMovedToAnotherThreadAndReturnedThere) {
    FakeFactory f;
    connpool::Pool pool{f, small()};
    auto lease = pool.acquire();
    std::thread([l = std::move(lease)]() mutable { l->uses++; }).join();
    EXPECT_EQ(pool.stats().in_use, 0u);
    EXPECT_EQ(pool.stats().idle, 1u);
}

TEST(Lease, HeldForMeasuresTheHoldWithThePoolClock) {
    FakeFactory f;
    connpool::Pool<FakeConnection, FakeFactory, ManualClock> pool{f, small()};
    auto lease = pool.acquire();
    ManualClock::advance(1500ms);
    EXPECT_EQ(lease.held_for(), 1500ms);
}

TEST(Lease, DiscardDestroysTheConnection) {
    FakeFactory f;
    connpool::Pool pool{f, small()};
    auto lease = pool.acquire();
    lease.discard();
    EXPECT_FALSE(lease);
    EXPECT_EQ(f.registry->alive_count(), 0u);
}
