#pragma once

// Serialized delivery of one job's progress callbacks, and the per-thread record of which
// jobs a thread is inside (running their operation or one of their callbacks).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>

#include "job_progress.hpp"

namespace connpool::detail {

/// Marks, for as long as it lives, that this thread is inside `job`: running its operation or
/// delivering one of its callbacks. Scopes nest (a callback may cancel another job, whose final
/// callback then runs inside it), so they form a chain through the stack, one per thread.
/// The waits read the chain to refuse a wait that could never return.
class InsideJob {
public:
    /// Enters `job` (its address identifies it) on this thread until destroyed.
    explicit InsideJob(const void* job) noexcept : job_(job), outer_(innermost()) { innermost() = this; }
    InsideJob(const InsideJob&) = delete;
    InsideJob& operator=(const InsideJob&) = delete;
    ~InsideJob() { innermost() = outer_; }

    /// Returns whether this thread is inside `job` (at any depth).
    [[nodiscard]] static bool here(const void* job) noexcept {
        for (const InsideJob* scope = innermost(); scope != nullptr; scope = scope->outer_)
            if (scope->job_ == job) return true;
        return false;
    }

private:
    static const InsideJob*& innermost() noexcept {
        thread_local const InsideJob* scope = nullptr;
        return scope;
    }

    const void* job_;
    const InsideJob* outer_;
};

/// Delivers one job's progress callbacks, one at a time, throttled, the final one last.
///
/// Design: the owner's mutex (JobControl's) guards every field; deliver() is called with it
/// held and returns with it held, but runs the callback without it. Whoever finds no delivery
/// in progress delivers, re-reading the latest state for each callback, until nothing is
/// pending; anyone else only marks a delivery pending. So callbacks never overlap, each shows
/// the newest state (so `done` never goes back), and a callback may call back into its own job
/// (cancel(), progress()) without deadlock. After the final callback has returned, the
/// callback is released (with what it captured) and only then does ended() turn true and the
/// waiters wake: wait() returning means the job holds none of the user's objects any more.
class CallbackDelivery {
public:
    /// Delivers to `callback` (may be empty), at most once per `throttle` unless forced;
    /// exceptions from the callback go to `sink`.
    CallbackDelivery(ProgressCallback callback, std::shared_ptr<const CallbackErrorSink> sink,
                     std::chrono::nanoseconds throttle)
        : callback_(std::move(callback)), sink_(std::move(sink)), throttle_(throttle) {}

    /// Delivers the job's latest progress, `make_progress(now)`, unless the last callback was
    /// less than the throttle ago (`force` overrides the throttle). A Progress in a final state
    /// ends the delivery for good; `final` says whether the job's state is final now (what ends
    /// it when there is no callback). `now` is the caller's clock reading, or a default time
    /// point to have it read only when needed. Requires `lock` (the owner's) held; returns with
    /// it held. `job` identifies the job for InsideJob.
    template <class MakeProgress>
    void deliver(std::unique_lock<std::mutex>& lock, bool force, bool final, job_clock::time_point now,
                 const void* job, MakeProgress make_progress) {
        if (ended_) return;
        if (!callback_) {
            // Nobody to tell: no Progress to build, no clock to read, no throttle to keep. Only
            // the end matters, for the waiters. callback_ is set only at construction, so a
            // job without one never has a delivery in progress.
            if (final) end(lock);
            return;
        }
        if (!force) {
            if (now == job_clock::time_point{}) now = job_clock::now();
            if (now - delivered_at_ < throttle_) return;
        }
        pending_ = true;
        forced_ = forced_ || force;
        if (delivering_) return; // the thread delivering now will pick this up
        delivering_ = true;
        while (pending_) {
            const bool forced = std::exchange(forced_, false);
            pending_ = false;
            now = job_clock::now();
            if (!forced && now - delivered_at_ < throttle_) break;
            Progress p = make_progress(now);
            delivered_at_ = now;
            // callback_ is read without the lock: only the delivering thread touches it.
            lock.unlock();
            try {
                const InsideJob inside(job);
                callback_(p);
            } catch (...) {
                report_callback_error(p, std::current_exception());
            }
            lock.lock();
            if (is_final(p.state)) {
                // Destroyed without the lock: its destructor (of what it captured) is user code.
                ProgressCallback callback = std::exchange(callback_, nullptr);
                lock.unlock();
                callback = nullptr;
                lock.lock();
                end(lock);
            }
        }
        delivering_ = false;
    }

    /// Returns whether the final callback has run. Requires the owner's lock.
    [[nodiscard]] bool ended() const noexcept { return ended_; }

    /// Returns whether the final callback has run; any thread, no lock.
    [[nodiscard]] bool ended_flag() const noexcept { return ended_flag_.load(std::memory_order_acquire); }

    /// Blocks until the final callback has run. Requires `lock` (the owner's) held.
    void wait_ended(std::unique_lock<std::mutex>& lock) const {
        ended_cv_.wait(lock, [&] { return ended_; });
    }

    /// Blocks until the final callback has run or `deadline` passes; returns whether it ran.
    /// Requires `lock` (the owner's) held.
    bool wait_ended_until(std::unique_lock<std::mutex>& lock, job_clock::time_point deadline) const {
        return ended_cv_.wait_until(lock, deadline, [&] { return ended_; });
    }

private:
    // Marks the delivery ended (the final callback, if any, has returned) and wakes the waiters.
    void end(std::unique_lock<std::mutex>&) noexcept {
        ended_ = true;
        ended_flag_.store(true, std::memory_order_release);
        pending_ = false;
        ended_cv_.notify_all();
    }

    void report_callback_error(const Progress& p, std::exception_ptr error) const noexcept {
        try {
            if (sink_ && *sink_) (*sink_)(p, std::move(error));
        } catch (...) {
            // The sink itself failed; there is nowhere left to report it, and the job goes on.
        }
    }

    ProgressCallback callback_; // cleared once the final callback has run
    const std::shared_ptr<const CallbackErrorSink> sink_;
    const std::chrono::nanoseconds throttle_;
    std::atomic<bool> ended_flag_{false}; // ended_, readable without the lock
    mutable std::condition_variable ended_cv_;
    job_clock::time_point delivered_at_{}; // last callback
    bool delivering_ = false;
    bool pending_ = false;
    bool forced_ = false;
    bool ended_ = false;
};

} // namespace connpool::detail
