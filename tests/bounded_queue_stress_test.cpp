#include <connpool/bounded_queue.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>   // std::fprintf: the hang report, printed just before aborting
#include <cstdlib>  // std::getenv, std::strtod (CONNPOOL_STRESS_SCALE), std::abort
#include <limits>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using connpool::BoundedBlockingQueue;
using connpool::QueueOrder;

constexpr int kProducers = 4;
constexpr int kConsumers = 4;
constexpr std::size_t kCapacity = 8;
// Items per scenario at scale 1; the whole file takes about 1.5 s in a normal
// build on two cores (the time goes into blocking and waking threads, not into the queue).
constexpr double kFifoItems = 200'000;
constexpr double kLifoItems = 50'000;
constexpr double kItemsBeforeClose = 50'000;  // received before close(), over both close tests
// Longer than any healthy run takes, even under ThreadSanitizer.
constexpr auto kHangLimit = 120s;

// Returns `items` times CONNPOOL_STRESS_SCALE (a positive float, default 1), at least 1.
int scaled(double items) {
    double scale = 1.0;
    if (const char* text = std::getenv("CONNPOOL_STRESS_SCALE")) {
        char* end = nullptr;
        const double parsed = std::strtod(text, &end);
        if (end != text && parsed > 0) scale = std::min(parsed, 1000.0);
    }
    return std::max(1, static_cast<int>(items * scale));
}

// Items each producer sends when the producers share `items` between them.
int items_per_producer(double items) { return std::max(1, scaled(items) / kProducers); }

// Threads that say when they finish, so a thread stuck in the queue is reported as such
// instead of hanging the test until ctest's timeout.
class ThreadGroup {
public:
    explicit ThreadGroup(std::string name) : name_(std::move(name)) {}

    template <class Fn>
    void spawn(Fn fn) {
        threads_.emplace_back([this, fn = std::move(fn)]() mutable {
            fn();
            finished_.fetch_add(1, std::memory_order_release);
        });
    }

    // Joins every thread; aborts with a message if some are still running after kHangLimit.
    void join() {
        const auto deadline = std::chrono::steady_clock::now() + kHangLimit;
        while (finished_.load(std::memory_order_acquire) < threads_.size()) {
            if (std::chrono::steady_clock::now() > deadline) {
                std::fprintf(stderr, "%zu of %zu %s threads still running after %llds: hung\n",
                             threads_.size() - finished_.load(), threads_.size(), name_.c_str(),
                             static_cast<long long>(kHangLimit.count()));
                std::abort();  // joining would hang too
            }
            std::this_thread::sleep_for(1ms);
        }
        for (auto& thread : threads_) thread.join();
    }

private:
    std::string name_;
    std::atomic<std::size_t> finished_{0};  // declared before threads_: outlives them
    std::vector<std::jthread> threads_;
};

// Sends producer `producer`'s items `producer * per_producer + seq`, seq ascending, through
// every kind of push. Returns how many pushes failed although the queue was open.
template <class Queue>
int produce_all(Queue& queue, int producer, int per_producer) {
    int failures = 0;
    for (int seq = 0; seq < per_producer; ++seq) {
        const int item = producer * per_producer + seq;
        switch (seq % 4) {
        case 0: failures += !queue.push(int{item}); break;
        case 1: failures += !queue.push(item); break;  // copying overload
        case 2:
            while (!queue.try_push(item)) std::this_thread::yield();
            break;
        default:
            if (!queue.try_push(item)) failures += !queue.push(item);
            break;
        }
    }
    return failures;
}

// Receives until the queue is closed and empty, through every kind of pop (and, if
// `extract`, an occasional extract_if). Returns the items in the order received.
template <class Queue>
std::vector<int> consume_all(Queue& queue, bool extract) {
    std::vector<int> got;
    for (unsigned i = 0;; ++i) {
        std::optional<int> item;
        switch (i % 4) {
        case 0:
            if (extract && i % 64 == 0) {
                for (int taken : queue.extract_if([](int v) { return v % 3 == 0; })) {
                    got.push_back(taken);
                }
            }
            item = queue.pop();
            if (!item) return got;  // closed and empty
            break;
        case 1: item = queue.pop_for(100us); break;
        case 2: item = queue.try_pop(); break;
        default:
            item = queue.pop_until(std::chrono::steady_clock::now() + 1ms);
            break;
        }
        if (item) got.push_back(*item);
    }
}

