// Cancelling queued jobs calls off the workers' acquires for them (issue 7: "cancelling a
// queued job or destroying the runner never waits for an acquire timeout"). In every test the
// pool's connections are held outside the runner, so a worker can only wait in acquire(), and
// acquire_timeout is an hour: an acquire that ends during the test was called off, which the
// pool's `cancelled` counter and event say. Nothing here measures time; the waits are guards.
#include "job_fixtures.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

using namespace connpool::testing;

namespace {

/// Counts the pool's `cancelled` events (an acquire ended by a stop request) and lets a test
/// wait for a number of them.
class CancelledAcquires {
public:
    void record(const connpool::PoolEvent& e) {
        if (e.kind != connpool::PoolEventKind::cancelled) return;
        {
            std::lock_guard lock(mutex_);
            ++count_;
        }
        cv_.notify_all();
    }
    /// Waits until `n` acquires were called off; false if kGuard passed first.
    [[nodiscard]] bool wait_for(std::size_t n) {
        std::unique_lock lock(mutex_);
        return cv_.wait_for(lock, kGuard, [&] { return count_ >= n; });
    }
    [[nodiscard]] std::size_t count() {
        std::lock_guard lock(mutex_);
        return count_;
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::size_t count_ = 0;
};

/// A pool of `size` connections, all held by the test, and a runner on it.
class JobCancelCallsOffAcquire : public ::testing::Test {
protected:
    ~JobCancelCallsOffAcquire() override {
        runner_.reset();
        held_.clear();
        pool_.reset();
        expect_balanced(factory_);
    }

    /// Makes the pool and the runner and takes every connection.
    void start(std::size_t size) {
        auto options = pool_options(size);
        options.acquire_timeout = std::chrono::hours{1};
        options.on_event = [events = events_](const connpool::PoolEvent& e) { events->record(e); };
        pool_.emplace(factory_, options);
        for (std::size_t i = 0; i < size; ++i) held_.push_back(pool_->acquire());
        runner_.emplace(*pool_, unthrottled());
    }

    /// Submits a job that counts its runs.
    JobHandle submit(const char* name) {
        return runner_->submit(make_job(name, [this](FakeConnection&, ProgressReporter&) { ran_.fetch_add(1); }));
    }

    /// Waits until `n` workers are inside the pool's acquire(). (A called-off acquire leaves the
    /// count just after its `cancelled` event, so the count is waited for, not read.)
    [[nodiscard]] bool workers_waiting(std::size_t n) {
        return eventually([&] { return pool_->stats().waiting == n; });
    }

    enum class Which { older, younger };

    /// Two jobs queued, a worker acquiring for each; cancelling one calls off one acquire (which
    /// is the runner's choice: they are alike) and leaves the other waiting, for the job left.
    void cancel_one_of_two_and_serve_the_other(Which cancelled) {
        start(2);
        JobHandle older = submit("older");
        JobHandle younger = submit("younger");
        ASSERT_TRUE(workers_waiting(2));
        JobHandle& gone = cancelled == Which::older ? older : younger;
        JobHandle& left = cancelled == Which::older ? younger : older;
        gone.cancel();
        ASSERT_TRUE(events_->wait_for(1));
        // The call-off happened inside cancel(); nothing else will call off the other acquire,
        // as the `cancelled` count at the end confirms.
        EXPECT_TRUE(workers_waiting(1));
        EXPECT_EQ(left.state(), JobState::queued);

        held_.pop_back(); // one connection back: the acquire still waiting gets it
        EXPECT_EQ(wait_or_abort(left, "the job still queued"), JobState::succeeded);
        EXPECT_EQ(gone.state(), JobState::cancelled);
        EXPECT_EQ(ran_.load(), 1);
        EXPECT_EQ(pool_->stats().cancelled, 1u);
    }

