#pragma once

// The job layer: runs backup and restore operations through a Pool, one lease per running
// operation, and reports their progress. Standard library only, like the rest of the core.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath> // std::exp: the rate's exponential smoothing; std::isnan: wait_for's timeout
#include <condition_variable>
#include <cstdint>
#include <cstdio> // std::fprintf: the default sink for callback errors
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "lease.hpp"

// Test seam: a test that defines CONNPOOL_JOB_TEST_POINT(point, job_id) before including this
// header is called at the named points, to hold a thread inside the window a race needs
// (tests/jobs_shutdown_test.cpp). Nobody else defines it, so it compiles to nothing.
#ifndef CONNPOOL_JOB_TEST_POINT
#define CONNPOOL_JOB_TEST_POINT(point, job_id) static_cast<void>(0)
#endif

namespace connpool {

/// What a job does. It only labels the job (in Progress, sinks and metrics).
enum class JobKind { backup, restore };

/// Where a job is in its life: queued → running → succeeded | failed | cancelled.
/// A job cancelled while queued goes straight from queued to cancelled, without a lease.
enum class JobState { queued, running, succeeded, failed, cancelled };

/// Returns "backup" or "restore".
[[nodiscard]] constexpr std::string_view to_string(JobKind kind) noexcept {
    return kind == JobKind::backup ? "backup" : "restore";
}

/// Returns the state's name: "queued", "running", "succeeded", "failed" or "cancelled".
[[nodiscard]] constexpr std::string_view to_string(JobState state) noexcept {
    switch (state) {
    case JobState::queued: return "queued";
    case JobState::running: return "running";
    case JobState::succeeded: return "succeeded";
    case JobState::failed: return "failed";
    case JobState::cancelled: return "cancelled";
    }
    return "unknown";
}

/// Returns whether `state` is one a job ends in (succeeded, failed or cancelled).
[[nodiscard]] constexpr bool is_final(JobState state) noexcept {
    return state == JobState::succeeded || state == JobState::failed ||
           state == JobState::cancelled;
}

/// Thrown by an operation that failed for a reason that leaves its connection healthy (a bad
/// input file, an unwritable destination): the runner returns the lease instead of discarding
/// it. Any other exception from an operation discards the connection, whose state is unknown.
class OperationError : public Error {
public:
    using Error::Error;
};

/// A job's progress at one moment, as given to callbacks and returned by snapshots.
struct Progress {
    /// The runner's number for the job, in submission order from 1.
    std::uint64_t id = 0;
    /// The job's name (Job::name).
    std::string name{};
    /// The job's kind (Job::kind).
    JobKind kind = JobKind::backup;
    /// The job's state.
    JobState state = JobState::queued;
    /// Units of work done so far; never decreases.
    std::uint64_t done = 0;
    /// Units of work in all; 0 while unknown. A restarted operation adds the work it redoes.
    std::uint64_t total = 0;
    /// What done and total count: "pages", "bytes", "rows"; empty until the operation says.
    std::string unit{};
    /// What the operation is doing now, when it says ("copying", "verifying", "syncing"), so a
    /// job at 100 % that is still checking its result does not look stuck; empty otherwise.
    std::string phase{};
    /// Time spent running (holding a lease); zero while queued, fixed once the job ends.
    std::chrono::nanoseconds elapsed{0};
    /// Time spent waiting for a connection, from submission until the job got its lease.
    std::chrono::nanoseconds waited{0};
    /// Units per second: smoothed over the last few seconds while running (so it follows
    /// changes), the average over the whole run once the job has ended.
    double rate = 0;
    /// Estimated time to completion while running with a known total and a non-zero rate;
    /// zero once succeeded; otherwise empty.
    std::optional<std::chrono::nanoseconds> eta;
    /// How many times the operation started over (e.g. an online backup after a concurrent write).
    std::uint64_t restarts = 0;
    /// How many times the operation retried a step (e.g. the database was busy).
    std::uint64_t retries = 0;
    /// Why the job failed; empty unless state is failed.
    std::string error{};