// Checks that `received` holds each of the `total` items exactly once.
void expect_each_item_exactly_once(const std::vector<std::vector<int>>& received, int total) {
    std::vector<int> count(static_cast<std::size_t>(total), 0);
    int out_of_range = 0;
    for (const auto& items : received) {
        for (int item : items) {
            if (item < 0 || item >= total) {
                ++out_of_range;
            } else {
                ++count[static_cast<std::size_t>(item)];
            }
        }
    }
    EXPECT_EQ(out_of_range, 0) << "items nobody pushed were popped";
    const auto lost = std::count(count.begin(), count.end(), 0);
    const auto duplicated = std::count_if(count.begin(), count.end(), [](int c) { return c > 1; });
    EXPECT_EQ(lost, 0) << "of " << total << " items, first lost: "
                       << (std::find(count.begin(), count.end(), 0) - count.begin());
    EXPECT_EQ(duplicated, 0) << "of " << total << " items";
}

template <QueueOrder Order>
std::vector<std::vector<int>> run_producers_and_consumers(int per_producer, bool extract) {
    BoundedBlockingQueue<int, Order> queue(kCapacity);
    std::vector<std::vector<int>> received(kConsumers);
    std::atomic<int> push_failures{0};

    ThreadGroup consumers("consumer");
    for (int c = 0; c < kConsumers; ++c) {
        consumers.spawn([&, c] {
            received[static_cast<std::size_t>(c)] = consume_all(queue, extract && c == 0);
        });
    }
    ThreadGroup producers("producer");
    for (int p = 0; p < kProducers; ++p) {
        producers.spawn([&, p] { push_failures += produce_all(queue, p, per_producer); });
    }
    producers.join();
    queue.close();  // consumers drain what is left, then their pop() returns nullopt
    consumers.join();

    EXPECT_EQ(push_failures.load(), 0) << "push() failed on an open queue";
    EXPECT_EQ(queue.size(), 0U);
    return received;
}

TEST(BoundedBlockingQueueStress, FifoQueueDeliversEveryItemOnceInEachProducersOrder) {
    const int per_producer = items_per_producer(kFifoItems);
    const auto received = run_producers_and_consumers<QueueOrder::fifo>(per_producer, false);
    expect_each_item_exactly_once(received, per_producer * kProducers);

    // Each consumer sees each producer's items in the order that producer pushed them.
    for (std::size_t c = 0; c < received.size(); ++c) {
        std::vector<int> last_seq(kProducers, -1);
        int out_of_order = 0;
        for (int item : received[c]) {
            const int producer = item / per_producer;
            const int seq = item % per_producer;
            if (producer < 0 || producer >= kProducers) continue;  // reported above
            if (seq <= last_seq[static_cast<std::size_t>(producer)]) {
                if (out_of_order++ == 0) {
                    ADD_FAILURE() << "consumer " << c << " got producer " << producer << "'s item "
                                  << seq << " after its item "
                                  << last_seq[static_cast<std::size_t>(producer)];
                }
            }
            last_seq[static_cast<std::size_t>(producer)] = seq;
        }
        EXPECT_EQ(out_of_order, 0) << "consumer " << c;
    }
}

TEST(BoundedBlockingQueueStress, LifoQueueWithExtractIfDeliversEveryItemOnce) {
    const int per_producer = items_per_producer(kLifoItems);
    const auto received = run_producers_and_consumers<QueueOrder::lifo>(per_producer, true);
    expect_each_item_exactly_once(received, per_producer * kProducers);
}

// Whether close-while-busy closes the queue at a moment when it holds items (so that some
// are left for the drain) or when it is empty (so that consumers are likely blocked in pop).
enum class CloseWhen { items_stored, queue_empty };

