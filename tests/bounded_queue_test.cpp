#include <connpool/bounded_queue.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <latch>  // "this thread is about to call the blocking member"
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using connpool::BoundedBlockingQueue;
using connpool::QueueOrder;
using ::testing::AllOf;
using ::testing::ContainsRegex;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Optional;
using ::testing::Pointee;
using ::testing::ThrowsMessage;

// Time for a thread that has signalled "about to call a blocking member" to block in it.
// Only the waiters-are-served-in-arrival-order test needs it to be long enough; everywhere
// else a thread that has not blocked yet merely makes the test check less, never fail.
constexpr auto kTimeToBlock = 30ms;

void let_other_thread_block() { std::this_thread::sleep_for(kTimeToBlock); }

// Pops every stored element without blocking, in the order the queue hands them out.
template <class Queue>
auto drain(Queue& queue) {
    std::vector<std::decay_t<decltype(*queue.try_pop())>> out;
    while (auto item = queue.try_pop()) out.push_back(std::move(*item));
    return out;
}

// A move-only type without a default constructor: the ring must not need either.
class MoveOnly {
public:
    explicit MoveOnly(int value) : value_(value) {}
    MoveOnly(MoveOnly&&) noexcept = default;
    MoveOnly& operator=(MoveOnly&&) noexcept = default;
    MoveOnly(const MoveOnly&) = delete;
    MoveOnly& operator=(const MoveOnly&) = delete;
    ~MoveOnly() = default;

    [[nodiscard]] int value() const { return value_; }

private:
    int value_;
};

// ---- construction -----------------------------------------------------------

TEST(BoundedBlockingQueue, ConstructorRejectsCapacityZeroNamingTheValue) {
    EXPECT_THAT([] { BoundedBlockingQueue<int> queue(0); },
                ThrowsMessage<std::invalid_argument>(
                    AllOf(HasSubstr("capacity"), ContainsRegex("(^|[^0-9])0([^0-9]|$)"))));
}

TEST(BoundedBlockingQueue, CapacityReportsTheConstructorArgument) {
    const BoundedBlockingQueue<int> one(1);
    const BoundedBlockingQueue<std::string> many(1000);
    EXPECT_EQ(one.capacity(), 1U);
    EXPECT_EQ(many.capacity(), 1000U);
}

TEST(BoundedBlockingQueue, NewQueueIsEmptyAndOpen) {
    BoundedBlockingQueue<int> queue(4);
    EXPECT_EQ(queue.size(), 0U);
    EXPECT_FALSE(queue.closed());
    EXPECT_EQ(queue.try_pop(), std::nullopt);
}

// ---- order ------------------------------------------------------------------

TEST(BoundedBlockingQueue, PopReturnsElementsInFifoOrder) {
    BoundedBlockingQueue<int> queue(4);
    for (int i = 1; i <= 4; ++i) ASSERT_TRUE(queue.push(i));
    EXPECT_THAT(queue.pop(), Optional(1));
    EXPECT_THAT(queue.try_pop(), Optional(2));
    EXPECT_THAT(queue.pop_for(0ms), Optional(3));
    EXPECT_THAT(queue.pop_until(std::chrono::steady_clock::now()), Optional(4));
}

TEST(BoundedBlockingQueue, LifoQueuePopsTheNewestElementFirst) {
    BoundedBlockingQueue<int, QueueOrder::lifo> queue(4);
    for (int i = 1; i <= 4; ++i) ASSERT_TRUE(queue.push(i));
    EXPECT_THAT(queue.pop(), Optional(4));
    EXPECT_THAT(queue.try_pop(), Optional(3));
    ASSERT_TRUE(queue.push(5));
    EXPECT_THAT(queue.pop_for(0ms), Optional(5));
    EXPECT_THAT(queue.pop_until(std::chrono::steady_clock::now()), Optional(2));
    EXPECT_THAT(queue.pop(), Optional(1));
}

TEST(BoundedBlockingQueue, FifoOrderHoldsWhenTheRingWrapsAround) {
    BoundedBlockingQueue<int> queue(3);
    std::vector<int> popped;
    int next = 0;
    ASSERT_TRUE(queue.try_push(next++));
    ASSERT_TRUE(queue.try_push(next++));
    for (int round = 0; round < 10; ++round) {  // head_ walks around the ring several times
        ASSERT_TRUE(queue.try_push(next++));
        auto item = queue.try_pop();
        ASSERT_TRUE(item.has_value());
        popped.push_back(*item);
    }
    for (int value : drain(queue)) popped.push_back(value);
    ASSERT_EQ(popped.size(), 12U);
    for (std::size_t i = 0; i < popped.size(); ++i) EXPECT_EQ(popped[i], static_cast<int>(i));
}