    /// Returns done / total in [0, 1], or nothing while the total is unknown.
    [[nodiscard]] std::optional<double> fraction() const noexcept {
        if (total == 0) return std::nullopt;
        return std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    }
};

/// Called with a job's progress. A job's callbacks never run concurrently with each other.
using ProgressCallback = std::function<void(const Progress&)>;

/// Receives an exception thrown by a progress callback, with the Progress it was given.
using CallbackErrorSink = std::function<void(const Progress&, std::exception_ptr)>;

namespace detail {

using job_clock = std::chrono::steady_clock;

/// Returns the message of the exception `error`, for Progress::error.
inline std::string describe(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "unknown exception (not derived from std::exception)";
    }
}

/// Erases the oldest elements of `items` (a vector or deque) for which `ended` is true until at
/// most `keep` such elements remain; the others keep their order. Linear in items.size().
template <class Container, class Ended>
void drop_oldest_ended(Container& items, std::size_t keep, Ended ended) {
    using T = typename Container::value_type;
    std::size_t count = 0;
    for (const auto& item : items) count += ended(item) ? 1 : 0;
    if (count <= keep) return;
    std::size_t excess = count - keep;
    std::erase_if(items, [&](const T& item) {
        if (excess == 0 || !ended(item)) return false;
        --excess;
        return true;
    });
}

/// Returns RunnerOptions::progress_interval as the throttle JobControl compares against:
/// validated before it is converted (a negative interval is rejected naming the field and the
/// value), and saturated to nanoseconds::max() ("never", a callback only when forced) when it
/// does not fit in nanoseconds, e.g. milliseconds::max(), which a plain conversion wraps to -1 ms.
inline std::chrono::nanoseconds throttle_from(std::chrono::milliseconds interval) {
    if (interval.count() < 0)
        throw std::invalid_argument("connpool::RunnerOptions: progress_interval must be >= 0 ms, got " +
                                    std::to_string(interval.count()) + " ms");
    constexpr auto most = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds::max());
    if (interval >= most) return std::chrono::nanoseconds::max();
    return interval;
}

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

class JobControl;

/// Marks, for as long as it lives, that this thread is inside `job`: running its operation or
/// delivering one of its callbacks. Scopes nest (a callback may cancel another job, whose final
/// callback then runs inside it), so they form a chain through the stack, one per thread.
/// wait() and wait_all() read the chain to refuse a wait that could never return.
class InsideJob {
public:
    explicit InsideJob(const JobControl& job) noexcept : job_(&job), outer_(innermost()) { innermost() = this; }
    InsideJob(const InsideJob&) = delete;
    InsideJob& operator=(const InsideJob&) = delete;
    ~InsideJob() { innermost() = outer_; }

    /// Returns whether this thread is inside `job` (at any depth).
    [[nodiscard]] static bool here(const JobControl& job) noexcept {
        for (const InsideJob* scope = innermost(); scope != nullptr; scope = scope->outer_)
            if (scope->job_ == &job) return true;
        return false;
    }

private:
    static const InsideJob*& innermost() noexcept {
        thread_local const InsideJob* scope = nullptr;
        return scope;
    }

    const JobControl* job_;
    const InsideJob* outer_;
};

/// The state of one job, shared by the runner, its handles and its reporter.
///
/// Design: `mu_` guards every field below it. Callbacks run without the lock held, through a
/// serializer: whoever finds no delivery in progress delivers, re-reading the latest state for
/// each callback, until nothing is pending; anyone else only marks a delivery pending. So
/// callbacks never overlap, each shows the newest state (so `done` never goes back), and a
/// callback may call back into its own job (cancel(), progress()) without deadlock. `ended_`
/// turns true only after the final callback has returned; wait() waits for it.
class JobControl {
public:
    JobControl(std::uint64_t id, std::string name, JobKind kind, ProgressCallback callback,
               std::shared_ptr<const CallbackErrorSink> sink, std::chrono::nanoseconds throttle)
        : callback_(std::move(callback)), sink_(std::move(sink)), throttle_(throttle) {
        progress_.id = id;
        progress_.name = std::move(name);
        progress_.kind = kind;
        submitted_at_ = job_clock::now();
    }

    // ---- runner side ----

    /// Keeps the runner's operation (type-erased: JobControl does not know the connection type)
    /// until the job ends; the runner reads it back with operation() when the job starts.
    void hold_operation(std::shared_ptr<void> operation) {
        std::lock_guard lock(mu_);
        operation_ = std::move(operation);
    }

    /// Returns the operation given to hold_operation(); empty once the job has ended.
    [[nodiscard]] std::shared_ptr<void> operation() const {
        std::lock_guard lock(mu_);
        return operation_;
    }

