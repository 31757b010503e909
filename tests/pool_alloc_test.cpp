// Once warm, acquire and release allocate nothing: counted by replacing global operator new.
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

namespace {
std::atomic<long> allocations{0};
} // namespace

void* operator new(std::size_t n) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc{};
}
// GCC sees malloc'd memory reach free() through inlined new/delete and warns, although this
// pair is consistent; the delete replacements are needed so sanitizers see matching calls.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {
struct Conn {
    int id = 0;
};
struct Factory {
    Conn create() { return Conn{1}; }
    bool validate(Conn&) { return true; }
    bool reset(Conn&) { return true; }
};
} // namespace

TEST(PoolAllocation, WarmAcquireAndReleaseDoNotAllocate) {
    connpool::PoolOptions o;
    o.max_size = 2;
    o.validate_after_idle = std::chrono::milliseconds{0}; // exercise validate() too
    o.maintenance_interval = std::chrono::milliseconds{0};
    connpool::Pool pool{Factory{}, o};
    { auto warm = pool.acquire(); }
    const long before = allocations.load();
    for (int i = 0; i < 10'000; ++i) {
        auto lease = pool.acquire();
        lease->id++;
    }
    EXPECT_EQ(allocations.load() - before, 0);
}

TEST(PoolAllocation, WaitingForAConnectionDoesNotAllocate) {
    connpool::PoolOptions o;
    o.max_size = 1;
    o.maintenance_interval = std::chrono::milliseconds{0};
    connpool::Pool pool{Factory{}, o};
    { auto warm = pool.acquire(); }
    std::atomic<bool> go{false};
    std::thread other([&] {
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < 2'000; ++i) auto lease = pool.acquire();
    });
    const long before = allocations.load();
    go.store(true);
    for (int i = 0; i < 2'000; ++i) auto lease = pool.acquire(); // contended: hand-offs and waits
    other.join();
    EXPECT_EQ(allocations.load() - before, 0);
}
