#pragma once

// Saturating time arithmetic. Users spell "never" as milliseconds::max() as often as 0, so every
// duration the core stores or adds goes through these: nothing overflows, and a duration too
// large to matter means "never".

#include <chrono>
#include <cstdint>
#include <limits>

namespace connpool::detail {

/// The nanosecond count that means "never" (or "forever").
inline constexpr std::int64_t never_ns = std::numeric_limits<std::int64_t>::max();

/// Longer than any wait a program can mean: deadlines further away are treated as "forever".
inline constexpr std::chrono::hours forever{24 * 365 * 100};

/// Returns `d` in nanoseconds, saturated at never_ns (negative durations saturate at the minimum).
template <class Rep, class Period>
constexpr std::int64_t to_ns(std::chrono::duration<Rep, Period> d) noexcept {
    using ns = std::chrono::duration<long double, std::nano>;
    const long double v = std::chrono::duration_cast<ns>(d).count();
    if (v >= static_cast<long double>(never_ns)) return never_ns;
    if (v <= static_cast<long double>(std::numeric_limits<std::int64_t>::min())) {
        return std::numeric_limits<std::int64_t>::min();
    }
    return static_cast<std::int64_t>(v);
}

/// Returns a + b for b >= 0, saturated at never_ns.
constexpr std::int64_t add_saturated(std::int64_t a, std::int64_t b) noexcept {
    return b > never_ns - a ? never_ns : a + b;
}

/// Returns the steady_clock time `timeout` after `now`: `now` for a zero or negative timeout,
/// `now + forever` for one too large to add.
template <class Rep, class Period>
std::chrono::steady_clock::time_point deadline_after(std::chrono::steady_clock::time_point now,
                                                     std::chrono::duration<Rep, Period> timeout) noexcept {
    using steady = std::chrono::steady_clock;
    if (timeout <= std::chrono::duration<Rep, Period>::zero()) return now;
    if (std::chrono::duration<long double>(timeout) >= std::chrono::duration<long double>(forever)) {
        return now + std::chrono::duration_cast<steady::duration>(forever);
    }
    return now + std::chrono::ceil<steady::duration>(timeout);
}

} // namespace connpool::detail
