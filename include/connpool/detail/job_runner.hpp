#pragma once

// The job runner: RunnerOptions and JobRunner, which runs Jobs through a Pool, one lease per
// running job, on worker threads of its own. Public names are included through
// <connpool/jobs.hpp>.

#include <algorithm>
#include <atomic>
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
#include <stop_token> // workers' acquires are called off when no queued job needs them
#include <thread>
#include <utility>
#include <vector>

#include "../lease.hpp"
#include "job_control.hpp"
#include "job_progress.hpp"
#include "job_queue.hpp"

// Test seam: a test that defines CONNPOOL_JOB_TEST_POINT(point, job_id) before including the job
// layer is called at the named points, to hold a thread inside the window a race needs
// (tests/jobs_shutdown_test.cpp). Nobody else defines it, so it compiles to nothing.
#ifndef CONNPOOL_JOB_TEST_POINT
#define CONNPOOL_JOB_TEST_POINT(point, job_id) static_cast<void>(0)
#endif

namespace connpool {

namespace detail {

/// Erases the oldest elements of `items` (a vector or deque) for which `ended` is true until at
/// most `keep` such elements remain; the others keep their order. Each erased element is first
/// handed to `take` (which may move it away, e.g. to destroy it later). Linear in items.size().
template <class Container, class Ended, class Take>
void drop_oldest_ended(Container& items, std::size_t keep, Ended ended, Take take) {
    std::size_t count = 0;
    for (const auto& item : items) count += ended(item) ? 1 : 0;
    if (count <= keep) return;
    std::size_t excess = count - keep;
    // Compacted by hand rather than with erase_if, whose predicate may not change an element.
    auto out = items.begin();
    for (auto it = items.begin(); it != items.end(); ++it) {
        if (excess > 0 && ended(*it)) {
            --excess;
            take(*it);
            continue;
        }
        if (out != it) *out = std::move(*it);
        ++out;
    }
    items.erase(out, items.end());
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
    /// The id of the first job; the next ones count up from it. Default 1. Ids another runner
    /// handed out with reserve_ids() keep a helper runner's jobs apart from its own in the sinks.
    std::uint64_t first_id = 1;
    /// Receives exceptions thrown by progress callbacks (the job goes on). Called on the thread
    /// that ran the callback. Default: a line on stderr.
    CallbackErrorSink on_callback_error = [](const Progress& p, std::exception_ptr error) {
        std::fprintf(stderr, "connpool: the progress callback of job '%s' threw: %s\n",
                     p.name.c_str(), detail::describe(error).c_str());
    };
};

namespace detail {

/// A job of a JobRunner: its JobControl plus the operation, which needs the connection type.
template <class Conn>
class RunnableJob final : public JobControl {
public:
    /// The operation's type, as in Job<Conn>::run.
    using operation_type = std::function<void(Conn&, ProgressReporter&)>;

    /// A JobControl (same arguments) that holds `operation` until the job ends.
    RunnableJob(std::uint64_t id, std::string name, JobKind kind, ProgressCallback callback,
                std::shared_ptr<const CallbackErrorSink> sink, std::chrono::nanoseconds throttle,
                operation_type operation)
        : JobControl(id, std::move(name), kind, std::move(callback), std::move(sink), throttle),
          operation_(std::move(operation)) {}

    /// Runs the operation; only the worker that start()ed the job calls it, before finish().
    void run_operation(Conn& connection, ProgressReporter& reporter) { operation_(connection, reporter); }

private:
    // Only the thread that ends the job calls it, once; a running job is ended by the thread
    // running it, after run_operation() returned.
    void drop_operation() noexcept override { operation_ = nullptr; }

