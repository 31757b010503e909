#pragma once

// What the job-layer tests share: a pool of fake connections, signals with a deadlock guard, a
// recorder of progress callbacks, and a fixture that owns a pool and (lazily) a runner on it, so
// each test states only what differs. Nothing here touches a database.

#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>  // std::fprintf: the watchdog's last words
#include <cstdlib> // std::abort: a deadlocked test must not hang the suite
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "counting_connection.hpp"

namespace connpool::testing {

using namespace std::chrono_literals;
using connpool::JobHandle;
using connpool::JobKind;
using connpool::JobState;
using connpool::Progress;
using connpool::ProgressReporter;
using connpool::RunnerOptions;

using FakePool = connpool::Pool<FakeConnection, FakeFactory>;
using Runner = connpool::JobRunner<FakePool>;
using FakeJob = connpool::Job<FakeConnection>;
using Operation = std::function<void(FakeConnection&, ProgressReporter&)>;

/// How long anything may block before a test gives up: a deadlock guard, not a speed claim.
constexpr auto kGuard = 10s;

inline connpool::PoolOptions pool_options(std::size_t max_size) {
    connpool::PoolOptions o;
    o.max_size = max_size;
    o.acquire_timeout = 30s;
    o.maintenance_interval = 0ms; // no background thread
    return o;
}

/// Runner options with callbacks delivered on every report (progress_interval 0).
inline RunnerOptions unthrottled() {
    RunnerOptions o;
    o.progress_interval = 0ms;
    return o;
}

/// Runner options whose throttle never lets a non-forced callback through during a test.
inline RunnerOptions forced_only() {
    RunnerOptions o;
    o.progress_interval = std::chrono::milliseconds{std::chrono::hours{1}};
    return o;
}

inline FakeJob make_job(std::string name, Operation run, JobKind kind = JobKind::backup) {
    return FakeJob{std::move(name), kind, std::move(run)};
}

/// A one-shot signal with a guarded wait.
class Gate {
public:
    void open() {
        {
            std::lock_guard lock(mutex_);
            open_ = true;
        }
        cv_.notify_all();
    }
    /// Waits until opened; false if kGuard (or `timeout`) passed first.
    [[nodiscard]] bool wait(std::chrono::milliseconds timeout = kGuard) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, timeout, [&] { return open_; });
    }
    [[nodiscard]] bool is_open() {
        std::lock_guard lock(mutex_);
        return open_;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool open_ = false;
};

/// Used inside operations: a gate that never opens fails the job instead of hanging the test.
inline void wait_or_fail(Gate& gate) {
    if (!gate.wait()) throw connpool::OperationError("test gate was never opened (deadlock guard)");
}

/// Records every callback of one job, and whether two of them ever overlapped.
class Recorder {
public:
    Recorder() = default;
    explicit Recorder(std::function<void(const Progress&)> hook) : hook_(std::move(hook)) {}

    connpool::ProgressCallback callback() {
        return [this](const Progress& p) {
            if (inside_.fetch_add(1) != 0) overlaps_.fetch_add(1);
            struct Leave {
                std::atomic<int>& inside;
                ~Leave() { inside.fetch_sub(1); }
            } leave{inside_};
            {
                std::lock_guard lock(mutex_);
                seen_.push_back(p);
            }
            if (hook_) hook_(p);
        };
    }

    [[nodiscard]] std::vector<Progress> all() {
        std::lock_guard lock(mutex_);
        return seen_;
    }
    [[nodiscard]] std::vector<JobState> states() {
        std::vector<JobState> out;
        for (const auto& p : all()) out.push_back(p.state);
        return out;
    }
    [[nodiscard]] int overlaps() const { return overlaps_.load(); }

private:
    std::function<void(const Progress&)> hook_;
    std::mutex mutex_;
    std::vector<Progress> seen_;
    std::atomic<int> inside_{0};
    std::atomic<int> overlaps_{0};
};

inline void expect_consistent(const connpool::PoolStats& s) {
    EXPECT_EQ(s.open, s.idle + s.in_use);
    EXPECT_EQ(s.created - s.destroyed, s.open);
    EXPECT_LE(s.open, s.max_size);
}

inline void expect_balanced(const FakeFactory& f) {
    EXPECT_EQ(f.registry->created.load(), f.registry->destroyed.load());
    EXPECT_EQ(f.registry->double_destroys.load(), 0u);
    EXPECT_EQ(f.registry->alive_count(), 0u);
}

/// Polls `done` until it holds or kGuard passes (for states with no event to wait on, like a
/// thread having entered the pool's acquire()).
template <class Pred>
[[nodiscard]] bool eventually(Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + kGuard;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

/// An operation that blocks until `release` opens, after opening `started`.
inline Operation blocking(Gate& started, Gate& release) {
    return [&started, &release](FakeConnection&, ProgressReporter&) {
        started.open();
        wait_or_fail(release);
    };
}

inline Operation noop() {
    return [](FakeConnection&, ProgressReporter&) {};
}


/// A job's own handle, for its operation or callbacks, which may run before submit() returns it.
class HandleSlot {
public:
    void set(JobHandle h) {
        {
            std::lock_guard lock(mutex_);
            handle_ = std::move(h);
        }
        cv_.notify_all();
    }
    /// Waits (up to kGuard) until set; an invalid handle if it never was.
    [[nodiscard]] JobHandle get() {
        std::unique_lock lock(mutex_);
        cv_.wait_for(lock, kGuard, [&] { return handle_.valid(); });
        return handle_;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    JobHandle handle_;
};

/// Waits for `h` to end; a job that does not end within kGuard is a deadlock, which would
/// otherwise hang the whole suite (the runner's destructor joins the stuck worker): abort, naming it.
inline JobState wait_or_abort(const JobHandle& h, const char* what) {
    if (!h.wait_for(kGuard)) {
        std::fprintf(stderr, "deadlock: %s did not end within the guard\n", what);
        std::fflush(stderr);
        std::abort();
    }
    return h.wait();
}

/// A pool of `PoolSize` fake connections and a runner on it, made on first use with the options
/// the test asks for. Members are destroyed runner first, then pool; the fixture then checks
/// that every fake connection created was destroyed exactly once.
template <std::size_t PoolSize>
class PoolAndRunner : public ::testing::Test {
protected:
    ~PoolAndRunner() override {
        runner_.reset();
        pool_.reset();
        expect_balanced(factory_);
    }

    /// Returns the pool (acquire_timeout 30 s, no maintenance thread).
    FakePool& pool() { return *pool_; }

    /// Returns the runner, creating it with `options` on the first call (later calls ignore them).
    Runner& runner(RunnerOptions options = unthrottled()) {
        if (!runner_) runner_.emplace(*pool_, std::move(options));
        return *runner_;
    }

    /// Destroys the runner now (waits for what runs, cancels what is queued).
    void destroy_runner() { runner_.reset(); }

    FakeFactory factory_;
    std::optional<FakePool> pool_{std::in_place, factory_, pool_options(PoolSize)};
    std::optional<Runner> runner_;
};

} // namespace connpool::testing
