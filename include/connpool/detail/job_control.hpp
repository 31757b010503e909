#pragma once

// One job's state and its controls: JobControl (shared by the runner, the job's handles and
// its reporter) and the public views of it, ProgressReporter (for the operation) and JobHandle
// (for the submitter), plus Job, the operation to run. Public names are included through
// <connpool/jobs.hpp>.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath> // std::isnan: wait_for's timeout
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "job_delivery.hpp"
#include "job_progress.hpp"
#include "job_queue.hpp"
#include "job_rate_meter.hpp"

namespace connpool {

namespace detail {

/// The state of one job, shared by the runner, its handles and its reporter.
///
/// Design: `mu_` guards every field below it, the delivery's included. The transitions
/// (queued → running → final, or queued → cancelled) are checked and made under `mu_`, so a
/// cancel and a start cannot both win. Callbacks go through `delivery_` (job_delivery.hpp),
/// which runs them without the lock, one at a time; the job counts as ended only once its
/// final callback has returned, which is what wait() waits for. The stop request is an atomic
/// so the operation can poll it at every step without taking the lock. A job cancelled while
/// queued first tells its queue (set_queue()), under `mu_`, so no worker can take it after
/// the check and the runner can call off an acquire it no longer needs. The runner's derived
/// class holds the operation (it knows the connection type) and drops it in drop_operation().
class JobControl {
public:
    JobControl(std::uint64_t id, std::string name, JobKind kind, ProgressCallback callback,
               std::shared_ptr<const CallbackErrorSink> sink, std::chrono::nanoseconds throttle)
        : delivery_(std::move(callback), std::move(sink), throttle) {
        progress_.id = id;
        progress_.name = std::move(name);
        progress_.kind = kind;
        submitted_at_ = job_clock::now();
    }

    JobControl(const JobControl&) = delete;
    JobControl& operator=(const JobControl&) = delete;
    virtual ~JobControl() = default;

    // ---- runner side ----

    /// Makes a cancellation while queued call `queue->withdraw(*this)` first. Set once, before
    /// the job is shared with any other thread; `queue` must outlive every queued state.
    void set_queue(QueueWithdrawal<JobControl>* queue) noexcept { queue_ = queue; }

    /// The job's place in its runner's queue; guarded by the runner's mutex, not by this job's.
    [[nodiscard]] QueueLink<JobControl>& queue_link() noexcept { return link_; }

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
        // Out of the queue before the state changes: a worker that took it already is past
        // this point only through start(), which waits for mu_ and then sees the cancellation.
        if (queue_ != nullptr) queue_->withdraw(*this);
        finish_locked(lock, JobState::cancelled, {});
        return true;
    }

protected:
    /// Releases the operation (and what it captured); called once, when the job ends, without
    /// the lock (its destructor is user code). JobControl itself holds no operation.
    virtual void drop_operation() noexcept {}

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
        // Nothing runs the operation again: release it (and what it captured) before the final
        // callback, so wait() returning means it is gone. Destroyed without the lock, as its
        // destructor is user code; the state is final already, so no transition slips in, and
        // only the thread that made it final gets here.
        lock.unlock();
        drop_operation();
        lock.lock();
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
    [[nodiscard]] bool ended() const noexcept { return delivery_.ended_flag(); }

    /// Throws std::logic_error if this thread is inside this job (its operation or one of its
    /// callbacks): the job cannot end while the thread that would end it waits for it.
    void check_not_inside(const char* who) const {
        if (InsideJob::here(this))
            throw std::logic_error(std::string("connpool::") + who + ": called from a callback or the operation of job '" +
                                   progress_.name + "' itself, so it would wait for ever");
    }

    JobState wait() const {
        check_not_inside("JobHandle::wait");
        std::unique_lock lock(mu_);
        delivery_.wait_ended(lock);
        return progress_.state;
    }

    bool wait_until(job_clock::time_point deadline) const {
        check_not_inside("JobHandle::wait_for");
        std::unique_lock lock(mu_);
        return delivery_.wait_ended_until(lock, deadline);
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
    /// `now` is the caller's clock reading, if it has one; the delivery reads the clock itself
    /// only when there is a callback to throttle.
    void notify(std::unique_lock<std::mutex>& lock, bool force, job_clock::time_point now = {}) {
        delivery_.deliver(lock, force, is_final(progress_.state), now, this,
                          [this](job_clock::time_point at) { return make_progress(at); });
    }

    std::atomic<bool> stop_{false};

    QueueWithdrawal<JobControl>* queue_ = nullptr; // immutable once shared
    QueueLink<JobControl> link_;                   // guarded by the runner's mutex

    mutable std::mutex mu_;
    CallbackDelivery delivery_;
    Progress progress_;
    job_clock::time_point submitted_at_{};
    job_clock::time_point started_at_{};
    job_clock::time_point ended_at_{};
    RateMeter meter_;
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

    /// Returns whether the job was cancelled, like stop_requested(), but callable from any thread
    /// and not counted as seen by the operation: for a watcher the operation starts, e.g. one
    /// that kills a blocking statement on the server (mysql::CancelOnStop).
    [[nodiscard]] bool stop_pending() const noexcept { return control_.stop_requested(); }

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


} // namespace connpool
