#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit> // std::countl_zero
#include <cmath>
#include <chrono>
#include <cstdint>

#include "../pool_options.hpp" // acquire_wait_bucket_bounds

namespace connpool::detail {

/// A lock-free log-linear histogram of durations in nanoseconds: 8 buckets per power of two,
/// so any percentile it reports is at most 12.5 % above the true value (and never above max).
class WaitHistogram {
public:
    /// Records one duration; wait-free, callable from any thread.
    void record(std::uint64_t ns) noexcept {
        buckets_[index_of(ns)].fetch_add(1, std::memory_order_relaxed);
        // Also at the fixed bounds monitoring exports: the log-linear buckets straddle them.
        std::size_t fixed = 0;
        while (fixed < acquire_wait_bucket_bounds.size() &&
               ns > static_cast<std::uint64_t>(acquire_wait_bucket_bounds[fixed].count()))
            ++fixed;
        fixed_[fixed].fetch_add(1, std::memory_order_relaxed);
        sum_.fetch_add(ns, std::memory_order_relaxed);
        count_.fetch_add(1, std::memory_order_relaxed);
        std::uint64_t seen = max_.load(std::memory_order_relaxed);
        while (ns > seen && !max_.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
        }
    }

    /// Returns how many durations were recorded.
    [[nodiscard]] std::uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }

    /// Returns the largest duration recorded, or 0.
    [[nodiscard]] std::uint64_t max() const noexcept { return max_.load(std::memory_order_relaxed); }

    /// Returns the cumulative counts at acquire_wait_bucket_bounds (and +Inf) of the recorded
    /// durations plus `zeros` more zero durations (in every bucket).
    [[nodiscard]] std::array<std::uint64_t, acquire_wait_bucket_bounds.size() + 1> cumulative(std::uint64_t zeros) const noexcept {
        std::array<std::uint64_t, acquire_wait_bucket_bounds.size() + 1> out{};
        std::uint64_t seen = zeros;
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = seen += fixed_[i].load(std::memory_order_relaxed);
        return out;
    }

    /// Returns the sum of the recorded durations, in nanoseconds.
    [[nodiscard]] std::uint64_t sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

    /// Returns the q-quantile (0 < q <= 1) of the recorded durations plus `zeros` more zero
    /// durations that were counted elsewhere (the pool's fast path records nothing here).
    [[nodiscard]] std::uint64_t percentile(double q, std::uint64_t zeros) const noexcept {
        const std::uint64_t total = zeros + count();
        if (total == 0) return 0;
        const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total)));
        if (rank <= zeros) return 0;
        std::uint64_t seen = zeros;
        for (std::size_t i = 0; i < bucket_count; ++i) {
            seen += buckets_[i].load(std::memory_order_relaxed);
            if (seen >= rank) return std::min(upper_bound_of(i), max());
        }
        return max();
    }

private:
    static constexpr std::size_t bucket_count = 62 * 8;

    static constexpr std::size_t index_of(std::uint64_t v) noexcept {
        if (v < 8) return static_cast<std::size_t>(v);
        const int msb = 63 - std::countl_zero(v);
        const std::uint64_t top = v >> (msb - 3); // 8..15: the leading four bits
        return static_cast<std::size_t>(msb - 2) * 8 + static_cast<std::size_t>(top - 8);
    }

    static constexpr std::uint64_t upper_bound_of(std::size_t i) noexcept {
        if (i < 8) return i;
        const int msb = static_cast<int>(i / 8) + 2;
        const std::uint64_t top = i % 8 + 8;
        return ((top + 1) << (msb - 3)) - 1;
    }

    std::array<std::atomic<std::uint64_t>, bucket_count> buckets_{};
    std::array<std::atomic<std::uint64_t>, acquire_wait_bucket_bounds.size() + 1> fixed_{};
    std::atomic<std::uint64_t> sum_{0};
    std::atomic<std::uint64_t> count_{0};
    std::atomic<std::uint64_t> max_{0};
};

} // namespace connpool::detail
