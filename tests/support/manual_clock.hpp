#pragma once

// A clock that moves only when a test says so, for time-dependent pool behaviour without sleeps.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace connpool::testing {

struct ManualClock {
    using duration = std::chrono::nanoseconds;
    using rep = duration::rep;
    using period = duration::period;
    using time_point = std::chrono::time_point<ManualClock, duration>;
    static constexpr bool is_steady = true;

    static time_point now() noexcept { return time_point(duration(ticks().load())); }
    static void advance(duration d) noexcept { ticks().fetch_add(d.count()); }

private:
    static std::atomic<std::int64_t>& ticks() noexcept {
        static std::atomic<std::int64_t> t{1'000'000'000'000}; // not zero: 0 means "never" in slots
        return t;
    }
};

} // namespace connpool::testing
