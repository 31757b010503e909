#pragma once

// Timeouts decoded from a fuzz input, in every shape a user may write one: zero, negative,
// tiny, huge, the extremes of several duration types (milliseconds::max() is a natural
// spelling of "never"), random counts of several periods, and floating-point seconds
// including infinities.

#include <fuzzer/FuzzedDataProvider.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring> // strlen, to append to a label
#include <limits>
#include <utility> // as_const

namespace connpool::fuzz {

/// A printable description of a decoded timeout, for the trace.
struct TimeoutLabel {
    char text[64] = {};
};

/// Returns the duration in (double) seconds: exact enough to classify any timeout, and
/// never overflows, unlike a conversion to nanoseconds.
template <class Rep, class Period>
double seconds_of(const std::chrono::duration<Rep, Period>& d) {
    return std::chrono::duration<double>(d).count();
}

/// Returns whether a wait with this timeout ends at once (or within a microsecond) when
/// nothing arrives: zero, negative and tiny timeouts. A single-threaded harness may wait
/// with such a timeout even when nothing will ever arrive.
template <class Rep, class Period>
bool ends_at_once(const std::chrono::duration<Rep, Period>& d) {
    return seconds_of(d) <= 1e-6;
}

/// Returns whether the timeout's count of nanoseconds fits in std::chrono::nanoseconds.
template <class Rep, class Period>
bool fits_in_nanoseconds(const std::chrono::duration<Rep, Period>& d) {
    constexpr double lowest = -9223372036.854775808; // nanoseconds::min(), in seconds
    const double s = seconds_of(d);
    return s >= lowest && s < -lowest;
}

/// Decodes a timeout from `input` and returns `visit(timeout, label)`; the timeout's type
/// varies with its shape (nanoseconds, milliseconds, seconds, hours, double seconds).
///
/// With CONNPOOL_FUZZ_CLAMP_NEGATIVE_TIMEOUTS defined, a negative timeout whose count of
/// nanoseconds does not fit in 64 bits is replaced by nanoseconds::min(): that avoids the
/// overflow reported as issue 7 bug 2 while it is open, so the rest can still be fuzzed.
template <class Visit>
decltype(auto) with_timeout(FuzzedDataProvider& input, Visit&& visit) {
    using namespace std::chrono;
    TimeoutLabel label;
    auto call = [&](auto d, const char* format, auto value) -> decltype(auto) {
        std::snprintf(label.text, sizeof label.text, format, value);
#ifdef CONNPOOL_FUZZ_CLAMP_NEGATIVE_TIMEOUTS
        if (seconds_of(d) < 0 && !fits_in_nanoseconds(d)) {
            const std::size_t used = std::strlen(label.text);
            std::snprintf(label.text + used, sizeof label.text - used, " clamped to ns::min()");
            return visit(nanoseconds::min(), std::as_const(label));
        }
#endif
        return visit(d, std::as_const(label));
    };
    switch (input.ConsumeIntegralInRange<int>(0, 17)) {
    case 0: return call(nanoseconds::zero(), "%s", "0ns");
    case 1: return call(nanoseconds(-1), "%s", "-1ns");
    case 2: {
        const auto n = input.ConsumeIntegralInRange<std::int64_t>(1, 1000);
        return call(nanoseconds(n), "%lldns", static_cast<long long>(n));
    }
    case 3: return call(nanoseconds::max(), "%s", "nanoseconds::max()");
    case 4: return call(nanoseconds::min(), "%s", "nanoseconds::min()");
    case 5: return call(milliseconds::max(), "%s", "milliseconds::max()");
    case 6: return call(milliseconds::min(), "%s", "milliseconds::min()");
    case 7: return call(hours::max(), "%s", "hours::max()");
    case 8: return call(hours::min(), "%s", "hours::min()");
    case 9: {
        const auto n = input.ConsumeIntegral<std::int64_t>();
        return call(nanoseconds(n), "%lldns", static_cast<long long>(n));
    }
    case 10: {
        const auto n = input.ConsumeIntegral<std::int64_t>();
        return call(milliseconds(n), "%lldms", static_cast<long long>(n));
    }
    case 11: {
        const auto n = input.ConsumeIntegral<std::int64_t>();
        return call(seconds(n), "%llds", static_cast<long long>(n));
    }
    case 12: {
        const auto n = input.ConsumeIntegral<std::int32_t>();
        return call(duration<std::int32_t, std::milli>(n), "%dms (int32)", n);
    }
    case 13: {
        const double s = input.ConsumeFloatingPoint<double>();
        return call(duration<double>(s), "%gs (double)", s);
    }
    case 14: {
        const double s = input.ConsumeFloatingPointInRange<double>(-1e-3, 1e-3);
        return call(duration<double>(s), "%gs (double)", s);
    }
    case 15: return call(duration<double>(std::numeric_limits<double>::infinity()), "%s", "+inf s (double)");
    case 16: return call(duration<double>(-std::numeric_limits<double>::infinity()), "%s", "-inf s (double)");
    default: {
        const auto n = input.ConsumeIntegralInRange<std::int64_t>(-1000, 0);
        return call(microseconds(n), "%lldus", static_cast<long long>(n));
    }
    }
}

} // namespace connpool::fuzz