TEST(BoundedBlockingQueue, LifoQueueInterleavingPushesAndPopsAlwaysPopsTheNewest) {
    BoundedBlockingQueue<int, QueueOrder::lifo> queue(3);
    for (int round = 0; round < 5; ++round) {
        ASSERT_TRUE(queue.try_push(round * 10 + 1));
        ASSERT_TRUE(queue.try_push(round * 10 + 2));
        EXPECT_THAT(queue.try_pop(), Optional(round * 10 + 2));
        ASSERT_TRUE(queue.try_push(round * 10 + 3));
        EXPECT_THAT(queue.try_pop(), Optional(round * 10 + 3));
        EXPECT_THAT(queue.try_pop(), Optional(round * 10 + 1));
    }
    for (int i = 1; i <= 3; ++i) ASSERT_TRUE(queue.try_push(i));
    EXPECT_THAT(drain(queue), ElementsAre(3, 2, 1));
}

// ---- push / try_push ----------------------------------------------------------

TEST(BoundedBlockingQueue, TryPushFailsWhenFullAndLeavesTheValueUntouched) {
    BoundedBlockingQueue<std::unique_ptr<int>> queue(2);
    ASSERT_TRUE(queue.try_push(std::make_unique<int>(1)));
    ASSERT_TRUE(queue.try_push(std::make_unique<int>(2)));

    auto value = std::make_unique<int>(3);
    EXPECT_FALSE(queue.try_push(std::move(value)));
    EXPECT_THAT(value, Pointee(3));  // not moved from
    EXPECT_EQ(queue.size(), 2U);

    EXPECT_THAT(queue.try_pop(), Optional(Pointee(1)));
    EXPECT_TRUE(queue.try_push(std::move(value)));
    EXPECT_THAT(queue.try_pop(), Optional(Pointee(2)));
    EXPECT_THAT(queue.try_pop(), Optional(Pointee(3)));
}

TEST(BoundedBlockingQueue, CopyingOverloadsLeaveTheArgumentIntact) {
    BoundedBlockingQueue<std::string> queue(2);
    const std::string first = "first, long enough to live on the heap";
    const std::string second = "second, long enough to live on the heap";
    EXPECT_TRUE(queue.push(first));
    EXPECT_TRUE(queue.try_push(second));
    EXPECT_FALSE(queue.try_push(first));  // full
    EXPECT_EQ(first, "first, long enough to live on the heap");
    EXPECT_EQ(second, "second, long enough to live on the heap");
    EXPECT_THAT(drain(queue), ElementsAre(first, second));
}

TEST(BoundedBlockingQueue, PushBlocksWhileFullUntilAPopMakesRoom) {
    BoundedBlockingQueue<int> queue(1);
    ASSERT_TRUE(queue.push(1));

    std::latch about_to_push(1);
    std::atomic<bool> push_returned{false};
    bool pushed = false;
    std::jthread pusher([&] {
        about_to_push.count_down();
        pushed = queue.push(2);
        push_returned = true;
    });
    about_to_push.wait();
    let_other_thread_block();
    EXPECT_FALSE(push_returned) << "push() returned while the queue was full";
    EXPECT_EQ(queue.size(), 1U);

    EXPECT_THAT(queue.pop(), Optional(1));
    pusher.join();
    EXPECT_TRUE(pushed);
    EXPECT_THAT(drain(queue), ElementsAre(2));
}

// ---- pop / try_pop / pop_for / pop_until ------------------------------------

TEST(BoundedBlockingQueue, TryPopOnAnEmptyQueueReturnsNullopt) {
    BoundedBlockingQueue<int> queue(2);
    EXPECT_EQ(queue.try_pop(), std::nullopt);
    ASSERT_TRUE(queue.push(1));
    EXPECT_THAT(queue.try_pop(), Optional(1));
    EXPECT_EQ(queue.try_pop(), std::nullopt);
}