    /// Delivers the initial "queued" callback.
    void announce() {
        std::unique_lock lock(mu_);
        notify(lock, true);
    }

    /// queued → running, at the moment the job got its lease. Returns false if the job was
    /// cancelled in the meantime (the caller gives the lease back unused).
    bool start() {
        std::unique_lock lock(mu_);
        if (progress_.state != JobState::queued) return false;
        started_at_ = job_clock::now();
        progress_.state = JobState::running;
        meter_.start(started_at_, 0);
        notify(lock, true);
        return true;
    }

    /// Ends the job in `state` (succeeded, failed or cancelled), with `error` when failed,
    /// delivers the final callback and then wakes the waiters. Does nothing if it had ended.
    void finish(JobState state, std::string error = {}) {
        std::unique_lock lock(mu_);
        finish_locked(lock, state, std::move(error));
    }

    /// Cancels the job if it is still queued; returns whether it did. The check and the
    /// transition happen under one lock, so start() cannot slip in between them.
    bool cancel_if_queued() {
        stop_.store(true, std::memory_order_relaxed);
        std::unique_lock lock(mu_);
        if (progress_.state != JobState::queued) return false;
        finish_locked(lock, JobState::cancelled, {});
        return true;
    }

private:
    void finish_locked(std::unique_lock<std::mutex>& lock, JobState state, std::string error) {
        if (is_final(progress_.state)) return;
        const auto now = job_clock::now();
        if (progress_.state == JobState::queued) started_at_ = now; // never ran: waited until now
        ended_at_ = now;
        progress_.state = state;
        progress_.error = std::move(error);
        if (state == JobState::succeeded && progress_.total < progress_.done)
            progress_.total = progress_.done; // unknown (or overrun) total: the work was all of it
        notify(lock, true);
    }

public:
    // ---- reporter side (the thread running the operation) ----

    void set_total(std::uint64_t total, std::string_view unit) {
        std::unique_lock lock(mu_);
        total = std::max(total, progress_.done);
        const bool unit_changed = !unit.empty() && unit != progress_.unit;
        if (total == progress_.total && !unit_changed) return; // nothing new to report
        progress_.total = total;
        if (unit_changed) progress_.unit.assign(unit);
        notify(lock, false);
    }

    void advance(std::uint64_t units) {
        std::unique_lock lock(mu_);
        const std::uint64_t before = progress_.done;
        progress_.done += units;
        // Reaching 100 % is always delivered (not only at the end), once: not again for every
        // report past an underestimated total.
        const bool reached = progress_.total != 0 && before < progress_.total &&
                             progress_.done >= progress_.total;
        if (progress_.total != 0 && progress_.done > progress_.total)
            progress_.total = progress_.done;
        const auto now = job_clock::now();
        meter_.sample(now, progress_.done);
        notify(lock, reached, now);
    }

    void set_phase(std::string_view phase) {
        std::unique_lock lock(mu_);
        if (progress_.phase == phase) return;
        progress_.phase.assign(phase);
        notify(lock, true);
    }

    void count_restart() {
        std::unique_lock lock(mu_);
        ++progress_.restarts;
        notify(lock, false);
    }

    void count_retry() {
        std::unique_lock lock(mu_);
        ++progress_.retries;
        notify(lock, false);
    }

    [[nodiscard]] bool stop_requested() const noexcept {
        return stop_.load(std::memory_order_relaxed);
    }

    // ---- handle side ----

    void request_stop() noexcept { stop_.store(true, std::memory_order_relaxed); }

    [[nodiscard]] Progress progress() const {
        std::lock_guard lock(mu_);
        return make_progress(job_clock::now());
    }

    [[nodiscard]] JobState state() const {
        std::lock_guard lock(mu_);
        return progress_.state;
    }

    [[nodiscard]] std::string error() const {
        std::lock_guard lock(mu_);
        return progress_.error;
    }

    [[nodiscard]] std::uint64_t id() const noexcept { return progress_.id; } // immutable

    /// Returns whether the job has ended and its final callback has run.
    [[nodiscard]] bool ended() const noexcept { return ended_flag_.load(std::memory_order_acquire); }

    /// Throws std::logic_error if this thread is inside this job (its operation or one of its
    /// callbacks): the job cannot end while the thread that would end it waits for it.
    void check_not_inside(const char* who) const {
        if (InsideJob::here(*this))
            throw std::logic_error(std::string("connpool::") + who + ": called from a callback or the operation of job '" +
                                   progress_.name + "' itself, so it would wait for ever");
    }

