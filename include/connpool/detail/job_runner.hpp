#pragma once

// The job runner: RunnerOptions and JobRunner, which runs Jobs through a Pool, one lease per
// running job, on worker threads of its own. Public names are included through
// <connpool/jobs.hpp>.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio> // std::fprintf: the default sink for callback errors
#include <deque>
#include <exception>
#include <functional>
#include <iterator> // std::prev: the insertion point in jobs_
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <stop_token> // ~JobRunner calls off waiting acquires
#include <thread>
#include <utility>
#include <vector>

#include "../lease.hpp"
#include "job_control.hpp"
#include "job_progress.hpp"

// Test seam: a test that defines CONNPOOL_JOB_TEST_POINT(point, job_id) before including the job
// layer is called at the named points, to hold a thread inside the window a race needs
// (tests/jobs_shutdown_test.cpp). Nobody else defines it, so it compiles to nothing.
#ifndef CONNPOOL_JOB_TEST_POINT
#define CONNPOOL_JOB_TEST_POINT(point, job_id) static_cast<void>(0)
#endif

namespace connpool {

namespace detail {

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

} // namespace detail

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
        shutdown_.request_stop(); // calls off the workers' waiting acquires
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

    /// Returns the pool the runner leases from, for an operation that needs a lease of its own
    /// beside its jobs' (e.g. the snapshot leader of a database backup). Thread-safe.
    [[nodiscard]] PoolT& pool() const noexcept { return pool_; }

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

    // The one place a worker takes a lease, for the job at the head of the queue (not yet
    // chosen: see the design note). ~JobRunner calls it off through shutdown_, so destroying
    // the runner never waits for the pool's acquire_timeout. Throws what the pool throws; the
    // caller fails the head job with it (or cancels it, when the runner called it off). A pool
    // type without a stoppable acquire is used as it is.
    Lease<connection_type> acquire_for_job() {
        if constexpr (requires(PoolT& p, std::stop_token t) { p.acquire(t); }) {
            return pool_.acquire(shutdown_.get_token());
        } else {
            return pool_.acquire();
        }
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
                lease = acquire_for_job();
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
            if (acquire_error && shutdown_.stop_requested()) {
                entry.control->finish(JobState::cancelled); // the runner called it off
            } else if (acquire_error) {
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
            const detail::InsideJob inside(&control);
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
    std::stop_source shutdown_; // requested by ~JobRunner: workers' acquires end at once
};


} // namespace connpool