TEST(BoundedBlockingQueue, PopForTimesOutWithNulloptAfterAtLeastTheTimeout) {
    BoundedBlockingQueue<int> queue(2);
    constexpr auto timeout = 50ms;
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(queue.pop_for(timeout), std::nullopt);
    EXPECT_GE(std::chrono::steady_clock::now() - start, timeout);
    EXPECT_EQ(queue.size(), 0U);
}

TEST(BoundedBlockingQueue, PopUntilTimesOutWithNulloptNotBeforeTheDeadline) {
    BoundedBlockingQueue<int> queue(2);
    const auto deadline = std::chrono::steady_clock::now() + 50ms;
    EXPECT_EQ(queue.pop_until(deadline), std::nullopt);
    EXPECT_GE(std::chrono::steady_clock::now(), deadline);
}

TEST(BoundedBlockingQueue, PopForWithAnExpiredTimeoutStillReturnsAStoredElement) {
    BoundedBlockingQueue<int> queue(2);
    ASSERT_TRUE(queue.push(7));
    EXPECT_THAT(queue.pop_for(-1s), Optional(7));
    EXPECT_EQ(queue.pop_for(-1s), std::nullopt);
    EXPECT_EQ(queue.pop_until(std::chrono::steady_clock::time_point{}), std::nullopt);
}

TEST(BoundedBlockingQueue, PopBlocksUntilAPushHandsItTheElement) {
    BoundedBlockingQueue<std::unique_ptr<int>> queue(1);
    std::latch about_to_pop(1);
    std::atomic<bool> pop_returned{false};
    std::optional<std::unique_ptr<int>> got;
    std::jthread popper([&] {
        about_to_pop.count_down();
        got = queue.pop();
        pop_returned = true;
    });
    about_to_pop.wait();
    let_other_thread_block();
    EXPECT_FALSE(pop_returned) << "pop() returned from an empty, open queue";

    EXPECT_TRUE(queue.push(std::make_unique<int>(42)));
    popper.join();
    EXPECT_THAT(got, Optional(Pointee(42)));
    EXPECT_EQ(queue.size(), 0U);
}

TEST(BoundedBlockingQueue, PopForReturnsAnElementPushedWhileItWaits) {
    BoundedBlockingQueue<int> queue(1);
    std::latch about_to_pop(1);
    std::optional<int> got;
    std::jthread popper([&] {
        about_to_pop.count_down();
        got = queue.pop_for(1h);
    });
    about_to_pop.wait();
    let_other_thread_block();
    EXPECT_TRUE(queue.push(5));
    popper.join();
    EXPECT_THAT(got, Optional(5));
}

TEST(BoundedBlockingQueue, WaitingPoppersAreServedInArrivalOrder) {
    constexpr std::size_t kPoppers = 5;
    // lifo so that a wrong answer cannot come from the order of stored elements either.
    BoundedBlockingQueue<int, QueueOrder::lifo> queue(1);
    std::array<std::optional<int>, kPoppers> got;
    std::atomic<std::size_t> started{0};
    std::vector<std::jthread> poppers;
    for (std::size_t k = 0; k < kPoppers; ++k) {
        poppers.emplace_back([&, k] {
            started.fetch_add(1);
            // Alternate the kinds of waiter: both share one queue of waiters.
            got[k] = (k % 2 == 0) ? queue.pop() : queue.pop_for(1h);
        });
        while (started.load() <= k) std::this_thread::yield();
        let_other_thread_block();  // popper k must be waiting before popper k + 1 arrives
    }
    for (std::size_t k = 0; k < kPoppers; ++k) {
        ASSERT_TRUE(queue.push(static_cast<int>(k)));
    }
    for (auto& popper : poppers) popper.join();
    for (std::size_t k = 0; k < kPoppers; ++k) {
        EXPECT_THAT(got[k], Optional(static_cast<int>(k))) << "popper " << k;
    }
    EXPECT_EQ(queue.size(), 0U);
}

// ---- close ------------------------------------------------------------------