// Runs producers and consumers, closes the queue once `close_after` items were received, and
// checks that every thread returns and every accepted item comes out exactly once.
void close_while_busy(int close_after, CloseWhen when) {
    BoundedBlockingQueue<int> queue(kCapacity);
    std::vector<std::vector<int>> accepted(kProducers);
    std::vector<std::vector<int>> received(kConsumers);
    std::atomic<int> received_count{0};
    std::atomic<int> producers_stopped_by_close{0};

    // Producers push until the queue refuses an item because it is closed: they cannot run
    // out of items first, so close() always lands while they are busy.
    ThreadGroup producers("producer");
    for (int p = 0; p < kProducers; ++p) {
        producers.spawn([&, p] {
            auto& mine = accepted[static_cast<std::size_t>(p)];
            for (int seq = 0; seq < std::numeric_limits<int>::max() / kProducers; ++seq) {
                const int item = seq * kProducers + p;
                bool pushed = false;
                if (seq % 2 == 0) {
                    pushed = queue.push(item);
                } else {
                    while (!(pushed = queue.try_push(item)) && !queue.closed()) {
                        std::this_thread::yield();
                    }
                }
                if (!pushed) {
                    producers_stopped_by_close.fetch_add(1);
                    return;
                }
                mine.push_back(item);
            }
        });
    }
    ThreadGroup consumers("consumer");
    for (int c = 0; c < kConsumers; ++c) {
        consumers.spawn([&, c] {
            auto& mine = received[static_cast<std::size_t>(c)];
            for (unsigned i = 0;; ++i) {
                // Walk away once the queue is closed, leaving stored items to the drain below.
                if (queue.closed()) return;
                std::optional<int> item;
                if (i % 2 == 0) {
                    item = queue.pop();
                    if (!item) return;  // closed and empty
                } else {
                    item = queue.pop_for(200us);
                }
                if (item) {
                    mine.push_back(*item);
                    received_count.fetch_add(1, std::memory_order_relaxed);
                }
            }
        });
    }

    const auto give_up = std::chrono::steady_clock::now() + kHangLimit;
    while (received_count.load(std::memory_order_relaxed) < close_after) {
        if (std::chrono::steady_clock::now() > give_up) {
            ADD_FAILURE() << "only " << received_count.load() << " of " << close_after
                          << " items arrived before the time limit";
            break;  // close() below should still release every thread
        }
        std::this_thread::sleep_for(100us);
    }
    // Wait (a little, without asserting anything about it) for the preferred moment.
    for (int i = 0; i < 10'000 && (queue.size() == 0) == (when == CloseWhen::items_stored); ++i) {
        std::this_thread::yield();
    }
    queue.close();
    producers.join();
    consumers.join();
    EXPECT_EQ(producers_stopped_by_close.load(), kProducers);

    std::vector<int> drained;
    while (auto item = queue.try_pop()) drained.push_back(*item);
    EXPECT_LE(drained.size(), kCapacity);
    EXPECT_EQ(queue.size(), 0U);
    EXPECT_FALSE(queue.try_push(-1));

    // What came out (popped or drained) is exactly what push reported accepted.
    std::vector<int> accepted_all;
    for (const auto& items : accepted) {
        accepted_all.insert(accepted_all.end(), items.begin(), items.end());
    }
    std::vector<int> out_all = drained;
    for (const auto& items : received) out_all.insert(out_all.end(), items.begin(), items.end());
    std::sort(accepted_all.begin(), accepted_all.end());
    std::sort(out_all.begin(), out_all.end());
    EXPECT_TRUE(std::adjacent_find(out_all.begin(), out_all.end()) == out_all.end())
        << "an item came out twice";
    EXPECT_EQ(out_all.size(), accepted_all.size());
    EXPECT_TRUE(out_all == accepted_all) << "popped + drained differs from what push() accepted";
}

TEST(BoundedBlockingQueueStress, CloseWhileBusyWithItemsStoredLosesNoAcceptedItem) {
    close_while_busy(scaled(kItemsBeforeClose / 2), CloseWhen::items_stored);
}

TEST(BoundedBlockingQueueStress, CloseWhileBusyWithConsumersWaitingHangsNoThread) {
    close_while_busy(scaled(kItemsBeforeClose / 2), CloseWhen::queue_empty);
}

}  // namespace