    JobState wait() const {
        check_not_inside("JobHandle::wait");
        std::unique_lock lock(mu_);
        ended_cv_.wait(lock, [&] { return ended_; });
        return progress_.state;
    }

    bool wait_until(job_clock::time_point deadline) const {
        check_not_inside("JobHandle::wait_for");
        std::unique_lock lock(mu_);
        return ended_cv_.wait_until(lock, deadline, [&] { return ended_; });
    }

private:
    Progress make_progress(job_clock::time_point now) const {
        Progress p = progress_;
        switch (p.state) {
        case JobState::queued:
            p.waited = now - submitted_at_;
            break;
        case JobState::running:
            p.waited = started_at_ - submitted_at_;
            p.elapsed = now - started_at_;
            p.rate = std::max(0.0, meter_.rate_at(now, p.done));
            if (p.total != 0 && p.rate > 0) {
                const double seconds = static_cast<double>(p.total - p.done) / p.rate;
                p.eta = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::duration<double>(std::min(seconds, 1e9)));
            }
            break;
        default: // ended
            p.waited = started_at_ - submitted_at_;
            p.elapsed = ended_at_ - started_at_;
            if (const double s = std::chrono::duration<double>(p.elapsed).count(); s > 0)
                p.rate = static_cast<double>(p.done) / s;
            if (p.state == JobState::succeeded) p.eta = std::chrono::nanoseconds{0};
            break;
        }
        return p;
    }

    /// Delivers the latest progress unless it is throttled (`force` overrides the throttle).
    /// Called with `lock` held; returns with it held.
    void notify(std::unique_lock<std::mutex>& lock, bool force,
                job_clock::time_point now = job_clock::now()) {
        if (ended_) return;
        if (!force && now - delivered_at_ < throttle_) return;
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
            const bool final = is_final(p.state);
            if (callback_) {
                lock.unlock();
                try {
                    const InsideJob inside(*this);
                    callback_(p);
                } catch (...) {
                    report_callback_error(p, std::current_exception());
                }
                lock.lock();
            }
            if (final) {
                // Nothing calls the job's callback or operation again: release them (and what
                // they captured) before waking the waiters, so wait() returning means they are
                // gone, and a handle or snapshot that outlives the job keeps only its Progress.
                // Destroyed without the lock, as their destructors are user code.
                ProgressCallback callback = std::exchange(callback_, nullptr);
                std::shared_ptr<void> operation = std::move(operation_);
                lock.unlock();
                callback = nullptr;
                operation.reset();
                lock.lock();
                ended_ = true;
                ended_flag_.store(true, std::memory_order_release);
                pending_ = false;
                ended_cv_.notify_all();
            }
        }
        delivering_ = false;
    }

    void report_callback_error(const Progress& p, std::exception_ptr error) const noexcept {
        try {
            if (sink_ && *sink_) (*sink_)(p, std::move(error));
        } catch (...) {
            // The sink itself failed; there is nowhere left to report it, and the job goes on.
        }
    }

    ProgressCallback callback_; // cleared once the final callback has run
    std::shared_ptr<void> operation_; // the runner's operation, owned here so an ended job drops it
    const std::shared_ptr<const CallbackErrorSink> sink_;
    const std::chrono::nanoseconds throttle_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> ended_flag_{false}; // ended_, readable without the lock

    mutable std::mutex mu_;
    mutable std::condition_variable ended_cv_;
    Progress progress_;
    job_clock::time_point submitted_at_{};
    job_clock::time_point started_at_{};
    job_clock::time_point ended_at_{};
    RateMeter meter_;
    job_clock::time_point delivered_at_{}; // last callback
    bool delivering_ = false;
    bool pending_ = false;
    bool forced_ = false;
    bool ended_ = false;
};

} // namespace detail

/// What an operation uses to report its progress and to learn that it should stop. Given to
/// Job::run by the runner; used only by the thread running the operation.
class ProgressReporter {
public:
    /// Wraps a job's shared state; made by JobRunner, not by users.
    explicit ProgressReporter(detail::JobControl& control) noexcept : control_(control) {}

    ProgressReporter(const ProgressReporter&) = delete;
    ProgressReporter& operator=(const ProgressReporter&) = delete;