    operation_type operation_;
};

} // namespace detail

/// Runs Jobs through a Pool: each job takes one lease when it starts, holds it while its
/// operation runs, and gives it back (or discards it, if the operation threw anything but an
/// OperationError) when it ends.
///
/// Design: `mu_` guards the queue, the job list, the workers and the counts below. Up to
/// max_running worker threads, started as jobs arrive, each loop: acquire a lease while more
/// jobs are queued than workers are acquiring, then take the oldest job still queued.
/// Acquiring before taking the job keeps a queued job cancellable at once, without it ever
/// having had a lease; and it is why an acquire belongs to no job in particular. What the
/// runner keeps instead is a count: no more workers acquire than jobs are queued. A job
/// cancelled while queued leaves the queue at once (withdraw(), told by the job under its own
/// lock), and if that leaves more acquirers than queued jobs, the runner requests the stop
/// source of the youngest ones (the oldest keep their place in the pool's FIFO): their
/// acquires end with AcquireCancelled, no lease taken, and no job fails for it. If the pool
/// times out or is closed, the oldest queued job fails with that error.
///
/// Waking a sleeping worker costs a context switch, more than the rest of a short job, so a
/// submit wakes (or starts) one only when the queued jobs outnumber the workers acquiring or
/// about to look at the queue (`looking_`). One worker at a time, finding nothing to do, stays
/// awake a few dozen microseconds (yielding) before it sleeps, so a stream of short jobs is
/// served without waking anybody. Every member may be called from any thread. The pool must
/// outlive the runner.
template <class PoolT>
class JobRunner : private detail::QueueWithdrawal<detail::JobControl> {
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
          sink_(std::make_shared<const CallbackErrorSink>(std::move(options.on_callback_error))),
          last_id_(options.first_id != 0
                       ? options.first_id - 1
                       : throw std::invalid_argument("connpool::RunnerOptions: first_id must be at least 1")) {}

    JobRunner(const JobRunner&) = delete;
    JobRunner& operator=(const JobRunner&) = delete;

