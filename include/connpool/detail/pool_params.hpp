#pragma once

// PoolOptions checked once and turned into the saturated nanosecond values the core uses.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../pool_options.hpp"
#include "durations.hpp"

namespace connpool::detail {

/// The largest max_size a pool accepts (at construction and in resize()).
inline constexpr std::size_t max_pool_size = std::size_t{1} << 20;

inline void check_option(bool ok, const char* field, const std::string& requirement, long long value) {
    if (!ok) {
        throw std::invalid_argument("connpool::PoolOptions: " + std::string(field) + " " + requirement +
                                    ", got " + std::to_string(value));
    }
}

/// Throws std::invalid_argument unless `n` is a valid max_size with `min_idle` idle kept.
inline void check_max_size(std::size_t n, std::size_t min_idle, const char* field = "max_size") {
    using ll = long long;
    check_option(n >= 1, field, "must be at least 1", static_cast<ll>(n));
    check_option(n <= max_pool_size, field, "must be at most 1048576", static_cast<ll>(n));
    check_option(min_idle <= n, field, "must be at least min_idle (" + std::to_string(min_idle) + ")",
                 static_cast<ll>(n));
}

/// The options in the core's units. Times are nanoseconds; never_ns (or 0 where the field says
/// so) means "never".
struct PoolParams {
    std::size_t max_size;
    std::size_t min_idle;
    std::size_t max_concurrent_creates;
    std::chrono::milliseconds acquire_timeout; // saturated by deadline_after() where used
    std::int64_t idle_timeout;        // 0 = never
    std::int64_t max_lifetime;        // 0 = never
    std::int64_t validate_after_idle; // never_ns = never
    std::int64_t leak_threshold;      // 0 = off
    std::int64_t create_retry_initial;
    std::int64_t create_retry_max;
    std::int64_t maintenance_interval; // 0 = no thread; never_ns = a thread that only waits
    bool needs_maintenance;            // some option needs periodic passes
};

/// Checks `o` (throwing std::invalid_argument naming the field and the value) and converts it.
inline PoolParams make_params(const PoolOptions& o) {
    using ll = long long;
    check_option(o.max_size >= 1, "max_size", "must be at least 1", static_cast<ll>(o.max_size));
    check_option(o.max_size <= max_pool_size, "max_size", "must be at most 1048576", static_cast<ll>(o.max_size));
    check_option(o.min_idle <= o.max_size, "min_idle",
                 "must be at most max_size (" + std::to_string(o.max_size) + ")", static_cast<ll>(o.min_idle));
    auto non_negative = [](std::chrono::milliseconds d, const char* field) {
        check_option(d.count() >= 0, field, "must not be negative (ms)", d.count());
    };
    non_negative(o.acquire_timeout, "acquire_timeout");
    non_negative(o.idle_timeout, "idle_timeout");
    non_negative(o.max_lifetime, "max_lifetime");
    non_negative(o.validate_after_idle, "validate_after_idle");
    non_negative(o.leak_threshold, "leak_threshold");
    non_negative(o.maintenance_interval, "maintenance_interval");
    check_option(o.max_concurrent_creates >= 1, "max_concurrent_creates", "must be at least 1",
                 static_cast<ll>(o.max_concurrent_creates));
    check_option(o.max_concurrent_creates <= 1024, "max_concurrent_creates",
                 "must be at most 1024 (each is a thread)", static_cast<ll>(o.max_concurrent_creates));
    check_option(o.create_retry_initial.count() >= 1, "create_retry_initial", "must be at least 1 ms",
                 o.create_retry_initial.count());
    check_option(o.create_retry_max >= o.create_retry_initial, "create_retry_max",
                 "must be at least create_retry_initial (" + std::to_string(o.create_retry_initial.count()) + " ms)",
                 o.create_retry_max.count());
    PoolParams p{};
    p.max_size = o.max_size;
    p.min_idle = o.min_idle;
    p.max_concurrent_creates = o.max_concurrent_creates;
    p.acquire_timeout = o.acquire_timeout;
    p.idle_timeout = to_ns(o.idle_timeout);
    p.max_lifetime = to_ns(o.max_lifetime);
    p.validate_after_idle = to_ns(o.validate_after_idle);
    p.leak_threshold = to_ns(o.leak_threshold);
    p.create_retry_initial = to_ns(o.create_retry_initial);
    p.create_retry_max = to_ns(o.create_retry_max);
    p.maintenance_interval = to_ns(o.maintenance_interval);
    // A lifetime, idle timeout or leak threshold too long to ever pass needs no maintenance.
    const auto enabled = [](std::int64_t v) { return v > 0 && v < to_ns(forever); };
    p.needs_maintenance = p.min_idle > 0 || enabled(p.idle_timeout) || enabled(p.max_lifetime) ||
                          enabled(p.leak_threshold);
    return p;
}

/// The back-off after one more failed creation: `initial` first, then doubling up to `max`.
constexpr std::int64_t next_backoff(std::int64_t current, std::int64_t initial, std::int64_t max) noexcept {
    if (current <= 0) return initial;
    return current > max / 2 ? max : (current * 2 < max ? current * 2 : max);
}

} // namespace connpool::detail