TEST(BoundedBlockingQueue, CloseWakesBlockedPoppersWithNullopt) {
    constexpr std::size_t kPoppers = 3;
    BoundedBlockingQueue<int> queue(2);
    std::latch about_to_pop(kPoppers);
    std::atomic<std::size_t> returned{0};
    std::array<std::optional<int>, kPoppers> got;
    std::vector<std::jthread> poppers;
    for (std::size_t k = 0; k < kPoppers; ++k) {
        got[k] = -1;  // so a nullopt result is a real result
        poppers.emplace_back([&, k] {
            about_to_pop.count_down();
            got[k] = (k == 0) ? queue.pop_for(1h) : queue.pop();
            returned.fetch_add(1);
        });
    }
    about_to_pop.wait();
    let_other_thread_block();
    EXPECT_EQ(returned.load(), 0U) << "a popper returned from an empty, open queue";

    queue.close();
    for (auto& popper : poppers) popper.join();
    for (std::size_t k = 0; k < kPoppers; ++k) EXPECT_EQ(got[k], std::nullopt) << "popper " << k;
}

TEST(BoundedBlockingQueue, CloseWakesBlockedPushersWithFalseLeavingTheirValues) {
    constexpr std::size_t kPushers = 2;
    BoundedBlockingQueue<std::unique_ptr<int>> queue(1);
    ASSERT_TRUE(queue.push(std::make_unique<int>(0)));

    std::latch about_to_push(kPushers);
    std::atomic<std::size_t> returned{0};
    std::array<bool, kPushers> pushed{true, true};
    std::array<std::unique_ptr<int>, kPushers> values{std::make_unique<int>(1),
                                                      std::make_unique<int>(2)};
    std::vector<std::jthread> pushers;
    for (std::size_t k = 0; k < kPushers; ++k) {
        pushers.emplace_back([&, k] {
            about_to_push.count_down();
            pushed[k] = queue.push(std::move(values[k]));
            returned.fetch_add(1);
        });
    }
    about_to_push.wait();
    let_other_thread_block();
    EXPECT_EQ(returned.load(), 0U) << "a pusher returned while the queue was full";

    queue.close();
    for (auto& pusher : pushers) pusher.join();
    EXPECT_FALSE(pushed[0]);
    EXPECT_FALSE(pushed[1]);
    EXPECT_THAT(values[0], Pointee(1));
    EXPECT_THAT(values[1], Pointee(2));
    EXPECT_THAT(queue.try_pop(), Optional(Pointee(0)));  // stored before close
    EXPECT_EQ(queue.try_pop(), std::nullopt);
}

TEST(BoundedBlockingQueue, ElementsStoredBeforeCloseCanStillBePopped) {
    BoundedBlockingQueue<int> queue(4);
    for (int i = 1; i <= 4; ++i) ASSERT_TRUE(queue.push(i));
    queue.close();
    EXPECT_EQ(queue.size(), 4U);
    EXPECT_THAT(queue.pop(), Optional(1));
    EXPECT_THAT(queue.try_pop(), Optional(2));
    EXPECT_THAT(queue.pop_for(1h), Optional(3));
    EXPECT_THAT(queue.pop_until(std::chrono::steady_clock::time_point::max()), Optional(4));
    // Closed and empty: every kind of pop returns at once.
    EXPECT_EQ(queue.pop(), std::nullopt);
    EXPECT_EQ(queue.pop_for(1h), std::nullopt);
    EXPECT_EQ(queue.try_pop(), std::nullopt);
}

TEST(BoundedBlockingQueue, PushAfterCloseReturnsFalseLeavingTheValue) {
    BoundedBlockingQueue<std::unique_ptr<int>> queue(4);
    queue.close();
    auto value = std::make_unique<int>(9);
    EXPECT_FALSE(queue.push(std::move(value)));
    EXPECT_FALSE(queue.try_push(std::move(value)));
    EXPECT_THAT(value, Pointee(9));
    EXPECT_EQ(queue.size(), 0U);

    BoundedBlockingQueue<std::string> strings(1);
    strings.close();
    const std::string text = "text";
    EXPECT_FALSE(strings.push(text));
    EXPECT_FALSE(strings.try_push(text));
}

TEST(BoundedBlockingQueue, CloseIsIdempotent) {
    BoundedBlockingQueue<int> queue(2);
    ASSERT_TRUE(queue.push(1));
    queue.close();
    queue.close();
    EXPECT_TRUE(queue.closed());
    EXPECT_FALSE(queue.push(2));
    queue.close();
    EXPECT_THAT(drain(queue), ElementsAre(1));
    EXPECT_EQ(queue.pop(), std::nullopt);
}

// ---- size -------------------------------------------------------------------