    /// Sets how many units the whole operation has (0 = unknown) and what they are ("pages",
    /// "bytes", "rows"; an empty unit keeps the previous one). Never below what is done already.
    void set_total(std::uint64_t total, std::string_view unit = {}) { control_.set_total(total, unit); }

    /// Records `units` more units done. Cheap enough to call after every step.
    void advance(std::uint64_t units) { control_.advance(units); }

    /// Says what the operation is doing now ("copying", "verifying"...); delivered at once.
    void set_phase(std::string_view phase) { control_.set_phase(phase); }

    /// Counts one restart: the operation started over (its redone work goes into the total).
    void count_restart() { control_.count_restart(); }

    /// Counts one retry of a step (e.g. the database was busy).
    void count_retry() { control_.count_retry(); }

    /// Returns whether the job was cancelled. An operation that sees true should clean up and
    /// return; the job then ends `cancelled` (were it to throw instead, it ends `failed`).
    [[nodiscard]] bool stop_requested() noexcept {
        const bool stop = control_.stop_requested();
        observed_stop_ = observed_stop_ || stop;
        return stop;
    }

    /// Returns whether the operation was told to stop (stop_requested() returned true to it),
    /// which is what makes a job that returns normally end `cancelled` rather than `succeeded`.
    [[nodiscard]] bool observed_stop() const noexcept { return observed_stop_; }

private:
    detail::JobControl& control_;
    bool observed_stop_ = false;
};

/// A backup or restore operation to run through a pool: `{name, kind, run}`. `run(conn, reporter)`
/// gets the leased connection for as long as it runs; it returns on success (or after
/// reporter.stop_requested()), and throws on failure (OperationError keeps the connection).
template <class Conn>
struct Job {
    /// Shown in Progress and monitoring (e.g. the database or file name).
    std::string name{};
    /// Backup or restore.
    JobKind kind = JobKind::backup;
    /// The operation itself.
    std::function<void(Conn&, ProgressReporter&)> run{};
};

/// A copyable reference to a submitted job: watch it, wait for it, cancel it. Stays valid after
/// the runner is gone. A default-constructed handle refers to no job (valid() is false).
class JobHandle {
public:
    /// Creates a handle that refers to no job.
    JobHandle() = default;

    /// Refers to `control`; made by JobRunner, not by users.
    explicit JobHandle(std::shared_ptr<detail::JobControl> control) noexcept
        : control_(std::move(control)) {}

    /// Returns whether the handle refers to a job.
    [[nodiscard]] bool valid() const noexcept { return control_ != nullptr; }

    /// Returns the job's number in its runner (Progress::id).
    [[nodiscard]] std::uint64_t id() const { return control().id(); }

    /// Returns the job's latest progress (computed now, not throttled).
    [[nodiscard]] Progress progress() const { return control().progress(); }

    /// Returns the job's state now.
    [[nodiscard]] JobState state() const { return control().state(); }

    /// Blocks until the job has ended, its final callback has run and its lease is back (or
    /// discarded); returns the final state. Throws std::logic_error when called from the job's
    /// own callback or operation (it could never return); waiting for another job there works.
    JobState wait() const { return control().wait(); }

    /// Like wait(), for at most `timeout`; returns whether the job has ended. A timeout <= 0
    /// does not block; one past the clock's range (hours::max(), infinity) waits for ever;
    /// NaN throws std::invalid_argument; from the job's own callback or operation, logic_error.
    template <class Rep, class Period>
    bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
        using clock = detail::job_clock;
        if constexpr (std::is_floating_point_v<Rep>) {
            // NaN compares false with everything, so it would reach the conversion below,
            // whose result is undefined.
            if (std::isnan(timeout.count()))
                throw std::invalid_argument("connpool::JobHandle::wait_for: the timeout is nan");
        }
        const auto now = clock::now();
        if (timeout <= timeout.zero()) return control().wait_until(now);
        // Compared in floating point: converting a huge timeout (milliseconds::max()) to clock
        // ticks would overflow into a deadline in the past.
        using fticks = std::chrono::duration<double, clock::period>;
        const bool forever = fticks(timeout) >= fticks(clock::time_point::max() - now);
        return control().wait_until(forever ? clock::time_point::max()
                                            : now + std::chrono::ceil<clock::duration>(timeout));
    }

    /// Asks the job to stop: a queued job is cancelled at once and never takes a lease; a
    /// running one ends `cancelled` when its operation next checks stop_requested() and returns.
    /// Does nothing to a job that has ended. Safe from any thread, including a callback.
    void cancel() const { control().cancel_if_queued(); }

    /// Returns why the job failed (empty unless it failed).
    [[nodiscard]] std::string error() const { return control().error(); }