    FakeFactory factory_;
    std::shared_ptr<CancelledAcquires> events_ = std::make_shared<CancelledAcquires>();
    std::optional<FakePool> pool_;
    std::vector<connpool::Lease<FakeConnection>> held_;
    std::optional<Runner> runner_;
    std::atomic<int> ran_{0};
};

} // namespace

TEST_F(JobCancelCallsOffAcquire, cancelling_the_only_queued_job_ends_the_acquire_for_it) {
    start(1);
    JobHandle h = submit("starved");
    ASSERT_TRUE(workers_waiting(1)) << "the worker never waited for a lease";
    h.cancel();
    EXPECT_EQ(h.state(), JobState::cancelled);
    ASSERT_TRUE(events_->wait_for(1)) << "the worker still waits for a lease for a job that is gone";
    EXPECT_TRUE(workers_waiting(0));
    const auto s = pool_->stats();
    EXPECT_EQ(s.cancelled, 1u);
    EXPECT_EQ(s.timeouts, 0u);
    EXPECT_EQ(s.in_use, 1u) << "the test's lease; the runner took none";
    EXPECT_EQ(ran_.load(), 0);

    // No capacity was lost: once the connection is back, a new job gets it.
    held_.clear();
    EXPECT_EQ(wait_or_abort(submit("fed"), "the job after the cancel"), JobState::succeeded);
    EXPECT_EQ(ran_.load(), 1);
    const auto after = pool_->stats();
    EXPECT_EQ(after.cancelled, 1u);
    EXPECT_EQ(after.open, 1u);
    expect_consistent(after);
}

TEST_F(JobCancelCallsOffAcquire, cancelling_the_younger_of_two_queued_jobs_ends_one_acquire_and_the_other_keeps_waiting) {
    cancel_one_of_two_and_serve_the_other(Which::younger);
}

TEST_F(JobCancelCallsOffAcquire, cancelling_the_older_of_two_queued_jobs_leaves_an_acquire_for_the_younger) {
    cancel_one_of_two_and_serve_the_other(Which::older);
}

TEST_F(JobCancelCallsOffAcquire, cancel_all_ends_every_acquire_for_queued_jobs_at_once) {
    start(3);
    std::vector<JobHandle> jobs;
    for (const char* name : {"a", "b", "c", "d", "e"}) jobs.push_back(submit(name));
    ASSERT_TRUE(workers_waiting(3)) << "max_running is the pool's 3";
    runner_->cancel_all();
    for (const auto& h : jobs) EXPECT_EQ(h.state(), JobState::cancelled);
    ASSERT_TRUE(events_->wait_for(3));
    EXPECT_TRUE(workers_waiting(0));
    auto s = pool_->stats();
    EXPECT_EQ(s.cancelled, 3u);
    EXPECT_EQ(s.in_use, 3u);

    // The workers are fine and the pool whole: new jobs run once the connections are back.
    held_.clear();
    JobHandle next = submit("next");
    JobHandle last = submit("last");
    EXPECT_EQ(wait_or_abort(next, "a job after cancel_all"), JobState::succeeded);
    EXPECT_EQ(wait_or_abort(last, "a job after cancel_all"), JobState::succeeded);
    EXPECT_EQ(ran_.load(), 2);
    s = pool_->stats();
    EXPECT_EQ(s.cancelled, 3u);
    EXPECT_LE(s.open, 3u);
    expect_consistent(s);
}

TEST_F(JobCancelCallsOffAcquire, a_job_queued_after_a_cancel_gets_a_worker_acquiring_again) {
    start(1);
    JobHandle first = submit("first");
    ASSERT_TRUE(workers_waiting(1));
    first.cancel();
    ASSERT_TRUE(events_->wait_for(1));
    JobHandle second = submit("second");
    ASSERT_TRUE(workers_waiting(1)) << "nobody acquires for the job queued after the cancel";
    EXPECT_EQ(second.state(), JobState::queued);
    held_.clear();
    EXPECT_EQ(wait_or_abort(second, "the job queued after the cancel"), JobState::succeeded);
    EXPECT_EQ(pool_->stats().cancelled, 1u);
}

TEST_F(JobCancelCallsOffAcquire, cancelling_a_job_nobody_acquires_for_calls_off_nothing) {
    start(1);
    JobHandle served = submit("served");
    JobHandle behind = submit("behind"); // max_running 1 (the pool's size): no second acquire
    ASSERT_TRUE(workers_waiting(1));
    behind.cancel();
    EXPECT_EQ(behind.state(), JobState::cancelled);
    EXPECT_EQ(pool_->stats().cancelled, 0u) << "the acquire for the job still queued was called off";
    EXPECT_EQ(pool_->stats().waiting, 1u);
    held_.clear();
    EXPECT_EQ(wait_or_abort(served, "the job still queued"), JobState::succeeded);
    EXPECT_EQ(ran_.load(), 1);
    EXPECT_EQ(events_->count(), 0u);
}
