// Bugs fuzz_bounded_queue found, one case per crash input in fuzz/regressions/bounded_queue/,
// spelled out so that they fail in every preset, not only under the fuzzer's sanitizers.

#include <connpool/bounded_queue.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <future> // std::async: the pop that may block runs beside the test
#include <optional>

namespace {

using namespace std::chrono_literals;
using connpool::BoundedBlockingQueue;

// Long enough for a pop that should return at once, even on a loaded CI machine.
constexpr auto kAtOnce = 2s;

// Issue 7 bug 2, input pop_for_minus_553_years_blocks. The timeout, about -553 years, does
// not fit in int64 nanoseconds: pop_for's conversion overflows (undefined behaviour, which
// UBSan reports) and in practice wraps to a deadline 31.7 years ahead, so the pop blocks.
TEST(BoundedBlockingQueueFuzzRegression, pop_for_a_negative_timeout_beyond_the_nanosecond_range_returns_at_once) {
    BoundedBlockingQueue<int> queue(1);
    volatile std::int64_t count = -17'446'744'073'709; // volatile: no constant folding of the overflow
    const std::chrono::milliseconds timeout(count);
    auto popped = std::async(std::launch::async, [&] { return queue.pop_for(timeout); });
    const bool returned = popped.wait_for(kAtOnce) == std::future_status::ready;
    if (!returned) queue.close(); // wakes the pop, so the case fails rather than hangs
    EXPECT_TRUE(returned) << "pop_for(" << timeout.count() << "ms) on an empty queue still waits after "
                          << std::chrono::duration_cast<std::chrono::seconds>(kAtOnce).count() << " s";
    EXPECT_EQ(popped.get(), std::nullopt);
}

// Issue 7 bug 2, input pop_for_milliseconds_min: milliseconds::min() overflows the same way.
// It happens to wrap to a past deadline, so this case fails only where the overflow is
// detected (the asan preset: UBSan, -fno-sanitize-recover) until pop_for saturates.
TEST(BoundedBlockingQueueFuzzRegression, pop_for_milliseconds_min_returns_at_once_with_or_without_an_element) {
    BoundedBlockingQueue<int> queue(1);
    EXPECT_EQ(queue.pop_for(std::chrono::milliseconds::min()), std::nullopt);
    ASSERT_TRUE(queue.try_push(7));
    EXPECT_EQ(queue.pop_for(std::chrono::milliseconds::min()), std::optional<int>(7));
    EXPECT_EQ(queue.pop_for(std::chrono::hours::min()), std::nullopt);
}

} // namespace