private:
    detail::JobControl& control() const {
        if (!control_) throw std::logic_error("connpool::JobHandle: the handle refers to no job");
        return *control_;
    }

    std::shared_ptr<detail::JobControl> control_;
};

/// How a JobRunner behaves. Every field has a default.
struct RunnerOptions {
    /// Most jobs running at once. Default 0 = the pool's max_size; never more than max_size.
    std::size_t max_running = 0;
    /// Least time between two progress callbacks of one job; state changes and reaching 100 %
    /// are delivered regardless. Default 100 ms; 0 = every report; a value too large for
    /// nanoseconds (e.g. milliseconds::max()) = never, only those; negative: invalid_argument.
    std::chrono::milliseconds progress_interval{100};
    /// How many ended jobs snapshot() keeps (the oldest go first). Default 1024.
    std::size_t keep_ended = 1024;
    /// Receives exceptions thrown by progress callbacks (the job goes on). Called on the thread
    /// that ran the callback. Default: a line on stderr.
    CallbackErrorSink on_callback_error = [](const Progress& p, std::exception_ptr error) {
        std::fprintf(stderr, "connpool: the progress callback of job '%s' threw: %s\n",
                     p.name.c_str(), detail::describe(error).c_str());
    };
};

/// Runs Jobs through a Pool: each job takes one lease when it starts, holds it while its
/// operation runs, and gives it back (or discards it, if the operation threw anything but an
/// OperationError) when it ends.
///
/// Design: jobs wait in a FIFO queue (`mu_` guards it, the job list and the workers). Up to
/// max_running worker threads, started as jobs arrive, each loop: wait for a queued job,
/// acquire a lease, then take the oldest job still queued. Acquiring before taking the job
/// keeps a queued job cancellable at once, without it ever having had a lease. If the pool
/// times out or is closed, the job at the head fails with that error. Every member may be
/// called from any thread. The pool must outlive the runner.
template <class PoolT>
class JobRunner {
public:
    /// The connection type of the pool.
    using connection_type = typename PoolT::connection_type;
    /// The jobs this runner runs.
    using job_type = Job<connection_type>;

    /// Creates a runner for `pool`; starts no thread yet.
    explicit JobRunner(PoolT& pool, RunnerOptions options = {})
        : pool_(pool),
          limit_(std::min(options.max_running == 0 ? pool.options().max_size : options.max_running,
                          pool.options().max_size)),
          throttle_(detail::throttle_from(options.progress_interval)),
          keep_ended_(options.keep_ended),
          sink_(std::make_shared<const CallbackErrorSink>(std::move(options.on_callback_error))) {}

    JobRunner(const JobRunner&) = delete;
    JobRunner& operator=(const JobRunner&) = delete;

    /// Cancels the jobs still queued and waits for the running ones to end.
    ~JobRunner() {
        std::vector<std::thread> workers;
        {
            // Once stopping_ is set no submit() starts a worker (it checks stopping_ in the same
            // critical section as it starts one), so the list taken here is complete.
            std::lock_guard lock(mu_);
            stopping_ = true;
            workers.swap(workers_);
        }
        cancel_queued();
        work_cv_.notify_all();
        for (auto& worker : workers) worker.join();
    }

