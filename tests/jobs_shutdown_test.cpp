// The runner's destructor racing work that is still arriving: bug 10 of issue 7 (a submit() from
// a running job while ~JobRunner runs started a worker while the destructor walked the worker
// list: std::terminate). The test seam CONNPOOL_JOB_TEST_POINT holds the submitting thread
// inside submit() at the point the race needs, so the interleaving is forced, not hoped for.
#include <cstdint>
#include <string_view>

// Declared before the job layer is included: submit() calls it at its named points.
void jobs_shutdown_test_point(std::string_view point, std::uint64_t job_id);
#define CONNPOOL_JOB_TEST_POINT(point, job_id) ::jobs_shutdown_test_point(point, job_id)

#include "job_fixtures.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

using namespace connpool::testing;

namespace {

// Set by a test before any job exists, cleared after the runner is gone; read-only in between.
std::function<void(std::string_view, std::uint64_t)> g_point_hook;

} // namespace

void jobs_shutdown_test_point(std::string_view point, std::uint64_t job_id) {
    if (g_point_hook) g_point_hook(point, job_id);
}

namespace {

class JobRunnerShutdown : public PoolAndRunner<3> {
protected:
    ~JobRunnerShutdown() override { g_point_hook = nullptr; }
};

} // namespace

// The interleaving of bug 10: a running job's submit() has registered its new job when the
// destructor starts (marks itself stopping, cancels what is queued, walks the workers); only
// then does that submit() decide whether to queue the job and start a worker for it. Two
// connections are held by the test, so the runner has one lease for the submitting job and a
// second worker waits for a connection: a third worker is allowed, and the old submit() started
// it behind the destructor's back.
// The spawner waits until the sentinel is queued: job ids are given in submit order, and a spawner
// that ran before the sentinel's submit took id 2 for "late", so the hook held the main thread
// inside the sentinel's submit instead (it once failed that way under TSan: 10 s, then the
// sentinel ran).
TEST_F(JobRunnerShutdown, a_submit_from_a_running_job_while_the_destructor_runs_is_cancelled_and_starts_no_worker) {
    auto held_a = pool().acquire();
    auto held_b = pool().acquire();
    Runner* raw = &runner();
    Gate in_window;          // the submitting thread is inside submit(), job registered
    Gate destructor_started; // the destructor has cancelled the queued sentinel
    Gate sentinel_queued;    // ids are fixed: spawner 1, sentinel 2, late 3
    std::atomic<bool> late_ran{false};
    JobHandle late;
    std::atomic<int> late_outcome{0}; // 1 = returned a handle, 2 = logic_error
    constexpr std::uint64_t late_id = 3; // spawner 1, sentinel 2, late 3
    g_point_hook = [&](std::string_view point, std::uint64_t id) {
        if (point != "submit: announced, not yet queued" || id != late_id) return;
        in_window.open();
        ASSERT_TRUE(destructor_started.wait());
        // A window for the destructor to reach its join loop: a wrong implementation starts a
        // worker it never joins once this returns.
        std::this_thread::sleep_for(100ms);
    };
    JobHandle spawner = raw->submit(make_job("spawner", [&](FakeConnection&, ProgressReporter&) {
        ASSERT_TRUE(sentinel_queued.wait());
        try {
            late = raw->submit(make_job("late", [&](FakeConnection&, ProgressReporter&) { late_ran = true; }));
            late_outcome = 1;
        } catch (const std::logic_error&) {
            late_outcome = 2;
        }
    }));
    Recorder sentinel_rec([&](const Progress& p) {
        if (p.state == JobState::cancelled) destructor_started.open();
    });
    // Queued behind the second worker's acquire (no connection is free): the destructor cancels it.
    JobHandle sentinel = raw->submit(make_job("sentinel", noop()), sentinel_rec.callback());
    sentinel_queued.open();
    ASSERT_TRUE(in_window.wait());
    std::thread destroyer([&] { destroy_runner(); });
    EXPECT_EQ(wait_or_abort(spawner, "the submitting job"), JobState::succeeded);
    held_a.release(); // lets the waiting worker's acquire return, so the destructor can finish
    held_b.release();
    destroyer.join();
    EXPECT_EQ(sentinel.state(), JobState::cancelled);
    ASSERT_NE(late_outcome.load(), 0);
    if (late_outcome == 1) {
        EXPECT_EQ(late.state(), JobState::cancelled);
    }
    EXPECT_FALSE(late_ran.load()) << "a job submitted during destruction ran";
    EXPECT_EQ(pool().stats().in_use, 0u);
}