TEST(BoundedBlockingQueue, SizeCountsStoredElements) {
    BoundedBlockingQueue<int> queue(3);
    EXPECT_EQ(queue.size(), 0U);
    ASSERT_TRUE(queue.push(1));
    EXPECT_EQ(queue.size(), 1U);
    ASSERT_TRUE(queue.try_push(2));
    ASSERT_TRUE(queue.try_push(3));
    EXPECT_EQ(queue.size(), 3U);
    EXPECT_FALSE(queue.try_push(4));
    EXPECT_EQ(queue.size(), 3U);
    ASSERT_TRUE(queue.pop());
    EXPECT_EQ(queue.size(), 2U);
    EXPECT_THAT(queue.extract_if([](int v) { return v == 3; }), ElementsAre(3));
    EXPECT_EQ(queue.size(), 1U);
    ASSERT_TRUE(queue.try_pop());
    EXPECT_EQ(queue.size(), 0U);
    EXPECT_EQ(queue.capacity(), 3U);
}

// ---- extract_if -------------------------------------------------------------

TEST(BoundedBlockingQueue, ExtractIfRemovesMatchesOldestFirstAndKeepsTheRestInOrder) {
    BoundedBlockingQueue<int> queue(6);
    // Move head_ off slot 0 so the stored elements wrap around the end of the ring.
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(queue.push(-1));
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(queue.pop());
    for (int i = 1; i <= 6; ++i) ASSERT_TRUE(queue.push(i));

    EXPECT_THAT(queue.extract_if([](int v) { return v % 2 == 0; }), ElementsAre(2, 4, 6));
    EXPECT_EQ(queue.size(), 3U);
    // The freed slots are usable and new elements go after the kept ones.
    ASSERT_TRUE(queue.try_push(7));
    EXPECT_THAT(drain(queue), ElementsAre(1, 3, 5, 7));
}

TEST(BoundedBlockingQueue, ExtractIfOnALifoQueueReturnsOldestFirstAndKeepsLifoOrder) {
    BoundedBlockingQueue<int, QueueOrder::lifo> queue(5);
    for (int i = 1; i <= 5; ++i) ASSERT_TRUE(queue.push(i));
    EXPECT_THAT(queue.extract_if([](int v) { return v == 2 || v == 5; }), ElementsAre(2, 5));
    ASSERT_TRUE(queue.push(6));
    EXPECT_THAT(drain(queue), ElementsAre(6, 4, 3, 1));
}

TEST(BoundedBlockingQueue, ExtractIfWithNoMatchOrEverythingMatching) {
    BoundedBlockingQueue<int> queue(3);
    EXPECT_THAT(queue.extract_if([](int) { return true; }), IsEmpty());  // empty queue
    for (int i = 1; i <= 3; ++i) ASSERT_TRUE(queue.push(i));
    EXPECT_THAT(queue.extract_if([](int) { return false; }), IsEmpty());
    EXPECT_EQ(queue.size(), 3U);
    EXPECT_THAT(queue.extract_if([](int) { return true; }), ElementsAre(1, 2, 3));
    EXPECT_EQ(queue.size(), 0U);
    EXPECT_EQ(queue.try_pop(), std::nullopt);
    for (int i = 4; i <= 6; ++i) ASSERT_TRUE(queue.try_push(i));
    EXPECT_THAT(drain(queue), ElementsAre(4, 5, 6));
}

TEST(BoundedBlockingQueue, ExtractIfPassesEachStoredElementToThePredicateOnce) {
    BoundedBlockingQueue<int> queue(4);
    for (int i = 1; i <= 4; ++i) ASSERT_TRUE(queue.push(i * 10));
    std::vector<int> seen;
    (void)queue.extract_if([&](const int& v) {
        seen.push_back(v);
        return v == 20;
    });
    EXPECT_THAT(seen, ElementsAre(10, 20, 30, 40));
}

TEST(BoundedBlockingQueue, ExtractIfFreesRoomForABlockedPusher) {
    BoundedBlockingQueue<int> queue(4);
    for (int i = 1; i <= 4; ++i) ASSERT_TRUE(queue.push(i));

    std::latch about_to_push(1);
    std::atomic<bool> push_returned{false};
    bool pushed = false;
    std::jthread pusher([&] {
        about_to_push.count_down();
        pushed = queue.push(5);
        push_returned = true;
    });
    about_to_push.wait();
    let_other_thread_block();
    EXPECT_FALSE(push_returned) << "push() returned while the queue was full";

    EXPECT_THAT(queue.extract_if([](int v) { return v % 2 == 0; }), ElementsAre(2, 4));
    pusher.join();
    EXPECT_TRUE(pushed);
    EXPECT_THAT(drain(queue), ElementsAre(1, 3, 5));
}

