// No starvation: with more threads than connections, every waiting thread is served after a
// bounded number of other acquisitions (FIFO hand-off), not whenever it happens to win a race.
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {
struct Conn {
    int id;
};
struct Factory {
    std::atomic<int>* next;
    Conn create() { return Conn{next->fetch_add(1)}; }
};
} // namespace

TEST(PoolFairness, EveryWaiterIsServedWithinABoundedNumberOfOtherAcquisitions) {
    constexpr int threads = 8;
    constexpr int rounds = 300;
    std::atomic<int> next{0};
    connpool::PoolOptions o;
    o.max_size = 2;
    o.acquire_timeout = 30s;
    o.maintenance_interval = 0ms;
    connpool::Pool pool{Factory{&next}, o};
    std::atomic<long> served{0};
    std::vector<long> worst(threads, 0);
    std::vector<std::thread> pool_users;
    for (int t = 0; t < threads; ++t) {
        pool_users.emplace_back([&, t] {
            for (int i = 0; i < rounds; ++i) {
                const long before = served.load();
                auto lease = pool.acquire();
                const long overtaken = served.fetch_add(1) - before;
                worst[static_cast<std::size_t>(t)] = std::max(worst[static_cast<std::size_t>(t)], overtaken);
                // Hold it long enough that the others queue up behind.
                std::this_thread::sleep_for(50us);
            }
        });
    }
    for (auto& t : pool_users) t.join();
    EXPECT_EQ(served.load(), threads * rounds);
    const long bound = 4 * threads; // FIFO would give ~threads; a barging pool gives hundreds
    for (int t = 0; t < threads; ++t) {
        EXPECT_LE(worst[static_cast<std::size_t>(t)], bound) << "thread " << t << " was overtaken too often";
    }
    EXPECT_LE(next.load(), 2);
}
