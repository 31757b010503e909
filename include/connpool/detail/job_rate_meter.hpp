#pragma once

// The rate a job reports (Progress::rate): units per second, exponentially smoothed so it
// follows changes without jumping at every step. Pure arithmetic on time stamps, no lock and
// no thread of its own.

#include <chrono>
#include <cmath> // std::exp: the exponential smoothing
#include <cstdint>

#include "job_progress.hpp" // job_clock

namespace connpool::detail {

/// Exponentially smoothed units per second. Not thread-safe: JobControl's mutex guards it.
class RateMeter {
public:
    /// Starts measuring at `now` from `done` units.
    void start(job_clock::time_point now, std::uint64_t done) noexcept {
        last_at_ = now;
        last_done_ = done;
        primed_ = false;
        rate_ = 0;
    }

    /// Folds the progress up to `now` into the average, at most once per sample period (shorter
    /// samples are too noisy: a step that lands just after a sample looks like a burst).
    void sample(job_clock::time_point now, std::uint64_t done) noexcept {
        if (now - last_at_ < sample_period) return;
        rate_ = rate_at(now, done);
        primed_ = true;
        last_at_ = now;
        last_done_ = done;
    }

    /// Returns the smoothed rate as it would be after a sample at `now`, without taking one,
    /// so a stalled job's rate decays instead of freezing at its last value.
    [[nodiscard]] double rate_at(job_clock::time_point now, std::uint64_t done) const noexcept {
        const double dt = std::chrono::duration<double>(now - last_at_).count();
        if (dt <= 0) return rate_;
        const double instant = static_cast<double>(done - last_done_) / dt;
        if (!primed_) return instant;
        const double alpha = 1.0 - std::exp(-dt / time_constant_s);
        return rate_ + alpha * (instant - rate_);
    }

private:
    static constexpr auto sample_period = std::chrono::milliseconds{250};
    static constexpr double time_constant_s = 3.0; // how far back the average "remembers"

    job_clock::time_point last_at_{};
    std::uint64_t last_done_ = 0;
    double rate_ = 0;
    bool primed_ = false;
};

} // namespace connpool::detail