// ---- element types ------------------------------------------------------------

TEST(BoundedBlockingQueue, MoveOnlyElementTypesWork) {
    BoundedBlockingQueue<MoveOnly> queue(3);
    EXPECT_TRUE(queue.push(MoveOnly(1)));
    MoveOnly two(2);
    EXPECT_TRUE(queue.try_push(std::move(two)));
    EXPECT_TRUE(queue.push(MoveOnly(3)));

    auto taken = queue.extract_if([](const MoveOnly& m) { return m.value() == 2; });
    ASSERT_EQ(taken.size(), 1U);
    EXPECT_EQ(taken[0].value(), 2);

    std::optional<MoveOnly> first = queue.pop();
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->value(), 1);
    std::optional<MoveOnly> second = queue.pop_for(0ms);
    ASSERT_TRUE(second.has_value());
    EXPECT_EQ(second->value(), 3);

    // Hand-off to a waiting popper moves the element too.
    std::latch about_to_pop(1);
    std::optional<MoveOnly> handed;
    std::jthread popper([&] {
        about_to_pop.count_down();
        handed = queue.pop();
    });
    about_to_pop.wait();
    let_other_thread_block();
    EXPECT_TRUE(queue.push(MoveOnly(4)));
    popper.join();
    ASSERT_TRUE(handed.has_value());
    EXPECT_EQ(handed->value(), 4);
}

TEST(BoundedBlockingQueue, ElementsAreDestroyedWithTheQueue) {
    auto shared = std::make_shared<int>(0);
    {
        BoundedBlockingQueue<std::shared_ptr<int>> queue(3);
        ASSERT_TRUE(queue.push(shared));
        ASSERT_TRUE(queue.push(shared));
        EXPECT_EQ(shared.use_count(), 3);
        ASSERT_TRUE(queue.try_pop());
        EXPECT_EQ(shared.use_count(), 2);  // a popped element leaves no copy behind
    }
    EXPECT_EQ(shared.use_count(), 1);
}

}  // namespace

namespace {

TEST(BoundedBlockingQueue, PopForWithTheLargestTimeoutWaitsForAnElement) {
    BoundedBlockingQueue<int> queue(1);
    std::latch about_to_pop(1);
    std::optional<int> got;
    std::thread popper([&] {
        about_to_pop.count_down();
        got = queue.pop_for(std::chrono::nanoseconds::max());
    });
    about_to_pop.wait();
    std::this_thread::sleep_for(30ms);
    ASSERT_TRUE(queue.push(1));
    popper.join();
    EXPECT_THAT(got, Optional(1));
}

TEST(BoundedBlockingQueue, PopForAcceptsFractionalDurations) {
    BoundedBlockingQueue<int> queue(1);
    EXPECT_EQ(queue.pop_for(std::chrono::duration<double>(0.001)), std::nullopt);
}

TEST(BoundedBlockingQueue, ExtractIfWithAThrowingPredicateLeavesTheQueueIntact) {
    BoundedBlockingQueue<int> queue(4);
    for (int i = 1; i <= 4; ++i) ASSERT_TRUE(queue.push(i));
    EXPECT_THROW(queue.extract_if([](int v) {
                     if (v == 3) throw std::runtime_error("predicate failed");
                     return v == 1;
                 }),
                 std::runtime_error);
    std::vector<int> left;
    while (auto item = queue.try_pop()) left.push_back(*item);
    EXPECT_THAT(left, ::testing::ElementsAre(1, 2, 3, 4));
}

TEST(BoundedBlockingQueue, ExtractIfWorksForElementsThatCannotBeAssigned) {
    struct Fixed {
        const int value;
    };
    BoundedBlockingQueue<Fixed> queue(3);
    for (int i = 1; i <= 3; ++i) ASSERT_TRUE(queue.push(Fixed{i}));
    auto taken = queue.extract_if([](const Fixed& f) { return f.value == 1; });
    ASSERT_EQ(taken.size(), 1u);
    EXPECT_EQ(queue.try_pop()->value, 2);
}

} // namespace