    /// Queues `job` and returns its handle; `on_progress` (optional) gets its progress. The
    /// "queued" callback runs on this thread before submit() returns; the others run on the
    /// runner's threads (or, for a cancellation while queued, on the cancelling thread).
    /// Throws std::invalid_argument if job.run is empty.
    JobHandle submit(job_type job, ProgressCallback on_progress = {}) {
        if (!job.run)
            throw std::invalid_argument("connpool::JobRunner::submit: job '" + job.name +
                                        "' has no run function");
        std::shared_ptr<detail::JobControl> control;
        {
            std::lock_guard lock(mu_);
            if (stopping_) throw std::logic_error("connpool::JobRunner::submit: the runner is being destroyed");
            control = std::make_shared<detail::JobControl>(++last_id_, job.name, job.kind,
                                                           std::move(on_progress), sink_, throttle_);
        }
        control->hold_operation(std::make_shared<operation_type>(std::move(job.run)));
        // Before any other thread can reach the job (cancel_all(), snapshot()): "queued" is
        // always its first callback.
        control->announce();
        CONNPOOL_JOB_TEST_POINT("submit: announced, not yet queued", control->id());
        enum class Outcome { queued, cancelled, no_worker } outcome = Outcome::queued;
        std::exception_ptr thread_error;
        {
            // One critical section registers the job, checks stopping_ and starts a worker, so
            // the destructor (which sets stopping_ and takes the worker list under mu_) either
            // finds the worker in the list or this job finds stopping_ set: never a worker it
            // does not join (bug 10: a worker started while the destructor walked the list).
            std::lock_guard lock(mu_);
            forget_ended_jobs();
            // Concurrent submits may get here out of id order; jobs_ stays in submission order.
            // Searched from the back: only submits racing this one can be ahead of it, so this
            // is O(1) however many jobs the runner keeps.
            auto at = jobs_.end();
            while (at != jobs_.begin() && (*std::prev(at))->id() > control->id()) --at;
            jobs_.insert(at, control);
            if (stopping_) { // submitted by a running job while the runner is destroyed
                outcome = Outcome::cancelled;
            } else {
                queue_.push_back(Entry{control});
                // Start a worker unless enough are free for what is queued.
                if (workers_.size() < limit_ && idle_ < queue_.size()) {
                    try {
                        workers_.emplace_back([this] { work(); });
                    } catch (...) {
                        if (workers_.empty()) { // nothing would ever run it
                            queue_.pop_back();
                            outcome = Outcome::no_worker;
                            thread_error = std::current_exception();
                        }
                    }
                }
            }
        }
        // The final callbacks run without mu_ held, so they may call back into the runner.
        if (outcome == Outcome::cancelled) {
            control->finish(JobState::cancelled);
            return JobHandle{std::move(control)};
        }
        if (outcome == Outcome::no_worker) {
            control->finish(JobState::failed, "connpool::JobRunner: cannot start a worker thread");
            std::rethrow_exception(thread_error);
        }
        work_cv_.notify_one();
        return JobHandle{std::move(control)};
    }

    /// Returns the latest progress of every job (queued, running, and up to keep_ended ended
    /// ones), in submission order.
    [[nodiscard]] std::vector<Progress> snapshot() const {
        std::vector<std::shared_ptr<detail::JobControl>> jobs;
        {
            std::lock_guard lock(mu_);
            jobs.assign(jobs_.begin(), jobs_.end());
        }
        std::vector<Progress> out;
        out.reserve(jobs.size());
        for (const auto& job : jobs) out.push_back(job->progress());
        // Jobs may have ended since the last submit() trimmed the list: trim the copy too.
        detail::drop_oldest_ended(out, keep_ended_, [](const Progress& p) { return is_final(p.state); });
        return out;
    }

    /// Blocks until every job submitted so far (and any submitted meanwhile) has ended and its
    /// final callback has run. Throws std::logic_error when called from a callback or operation
    /// of a job that has not ended (it would wait for that job, i.e. for itself).
    void wait_all() const {
        for (;;) {
            std::vector<std::shared_ptr<detail::JobControl>> live;
            {
                std::lock_guard lock(mu_);
                for (const auto& job : jobs_)
                    if (!job->ended()) live.push_back(job);
            }
            if (live.empty()) return;
            // Checked before waiting for any: a wait_all() that would wait for its own job
            // throws without having waited for the others.
            for (const auto& job : live) job->check_not_inside("JobRunner::wait_all");
            for (const auto& job : live) job->wait();
        }
    }

    /// Cancels every job: queued ones at once, running ones at their next stop check.
    void cancel_all() {
        std::vector<std::shared_ptr<detail::JobControl>> jobs;
        {
            std::lock_guard lock(mu_);
            jobs.assign(jobs_.begin(), jobs_.end());
        }
        for (const auto& job : jobs) job->cancel_if_queued();
    }

    /// Returns the most jobs this runner runs at once.
    [[nodiscard]] std::size_t max_running() const noexcept { return limit_; }

private:
    using operation_type = std::function<void(connection_type&, ProgressReporter&)>;

    struct Entry {
        std::shared_ptr<detail::JobControl> control; // holds the operation until the job ends
    };

