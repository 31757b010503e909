#pragma once

#include <chrono>
#include <cstdint>
#if defined(__linux__)
#include <ctime> // clock_gettime, CLOCK_MONOTONIC_COARSE
#endif

namespace connpool::detail {

/// A monotonic clock cheap enough to read on every acquire and release.
///
/// Why not std::chrono::steady_clock: on Linux it costs ~20-25 ns a read, more than the whole
/// uncontended acquire+release cycle we aim for. CLOCK_MONOTONIC_COARSE is read from the vDSO
/// in ~5 ns with a resolution of one scheduler tick (1-4 ms), which is plenty for idle
/// timeouts, lifetimes and leak thresholds (seconds to minutes). Waits are timed with
/// steady_clock, on the slow path only.
struct coarse_clock {
    using duration = std::chrono::nanoseconds;
    using rep = duration::rep;
    using period = duration::period;
    using time_point = std::chrono::time_point<coarse_clock, duration>;
    static constexpr bool is_steady = true;

    /// Returns the current time; never goes backwards.
    static time_point now() noexcept {
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
        timespec ts{};
        ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        return time_point(duration(std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec));
#else
        return time_point(std::chrono::duration_cast<duration>(
            std::chrono::steady_clock::now().time_since_epoch()));
#endif
    }
};

/// Returns Clock::now() as nanoseconds since the clock's epoch, the unit slots store times in.
template <class Clock>
std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
}

} // namespace connpool::detail
