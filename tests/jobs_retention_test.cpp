// What an ended job keeps alive (issue 7): once its final callback has run, a job holds neither
// its progress callback nor its operation, nor anything they captured, although its handle and
// the runner's snapshot still refer to it; and the runner keeps at most keep_ended ended jobs
// however many are submitted.
#include "job_fixtures.hpp"

#include <gtest/gtest.h>

#include <memory>

using namespace connpool::testing;

namespace {

class JobRetention : public PoolAndRunner<1> {};

} // namespace

TEST_F(JobRetention, a_job_that_ended_releases_its_callback_and_operation_before_wait_returns) {
    auto token = std::make_shared<int>(0);
    JobHandle h = runner().submit(make_job("ended", [token](FakeConnection&, ProgressReporter&) {}),
                                  [token](const Progress&) {});
    EXPECT_EQ(wait_or_abort(h, "the job"), JobState::succeeded);
    EXPECT_EQ(token.use_count(), 1) << "the ended job still holds what its callback or operation captured";
    EXPECT_EQ(h.progress().state, JobState::succeeded); // the handle still reads the job
}

TEST_F(JobRetention, a_job_that_failed_releases_its_callback_and_operation_before_wait_returns) {
    auto token = std::make_shared<int>(0);
    JobHandle h = runner().submit(
        make_job("failed", [token](FakeConnection&, ProgressReporter&) { throw connpool::OperationError("no"); }),
        [token](const Progress&) {});
    EXPECT_EQ(wait_or_abort(h, "the job"), JobState::failed);
    EXPECT_EQ(token.use_count(), 1);
}

TEST_F(JobRetention, a_job_cancelled_while_queued_releases_its_callback_and_operation_before_wait_returns) {
    Gate started, release;
    JobHandle running = runner().submit(make_job("running", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    auto token = std::make_shared<int>(0);
    JobHandle queued = runner().submit(make_job("queued", [token](FakeConnection&, ProgressReporter&) {}),
                                       [token](const Progress&) {});
    queued.cancel();
    EXPECT_EQ(wait_or_abort(queued, "the cancelled job"), JobState::cancelled);
    EXPECT_EQ(token.use_count(), 1) << "a job cancelled in the queue still holds what it captured";
    release.open();
    EXPECT_EQ(wait_or_abort(running, "the running job"), JobState::succeeded);
}

TEST_F(JobRetention, a_job_failed_by_the_pool_releases_its_callback_and_operation_before_wait_returns) {
    auto token = std::make_shared<int>(0);
    pool().close(); // the worker's acquire throws PoolClosed: the job fails without running
    JobHandle h = runner().submit(make_job("refused", [token](FakeConnection&, ProgressReporter&) {}),
                                  [token](const Progress&) {});
    EXPECT_EQ(wait_or_abort(h, "the job"), JobState::failed);
    EXPECT_EQ(token.use_count(), 1) << "a job the pool refused still holds what it captured";
}

TEST_F(JobRetention, a_job_cancelled_by_the_runners_destructor_releases_its_callback_and_operation) {
    auto held = pool().acquire(); // the only connection: the job stays queued
    auto token = std::make_shared<int>(0);
    JobHandle h = runner().submit(make_job("queued", [token](FakeConnection&, ProgressReporter&) {}),
                                  [token](const Progress&) {});
    destroy_runner();
    EXPECT_EQ(h.state(), JobState::cancelled);
    EXPECT_EQ(token.use_count(), 1) << "the handle outlives the runner, but not what the job captured";
}

TEST_F(JobRetention, many_ended_jobs_leave_at_most_keep_ended_in_the_snapshot_and_the_newest_ones) {
    RunnerOptions options = unthrottled();
    options.keep_ended = 10;
    Runner& r = runner(std::move(options));
    JobHandle last;
    for (int i = 0; i < 2000; ++i) last = r.submit(make_job("job" + std::to_string(i), noop()));
    r.wait_all();
    const auto snapshot = r.snapshot();
    ASSERT_EQ(snapshot.size(), 10u);
    EXPECT_EQ(snapshot.back().id, last.id());
    for (std::size_t i = 1; i < snapshot.size(); ++i) EXPECT_LT(snapshot[i - 1].id, snapshot[i].id);
}