    void cancel_queued() {
        std::deque<Entry> queued;
        {
            std::lock_guard lock(mu_);
            queued.swap(queue_);
        }
        for (auto& entry : queued) entry.control->cancel_if_queued();
    }

    // Requires mu_. Drops jobs cancelled while queued from the head of the queue.
    void drop_ended_head() {
        while (!queue_.empty() && queue_.front().control->ended()) queue_.pop_front();
    }

    // Requires mu_. Drops the oldest ended jobs from jobs_ beyond keep_ended_, but only once
    // jobs_ has doubled since the last trim: each trim is linear, so submit() is O(1) amortised
    // (a trim on every submit made 40,000 submits quadratic). Between trims jobs_ holds at most
    // about twice what it must; an ended job there keeps only its Progress (JobControl drops
    // its callback and operation when it ends), and snapshot() trims its copy exactly.
    void forget_ended_jobs() {
        if (jobs_.size() < trim_at_) return;
        detail::drop_oldest_ended(jobs_, keep_ended_, [](const auto& job) { return job->ended(); });
        trim_at_ = std::max(2 * jobs_.size(), keep_ended_ + min_trim);
    }

    void work() {
        std::unique_lock lock(mu_);
        for (;;) {
            drop_ended_head();
            if (queue_.size() <= acquiring_) { // every queued job has a worker getting its lease
                if (stopping_) return;
                ++idle_;
                work_cv_.wait(lock);
                --idle_;
                continue;
            }
            ++acquiring_;
            lock.unlock();
            Lease<connection_type> lease;
            std::exception_ptr acquire_error;
            try {
                // Blocks up to the pool's acquire_timeout even if the job is cancelled meanwhile:
                // the pool has no way to call off a waiting acquire (yet).
                lease = pool_.acquire();
            } catch (...) {
                acquire_error = std::current_exception();
            }
            lock.lock();
            --acquiring_;
            drop_ended_head();
            if (queue_.empty()) { // cancelled while we acquired: nothing to run
                lock.unlock();
                lease.release();
                lock.lock();
                continue;
            }
            Entry entry = std::move(queue_.front());
            queue_.pop_front();
            lock.unlock();
            if (acquire_error) {
                entry.control->finish(JobState::failed, detail::describe(acquire_error));
            } else {
                run(entry, std::move(lease));
            }
            entry = Entry{}; // drop the operation (and what it captured) before waiting again
            lock.lock();
        }
    }

    static void run(Entry& entry, Lease<connection_type> lease) {
        detail::JobControl& control = *entry.control;
        if (!control.start()) { // cancelled between leaving the queue and starting
            lease.release();
            return;
        }
        // Running: only this thread ends the job, so the operation is still held.
        auto operation = std::static_pointer_cast<operation_type>(control.operation());
        ProgressReporter reporter(control);
        JobState end = JobState::succeeded;
        std::string error;
        bool connection_ok = true;
        try {
            const detail::InsideJob inside(control);
            (*operation)(*lease, reporter);
            if (reporter.observed_stop()) end = JobState::cancelled;
        } catch (const OperationError& e) {
            end = JobState::failed;
            error = e.what();
        } catch (...) {
            end = JobState::failed;
            error = detail::describe(std::current_exception());
            connection_ok = false;
        }
        operation.reset(); // JobControl drops the last reference before wait() returns
        // The lease goes back before the final callback, so wait() returning implies it is back.
        if (connection_ok) {
            lease.release();
        } else {
            lease.discard();
        }
        control.finish(end, std::move(error));
    }

    PoolT& pool_;
    const std::size_t limit_;
    const std::chrono::nanoseconds throttle_;
    const std::size_t keep_ended_;
    const std::shared_ptr<const CallbackErrorSink> sink_;

    mutable std::mutex mu_;
    std::condition_variable work_cv_;
    std::deque<Entry> queue_;
    std::deque<std::shared_ptr<detail::JobControl>> jobs_; // submission order; see forget_ended_jobs()
    static constexpr std::size_t min_trim = 64;
    std::size_t trim_at_ = min_trim; // jobs_.size() at which the next submit trims it
    std::vector<std::thread> workers_;
    std::size_t idle_ = 0;
    std::size_t acquiring_ = 0; // workers inside pool_.acquire() for a queued job
    std::uint64_t last_id_ = 0;
    bool stopping_ = false;
};

} // namespace connpool