    /// Cancels the jobs still queued and waits for the running ones to end.
    ~JobRunner() {
        std::vector<std::thread> workers;
        std::vector<std::shared_ptr<detail::JobControl>> queued;
        {
            // Once stopping_ is set no submit() queues a job or starts a worker (it checks
            // stopping_ in the same critical section as it does both), so the lists taken here
            // are complete.
            std::lock_guard lock(mu_);
            stopping_.store(true, std::memory_order_relaxed);
            workers.swap(workers_);
            queued.reserve(queue_.size());
            queue_.for_each([&](detail::JobControl& job) { queued.push_back(job.queue_link().self); });
            arrivals_.fetch_add(1, std::memory_order_relaxed); // ends a spinning worker's wait
        }
        // Each cancellation takes its job out of the queue (withdraw()), and the last one
        // leaves no job for any acquire: every waiting acquire is called off, so this never
        // waits for the pool's acquire_timeout.
        for (const auto& job : queued) job->cancel_if_queued();
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
        if (stopping_.load(std::memory_order_relaxed))
            throw std::logic_error("connpool::JobRunner::submit: the runner is being destroyed");
        auto control = std::make_shared<job_control>(last_id_.fetch_add(1, std::memory_order_relaxed) + 1,
                                                     std::move(job.name), job.kind, std::move(on_progress),
                                                     sink_, throttle_, std::move(job.run));
        control->set_queue(this);
        // Before any other thread can reach the job (cancel_all(), snapshot()): "queued" is
        // always its first callback.
        control->announce();
        CONNPOOL_JOB_TEST_POINT("submit: announced, not yet queued", control->id());
        enum class Outcome { queued, cancelled, no_worker } outcome = Outcome::queued;
        std::exception_ptr thread_error;
        bool wake = false;
        std::vector<std::shared_ptr<detail::JobControl>> forgotten; // destroyed after mu_ is released
        {
            // One critical section registers the job, checks stopping_ and starts a worker, so
            // the destructor (which sets stopping_ and takes the worker list under mu_) either
            // finds the worker in the list or this job finds stopping_ set: never a worker it
            // does not join (bug 10: a worker started while the destructor walked the worker list).
            std::lock_guard lock(mu_);
            forget_ended_jobs(forgotten);
            // Concurrent submits may get here out of id order; jobs_ stays in submission order.
            // Searched from the back: only submits racing this one can be ahead of it, so this
            // is O(1) however many jobs the runner keeps.
            auto at = jobs_.end();
            while (at != jobs_.begin() && (*std::prev(at))->id() > control->id()) --at;
            CONNPOOL_JOB_TEST_POINT("submit: job list searched", static_cast<std::uint64_t>(jobs_.end() - at));
            jobs_.insert(at, control);
            if (stopping_.load(std::memory_order_relaxed)) { // submitted by a running job while the runner is destroyed
                outcome = Outcome::cancelled;
            } else {
                queue_.push_back(control);
                arrivals_.fetch_add(1, std::memory_order_relaxed);
                // Wake or start a worker only for a job nobody will get to: not the acquiring
                // workers (one each), nor the ones awake that look at the queue before sleeping.
                const std::size_t unserved = queue_.size() - acquiring_;
                if (unserved > looking_ + wake_tokens_) {
                    if (sleeping_ > wake_tokens_) {
                        ++wake_tokens_;
                        wake = true;
                    } else if (workers_.size() < limit_) {
                        try {
                            workers_.emplace_back([this] { work(); });
                            ++looking_;
                        } catch (...) {
                            if (workers_.empty()) { // nothing would ever run it
                                static_cast<void>(queue_.remove(*control));
                                outcome = Outcome::no_worker;
                                thread_error = std::current_exception();
                            }
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
        if (wake) work_cv_.notify_one();
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
        detail::drop_oldest_ended(out, keep_ended_, [](const Progress& p) { return is_final(p.state); },
                                  [](const Progress&) {});
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

    /// Cancels every job: queued ones at once (the workers' acquires for them are called off),
    /// running ones at their next stop check.
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

    /// Takes `n` ids from this runner's sequence, never to be given to one of its jobs, and
    /// returns the first: for a runner that runs jobs on this one's behalf (RunnerOptions::
    /// first_id; a MySQL database backup's table jobs), so no two jobs a sink sees share an id.
    [[nodiscard]] std::uint64_t reserve_ids(std::uint64_t n) noexcept {
        return last_id_.fetch_add(n, std::memory_order_relaxed) + 1;
    }

private:
    using job_control = detail::RunnableJob<connection_type>;

    // A worker inside pool_.acquire(), in the list of acquirers (oldest first) until it is
    // called off or its acquire returns. Lives on the worker's stack; guarded by mu_.
    struct Acquirer {
        std::stop_source* source;
        Acquirer* prev = nullptr;
        Acquirer* next = nullptr;
        bool called_off = false;
    };

    // A job cancelled while queued leaves the queue, and the acquires no queued job needs any
    // more end. Called by the job (JobControl::cancel_if_queued) under its own lock; takes mu_.
    void withdraw(detail::JobControl& job) noexcept override {
        std::shared_ptr<detail::JobControl> queued; // the queue's reference; the canceller holds another
        {
            std::lock_guard lock(mu_);
            if (!decltype(queue_)::contains(job)) return; // a worker took it; its start() sees the cancel
            queued = queue_.remove(job);
            call_off_surplus();
        }
    }

    // Requires mu_. Keeps acquiring_ <= queue_.size(): each surplus acquire, the youngest
    // first, is called off through its stop source (the pool's stop callback runs here, under
    // mu_; it only wakes the waiter). Its worker comes back without a lease and finds no job.
    void call_off_surplus() noexcept {
        while (acquiring_ > queue_.size()) {
            Acquirer* youngest = acquirers_tail_;
            unlink(*youngest);
            youngest->called_off = true;
            youngest->source->request_stop();
        }
    }

    // Requires mu_.
    void link(Acquirer& a) noexcept {
        a.prev = acquirers_tail_;
        a.next = nullptr;
        (acquirers_tail_ != nullptr ? acquirers_tail_->next : acquirers_head_) = &a;
        acquirers_tail_ = &a;
        ++acquiring_;
    }

    // Requires mu_.
    void unlink(Acquirer& a) noexcept {
        (a.prev != nullptr ? a.prev->next : acquirers_head_) = a.next;
        (a.next != nullptr ? a.next->prev : acquirers_tail_) = a.prev;
        a.prev = a.next = nullptr;
        --acquiring_;
    }

    // Requires mu_. Drops the oldest ended jobs from jobs_ beyond keep_ended_, but only once
    // jobs_ has doubled since the last trim: each trim is linear, so submit() is O(1) amortised
    // (a trim on every submit made 40,000 submits quadratic). Between trims jobs_ holds at most
    // about twice what it must; an ended job there keeps only its Progress (JobControl drops
    // its callback and operation when it ends), and snapshot() trims its copy exactly. The
    // dropped jobs go to `forgotten`, for the caller to destroy once it has released mu_: a
    // thousand destructors under mu_ would stall every worker meanwhile.
    void forget_ended_jobs(std::vector<std::shared_ptr<detail::JobControl>>& forgotten) {
        if (jobs_.size() < trim_at_) return;
        CONNPOOL_JOB_TEST_POINT("submit: job list trimmed", static_cast<std::uint64_t>(jobs_.size()));
        detail::drop_oldest_ended(jobs_, keep_ended_, [](const auto& job) { return job->ended(); },
                                  [&](auto& job) { forgotten.push_back(std::move(job)); });
        trim_at_ = std::max(2 * jobs_.size(), keep_ended_ + min_trim);
    }

    // The one place a worker takes a lease, for the oldest queued job (not yet chosen: see the
    // design note). The runner calls it off through `stop` when no queued job needs it any more,
    // so neither a cancellation nor destroying the runner waits for the pool's acquire_timeout.
    // Throws what the pool throws. A pool type without a stoppable acquire is used as it is.
    Lease<connection_type> acquire_for_job(const std::stop_source& stop) {
        if constexpr (requires(PoolT& p, std::stop_token t) { p.acquire(t); }) {
            return pool_.acquire(stop.get_token());
        } else {
            return pool_.acquire();
        }
    }

    // Requires mu_, held on entry and on return; releases it meanwhile. Stays awake a little
    // for a job to arrive, so that a stream of short jobs needs no wake-up per job. Yields
    // rather than spins: on a busy machine the submitter may need this core.
    void wait_briefly_for_arrival(std::unique_lock<std::mutex>& lock) {
        const std::uint64_t seen = arrivals_.load(std::memory_order_relaxed);
        spinning_ = true;
        lock.unlock();
        const auto until = detail::job_clock::now() + spin_limit;
        for (int round = 1; arrivals_.load(std::memory_order_relaxed) == seen; ++round) {
            std::this_thread::yield();
            if (round % 8 == 0 && detail::job_clock::now() >= until) break;
        }
        lock.lock();
        spinning_ = false;
    }

    void work() {
        std::stop_source source; // this worker's; replaced once it has been used to call one off
        Acquirer self{&source};
        bool spun = false;
        std::unique_lock lock(mu_);
        // Here the worker counts in looking_: it checks the queue before it sleeps.
        for (;;) {
            if (queue_.size() > acquiring_) {
                --looking_;
                spun = false;
                if (source.stop_requested()) source = std::stop_source{};
                link(self);
                lock.unlock();
                Lease<connection_type> lease;
                std::exception_ptr acquire_error;
                try {
                    lease = acquire_for_job(source);
                } catch (...) {
                    acquire_error = std::current_exception();
                }
                lock.lock();
                const bool called_off = std::exchange(self.called_off, false);
                if (!called_off) unlink(self);
                // A called-off acquire that got a lease anyway still serves the oldest job; its
                // error (AcquireCancelled, mostly) belongs to no job.
                std::shared_ptr<detail::JobControl> job;
                if (lease || (acquire_error && !called_off)) {
                    job = queue_.pop_front();
                    if (job) call_off_surplus();
                }
                if (!job) {
                    ++looking_;
                    if (!lease) continue;
                    lock.unlock();
                    lease.release(); // cancelled while we acquired: nothing to run
                    lock.lock();
                    continue;
                }
                lock.unlock();
                auto& runnable = static_cast<job_control&>(*job);
                if (acquire_error) {
                    runnable.finish(JobState::failed, detail::describe(acquire_error));
                } else {
                    run(runnable, std::move(lease));
                }
                job.reset(); // drop the job (an ended one holds nothing of the user's) before waiting
                lock.lock();
                ++looking_;
                continue;
            }
            if (stopping_.load(std::memory_order_relaxed)) {
                --looking_;
                return;
            }
            if (!spun && !spinning_) {
                spun = true;
                wait_briefly_for_arrival(lock);
                continue;
            }
            spun = false;
            --looking_;
            ++sleeping_;
            work_cv_.wait(lock, [&] { return wake_tokens_ > 0 || stopping_.load(std::memory_order_relaxed); });
            --sleeping_;
            ++looking_;
            if (wake_tokens_ > 0) --wake_tokens_;
        }
    }

    static void run(job_control& control, Lease<connection_type> lease) {
        if (!control.start()) { // cancelled between leaving the queue and starting
            lease.release();
            return;
        }
        ProgressReporter reporter(control);
        JobState end = JobState::succeeded;
        std::string error;
        bool connection_ok = true;
        try {
            const detail::InsideJob inside(static_cast<const detail::JobControl*>(&control));
            control.run_operation(*lease, reporter);
            if (reporter.observed_stop()) end = JobState::cancelled;
        } catch (const OperationError& e) {
            end = JobState::failed;
            error = e.what();
        } catch (...) {
            end = JobState::failed;
            error = detail::describe(std::current_exception());
            connection_ok = false;
        }
        // The lease goes back before the final callback, so wait() returning implies it is back.
        if (connection_ok) {
            lease.release();
        } else {
            lease.discard();
        }
        control.finish(end, std::move(error)); // drops the operation before the final callback
    }

    static constexpr auto spin_limit = std::chrono::microseconds{50};
    static constexpr std::size_t min_trim = 64;

    PoolT& pool_;
    const std::size_t limit_;
    const std::chrono::nanoseconds throttle_;
    const std::size_t keep_ended_;
    const std::shared_ptr<const CallbackErrorSink> sink_;

    mutable std::mutex mu_;
    std::condition_variable work_cv_;
    detail::IntrusiveQueue<detail::JobControl> queue_;     // queued jobs, oldest first
    std::deque<std::shared_ptr<detail::JobControl>> jobs_; // submission order; see forget_ended_jobs()
    std::size_t trim_at_ = min_trim; // jobs_.size() at which the next submit trims it
    std::vector<std::thread> workers_;
    Acquirer* acquirers_head_ = nullptr; // workers in pool_.acquire() for a queued job, oldest first
    Acquirer* acquirers_tail_ = nullptr;
    std::size_t acquiring_ = 0;   // how many: never more than queue_.size()
    std::size_t looking_ = 0;     // workers awake, not acquiring, not running: they check the queue next
    std::size_t sleeping_ = 0;    // workers waiting on work_cv_
    std::size_t wake_tokens_ = 0; // wake-ups sent, not yet taken: each makes one sleeper a looker
    bool spinning_ = false;       // a worker is in wait_briefly_for_arrival()
    std::atomic<std::uint64_t> arrivals_{0}; // bumped for each queued job: what the spinning worker watches
    std::atomic<std::uint64_t> last_id_{0};
    std::atomic<bool> stopping_{false}; // set under mu_ by ~JobRunner; read without it by submit()'s first check
};

} // namespace connpool
