// Unit tests for the job layer (jobs.hpp): states, cancellation, progress callbacks (order,
// throttling, serialization), the callback error sink, concurrency limits, wait semantics,
// snapshots, Progress fields, the runner's destructor, pool failures and argument checks.
// Everything runs on a Pool of fake connections; nothing here touches a database.
//
// Timeouts in these tests are deadlock guards only (kGuard): no test asserts that anything is
// fast. Sleeps are used only where a test needs time to pass (a lower bound on waited/elapsed,
// a window in which a wrong implementation would be caught), never to order events.
#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "counting_connection.hpp"
#include "job_fixtures.hpp"

using namespace std::chrono_literals;
using connpool::JobHandle;
using connpool::JobKind;
using connpool::JobState;
using connpool::Progress;
using connpool::ProgressReporter;
using connpool::RunnerOptions;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;
using namespace connpool::testing;

namespace {

/// A factory and, made by make_pool() in the test body, a pool of its fake connections. The
/// test's own runner is a local, so it is gone before the fixture destroys the pool and checks
/// that every connection created was destroyed exactly once.
class JobsFixture : public ::testing::Test {
protected:
    ~JobsFixture() override {
        pool_.reset();
        expect_balanced(f);
    }

    /// Makes the test's pool: `max_size` fake connections, acquire_timeout 30 s, no maintenance.
    FakePool& make_pool(std::size_t max_size) { return pool_.emplace(f, pool_options(max_size)); }

    FakeFactory f;

private:
    std::optional<FakePool> pool_;
};

class JobRunnerTest : public JobsFixture {};
class JobHandleTest : public JobsFixture {};
class ProgressTest : public JobsFixture {};
class ProgressReporterTest : public JobsFixture {};

} // namespace

// ---- enums and Progress -------------------------------------------------------------------

TEST(JobState, names_every_state_and_knows_which_are_final) {
    EXPECT_EQ(connpool::to_string(JobState::queued), "queued");
    EXPECT_EQ(connpool::to_string(JobState::running), "running");
    EXPECT_EQ(connpool::to_string(JobState::succeeded), "succeeded");
    EXPECT_EQ(connpool::to_string(JobState::failed), "failed");
    EXPECT_EQ(connpool::to_string(JobState::cancelled), "cancelled");
    EXPECT_EQ(connpool::to_string(JobKind::backup), "backup");
    EXPECT_EQ(connpool::to_string(JobKind::restore), "restore");
    EXPECT_FALSE(connpool::is_final(JobState::queued));
    EXPECT_FALSE(connpool::is_final(JobState::running));
    EXPECT_TRUE(connpool::is_final(JobState::succeeded));
    EXPECT_TRUE(connpool::is_final(JobState::failed));
    EXPECT_TRUE(connpool::is_final(JobState::cancelled));
}

TEST(Progress, fraction_is_empty_while_the_total_is_unknown_and_capped_at_one) {
    Progress p;
    EXPECT_FALSE(p.fraction().has_value());
    p.done = 5;
    EXPECT_FALSE(p.fraction().has_value());
    p.total = 20;
    ASSERT_TRUE(p.fraction().has_value());
    EXPECT_DOUBLE_EQ(*p.fraction(), 0.25);
    p.done = 20;
    EXPECT_DOUBLE_EQ(*p.fraction(), 1.0);
    p.done = 30;
    EXPECT_DOUBLE_EQ(*p.fraction(), 1.0);
}

// ---- states -------------------------------------------------------------------------------

TEST_F(JobRunnerTest, runs_a_job_from_queued_through_running_to_succeeded) {
    FakePool& pool = make_pool(2);
    Recorder rec;
    Runner runner{pool, forced_only()};
    std::atomic<int> runs{0};
    std::atomic<std::uint64_t> conn_id{0};
    JobHandle h = runner.submit(make_job("orders.db",
                                         [&](FakeConnection& c, ProgressReporter&) {
                                             runs.fetch_add(1);
                                             conn_id = c.id();
                                         },
                                         JobKind::restore),
                                rec.callback());
    ASSERT_TRUE(h.valid());
    EXPECT_EQ(h.id(), 1u);
    ASSERT_TRUE(h.wait_for(kGuard));
    EXPECT_EQ(h.wait(), JobState::succeeded);
    EXPECT_EQ(h.state(), JobState::succeeded);
    EXPECT_EQ(h.error(), "");
    EXPECT_EQ(runs.load(), 1);
    EXPECT_EQ(conn_id.load(), 1u);
    EXPECT_EQ(rec.states(),
              (std::vector<JobState>{JobState::queued, JobState::running, JobState::succeeded}));
    for (const auto& p : rec.all()) {
        EXPECT_EQ(p.id, 1u);
        EXPECT_EQ(p.name, "orders.db");
        EXPECT_EQ(p.kind, JobKind::restore);
    }
    const Progress p = h.progress();
    EXPECT_EQ(p.name, "orders.db");
    EXPECT_EQ(p.kind, JobKind::restore);
    const auto s = pool.stats();
    EXPECT_EQ(s.acquired, 1u);
    EXPECT_EQ(s.in_use, 0u);
    EXPECT_EQ(s.idle, 1u);
    EXPECT_EQ(s.discarded, 0u);
    expect_consistent(s);
}

TEST_F(JobRunnerTest, ids_reserved_from_one_runner_number_another_runners_jobs_so_no_two_share_one) {
    auto& pool = make_pool(2);
    Runner outer(pool);
    EXPECT_EQ(outer.submit(make_job("a", noop())).id(), 1u);
    const std::uint64_t first = outer.reserve_ids(3);
    EXPECT_EQ(first, 2u);
    EXPECT_EQ(outer.submit(make_job("b", noop())).id(), 5u) << "2..4 went to the helper runner";
    RunnerOptions options;
    options.first_id = first;
    Runner helper(pool, options);
    EXPECT_EQ(helper.submit(make_job("c", noop())).id(), 2u);
    EXPECT_EQ(helper.submit(make_job("d", noop())).id(), 3u);
    outer.wait_all();
    helper.wait_all();
    options.first_id = 0;
    EXPECT_THROW(Runner(pool, options), std::invalid_argument);
}

TEST_F(JobRunnerTest, a_job_whose_operation_throws_fails_with_its_message_and_discards_the_connection) {
    FakePool& pool = make_pool(1);
    Recorder rec;
    Runner runner{pool, forced_only()};
    JobHandle h = runner.submit(
        make_job("broken", [](FakeConnection&, ProgressReporter&) { throw std::runtime_error("disk on fire"); }),
        rec.callback());
    EXPECT_EQ(h.wait(), JobState::failed);
    EXPECT_EQ(h.error(), "disk on fire");
    EXPECT_EQ(h.progress().error, "disk on fire");
    ASSERT_FALSE(rec.all().empty());
    EXPECT_EQ(rec.all().back().state, JobState::failed);
    EXPECT_EQ(rec.all().back().error, "disk on fire");
    EXPECT_FALSE(rec.all().back().eta.has_value());

    auto s = pool.stats();
    EXPECT_EQ(s.discarded, 1u);
    EXPECT_EQ(s.in_use, 0u);
    EXPECT_EQ(s.open, 0u);
    EXPECT_EQ(f.registry->destroyed.load(), 1u);
    EXPECT_EQ(f.registry->alive_count(), 0u);
    expect_consistent(s);

    // The pool replaces the discarded connection for the next job.
    std::atomic<std::uint64_t> next_id{0};
    JobHandle h2 = runner.submit(make_job("next", [&](FakeConnection& c, ProgressReporter&) { next_id = c.id(); }));
    EXPECT_EQ(h2.wait(), JobState::succeeded);
    EXPECT_EQ(next_id.load(), 2u);
    s = pool.stats();
    EXPECT_EQ(s.discarded, 1u);
    EXPECT_EQ(s.created, 2u);
    EXPECT_EQ(s.destroyed, 1u);
    expect_consistent(s);
}

TEST_F(JobRunnerTest, a_job_that_throws_operation_error_fails_but_gives_its_connection_back) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    JobHandle h = runner.submit(make_job("bad input", [](FakeConnection&, ProgressReporter&) {
        throw connpool::OperationError("backup.db is not a database");
    }));
    EXPECT_EQ(h.wait(), JobState::failed);
    EXPECT_EQ(h.error(), "backup.db is not a database");
    auto s = pool.stats();
    EXPECT_EQ(s.discarded, 0u);
    EXPECT_EQ(s.idle, 1u);
    EXPECT_EQ(s.in_use, 0u);
    EXPECT_EQ(f.registry->destroyed.load(), 0u);
    expect_consistent(s);

    std::atomic<std::uint64_t> next_id{0};
    JobHandle h2 = runner.submit(make_job("next", [&](FakeConnection& c, ProgressReporter&) { next_id = c.id(); }));
    EXPECT_EQ(h2.wait(), JobState::succeeded);
    EXPECT_EQ(next_id.load(), 1u) << "the connection should have been reused";
    EXPECT_EQ(pool.stats().created, 1u);
}

TEST_F(JobRunnerTest, a_job_that_throws_something_not_derived_from_std_exception_fails_and_discards) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    JobHandle h = runner.submit(make_job("odd", [](FakeConnection&, ProgressReporter&) { throw 42; }));
    EXPECT_EQ(h.wait(), JobState::failed);
    EXPECT_FALSE(h.error().empty());
    EXPECT_EQ(pool.stats().discarded, 1u);
    expect_consistent(pool.stats());
}

// ---- cancellation -------------------------------------------------------------------------

TEST_F(JobHandleTest, cancelling_a_queued_job_ends_it_cancelled_without_running_it_or_taking_a_lease) {
    FakePool& pool = make_pool(1);
    Runner runner{pool, forced_only()};
    Gate started, release;
    JobHandle first = runner.submit(make_job("first", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    EXPECT_EQ(pool.stats().acquired, 1u);

    std::atomic<bool> ran{false};
    Recorder rec;
    JobHandle second = runner.submit(make_job("second", [&](FakeConnection&, ProgressReporter&) { ran = true; }),
                                     rec.callback());
    EXPECT_EQ(second.state(), JobState::queued);
    second.cancel();
    // Cancelling a queued job is immediate: it has ended before cancel() returns.
    EXPECT_EQ(second.state(), JobState::cancelled);
    ASSERT_TRUE(second.wait_for(0ms));
    EXPECT_EQ(second.wait(), JobState::cancelled);
    EXPECT_EQ(second.error(), "");
    EXPECT_EQ(rec.states(), (std::vector<JobState>{JobState::queued, JobState::cancelled}));
    EXPECT_EQ(pool.stats().acquired, 1u);
    EXPECT_EQ(first.state(), JobState::running);

    release.open();
    EXPECT_EQ(first.wait(), JobState::succeeded);
    runner.wait_all();
    EXPECT_FALSE(ran.load());
    EXPECT_EQ(pool.stats().acquired, 1u) << "the cancelled job must never take a lease";
    const Progress p = second.progress();
    EXPECT_EQ(p.elapsed, 0ns) << "a job that never ran has no running time";
    EXPECT_FALSE(p.eta.has_value());
}

TEST_F(JobHandleTest, cancelling_a_running_job_that_checks_stop_ends_it_cancelled_and_returns_its_lease) {
    FakePool& pool = make_pool(1);
    Runner runner{pool, forced_only()};
    Gate started;
    std::atomic<bool> saw_stop{false};
    Recorder rec;
    JobHandle h = runner.submit(make_job("long",
                                         [&](FakeConnection&, ProgressReporter& r) {
                                             started.open();
                                             const auto deadline = std::chrono::steady_clock::now() + kGuard;
                                             while (!r.stop_requested()) {
                                                 if (std::chrono::steady_clock::now() > deadline)
                                                     throw connpool::OperationError("never asked to stop");
                                                 std::this_thread::yield();
                                             }
                                             saw_stop = true;
                                         }),
                                rec.callback());
    ASSERT_TRUE(started.wait());
    EXPECT_EQ(h.state(), JobState::running);
    h.cancel();
    EXPECT_EQ(h.wait(), JobState::cancelled);
    EXPECT_TRUE(saw_stop.load());
    EXPECT_EQ(h.error(), "") << "cancelled is not failed";
    EXPECT_EQ(rec.states(),
              (std::vector<JobState>{JobState::queued, JobState::running, JobState::cancelled}));
    const auto s = pool.stats();
    EXPECT_EQ(s.discarded, 0u);
    EXPECT_EQ(s.in_use, 0u);
    EXPECT_EQ(s.idle, 1u);
    expect_consistent(s);
}

TEST_F(JobHandleTest, a_running_job_that_never_sees_the_stop_request_ends_succeeded) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate started, release;
    std::atomic<bool> stop_before{true};
    JobHandle h = runner.submit(make_job("stubborn", [&](FakeConnection&, ProgressReporter& r) {
        stop_before = r.stop_requested(); // false: nobody cancelled yet
        started.open();
        wait_or_fail(release); // cancelled meanwhile, but never asks again
    }));
    ASSERT_TRUE(started.wait());
    h.cancel();
    release.open();
    EXPECT_EQ(h.wait(), JobState::succeeded);
    EXPECT_FALSE(stop_before.load());
    EXPECT_EQ(h.error(), "");
}

TEST_F(ProgressReporterTest, an_operation_that_sees_stop_and_then_throws_ends_failed_not_cancelled) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate started;
    JobHandle h = runner.submit(make_job("cleanup fails", [&](FakeConnection&, ProgressReporter& r) {
        started.open();
        const auto deadline = std::chrono::steady_clock::now() + kGuard;
        while (!r.stop_requested() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
        throw connpool::OperationError("could not remove the partial file");
    }));
    ASSERT_TRUE(started.wait());
    h.cancel();
    EXPECT_EQ(h.wait(), JobState::failed);
    EXPECT_EQ(h.error(), "could not remove the partial file");
}

TEST_F(JobRunnerTest, cancel_all_cancels_queued_jobs_at_once_and_running_ones_at_their_next_stop_check) {
    FakePool& pool = make_pool(2);
    Runner runner{pool};
    Gate started_a, started_b, may_stop;
    // The running jobs look at stop_requested() only once the test has seen the queued
    // ones cancelled, so no worker comes back for more work before cancel_all() is done.
    auto until_stopped = [&may_stop](Gate& started) {
        return [&started, &may_stop](FakeConnection&, ProgressReporter& r) {
            started.open();
            wait_or_fail(may_stop);
            const auto deadline = std::chrono::steady_clock::now() + kGuard;
            while (!r.stop_requested()) {
                if (std::chrono::steady_clock::now() > deadline) throw connpool::OperationError("never stopped");
                std::this_thread::yield();
            }
        };
    };
    std::atomic<int> queued_runs{0};
    auto counted = [&](FakeConnection&, ProgressReporter&) { queued_runs.fetch_add(1); };
    JobHandle a = runner.submit(make_job("a", until_stopped(started_a)));
    JobHandle b = runner.submit(make_job("b", until_stopped(started_b)));
    ASSERT_TRUE(started_a.wait());
    ASSERT_TRUE(started_b.wait());
    JobHandle c = runner.submit(make_job("c", counted));
    JobHandle d = runner.submit(make_job("d", counted));
    EXPECT_EQ(c.state(), JobState::queued);
    EXPECT_EQ(d.state(), JobState::queued);

    runner.cancel_all();
    EXPECT_EQ(c.state(), JobState::cancelled);
    EXPECT_EQ(d.state(), JobState::cancelled);
    EXPECT_EQ(a.state(), JobState::running);
    EXPECT_EQ(b.state(), JobState::running);
    may_stop.open();
    runner.wait_all();
    for (const JobHandle* h : {&a, &b, &c, &d}) {
        EXPECT_EQ(h->state(), JobState::cancelled) << h->progress().name;
        EXPECT_EQ(h->error(), "") << h->progress().name;
    }
    EXPECT_EQ(queued_runs.load(), 0);
    const auto s = pool.stats();
    EXPECT_EQ(s.acquired, 2u);
    EXPECT_EQ(s.in_use, 0u);
    EXPECT_EQ(s.discarded, 0u);
    expect_consistent(s);
}

TEST_F(JobHandleTest, cancelling_a_job_that_has_ended_changes_nothing) {
    FakePool& pool = make_pool(1);
    Recorder rec;
    Runner runner{pool};
    JobHandle h = runner.submit(make_job("done", noop()), rec.callback());
    ASSERT_EQ(h.wait(), JobState::succeeded);
    const auto callbacks = rec.all().size();
    h.cancel();
    runner.cancel_all();
    EXPECT_EQ(h.state(), JobState::succeeded);
    EXPECT_EQ(h.error(), "");
    EXPECT_EQ(rec.all().size(), callbacks);
}

TEST_F(JobHandleTest, copies_refer_to_the_same_job) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate started, release;
    JobHandle first = runner.submit(make_job("first", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    JobHandle original = runner.submit(make_job("second", noop()));
    JobHandle copy = original;
    JobHandle assigned;
    assigned = copy;
    EXPECT_EQ(copy.id(), original.id());
    copy.cancel();
    EXPECT_EQ(original.state(), JobState::cancelled);
    EXPECT_EQ(assigned.state(), JobState::cancelled);
    release.open();
    EXPECT_EQ(first.wait(), JobState::succeeded);
}

TEST_F(JobHandleTest, a_callback_may_cancel_its_own_job_without_deadlock) {
    FakePool& pool = make_pool(1);
    auto handle = std::make_shared<JobHandle>();
    Gate handle_ready;
    Recorder rec([&](const Progress& p) {
        if (p.state == JobState::running && p.done == 1) {
            handle->cancel();
            (void)handle->progress(); // reading the job from its own callback is fine too
        }
    });
    Runner runner{pool, unthrottled()};
    *handle = runner.submit(make_job("self-cancel",
                                     [&](FakeConnection&, ProgressReporter& r) {
                                         wait_or_fail(handle_ready);
                                         r.advance(1); // its callback cancels the job
                                         if (r.stop_requested()) return;
                                         r.advance(1);
                                     }),
                            rec.callback());
    handle_ready.open();
    ASSERT_TRUE(handle->wait_for(kGuard));
    EXPECT_EQ(handle->state(), JobState::cancelled);
    EXPECT_EQ(handle->progress().done, 1u);
}

// ---- progress callbacks -------------------------------------------------------------------

TEST_F(JobRunnerTest, delivers_every_state_change_and_reaching_one_hundred_percent_despite_the_throttle) {
    FakePool& pool = make_pool(1);
    Recorder rec;
    Runner runner{pool, forced_only()};
    JobHandle h = runner.submit(make_job("t",
                                         [](FakeConnection&, ProgressReporter& r) {
                                             r.set_total(100, "rows");
                                             for (int i = 0; i < 100; ++i) r.advance(1);
                                         }),
                                rec.callback());
    ASSERT_EQ(h.wait(), JobState::succeeded);
    const auto seen = rec.all();
    // With an hour-long throttle only the forced callbacks get through: queued, running,
    // reaching 100 % (while still running) and the final one.
    ASSERT_EQ(seen.size(), 4u);
    EXPECT_EQ(seen[0].state, JobState::queued);
    EXPECT_EQ(seen[1].state, JobState::running);
    EXPECT_EQ(seen[1].done, 0u);
    EXPECT_EQ(seen[2].state, JobState::running);
    EXPECT_EQ(seen[2].done, 100u);
    EXPECT_EQ(seen[2].total, 100u);
    EXPECT_EQ(seen[3].state, JobState::succeeded);
    EXPECT_EQ(seen[3].done, 100u);
    EXPECT_EQ(seen[3].total, 100u);
    EXPECT_EQ(seen[3].unit, "rows");
    ASSERT_TRUE(seen[3].fraction().has_value());
    EXPECT_DOUBLE_EQ(*seen[3].fraction(), 1.0);
}

TEST_F(JobRunnerTest, the_final_callback_is_the_last_and_shows_all_the_work_done) {
    FakePool& pool = make_pool(1);
    Recorder rec;
    Runner runner{pool, unthrottled()};
    // The total is never announced: the final callback reports the work done as the total.
    JobHandle h = runner.submit(make_job("unknown total",
                                         [](FakeConnection&, ProgressReporter& r) {
                                             for (int i = 0; i < 7; ++i) r.advance(1);
                                         }),
                                rec.callback());
    ASSERT_EQ(h.wait(), JobState::succeeded);
    const auto seen = rec.all();
    ASSERT_FALSE(seen.empty());
    for (std::size_t i = 0; i + 1 < seen.size(); ++i) {
        EXPECT_FALSE(connpool::is_final(seen[i].state)) << "callback " << i << " came after an end";
        EXPECT_EQ(seen[i].total, 0u) << "the total was unknown while running";
    }
    EXPECT_EQ(seen.back().state, JobState::succeeded);
    EXPECT_EQ(seen.back().done, 7u);
    EXPECT_EQ(seen.back().total, 7u);
    ASSERT_TRUE(seen.back().fraction().has_value());
    EXPECT_DOUBLE_EQ(*seen.back().fraction(), 1.0);
    // Nothing is delivered after the final callback, whatever happens to the handle.
    h.cancel();
    EXPECT_EQ(rec.all().size(), seen.size());
}

TEST_F(JobRunnerTest, with_a_zero_interval_every_report_is_delivered_in_order) {
    FakePool& pool = make_pool(1);
    Recorder rec;
    Runner runner{pool, unthrottled()};
    constexpr std::uint64_t n = 200;
    JobHandle h = runner.submit(make_job("every",
                                         [](FakeConnection&, ProgressReporter& r) {
                                             r.set_total(n, "pages");
                                             for (std::uint64_t i = 0; i < n; ++i) r.advance(1);
                                         }),
                                rec.callback());
    ASSERT_EQ(h.wait(), JobState::succeeded);
    const auto seen = rec.all();
    // queued, running, set_total, one per advance, final.
    ASSERT_EQ(seen.size(), n + 4);
    EXPECT_EQ(seen[0].state, JobState::queued);
    EXPECT_EQ(seen[1].state, JobState::running);
    EXPECT_EQ(seen[2].total, n);
    EXPECT_EQ(seen[2].done, 0u);
    for (std::uint64_t i = 1; i <= n; ++i) {
        EXPECT_EQ(seen[2 + i].state, JobState::running);
        EXPECT_EQ(seen[2 + i].done, i);
    }
    EXPECT_EQ(seen.back().state, JobState::succeeded);
    EXPECT_EQ(seen.back().done, n);
}

TEST_F(JobRunnerTest, throttles_progress_callbacks_to_at_most_one_per_interval) {
    FakePool& pool = make_pool(1);
    Recorder rec;
    RunnerOptions o;
    constexpr auto interval = 50ms;
    o.progress_interval = interval;
    Runner runner{pool, o};
    constexpr std::uint64_t advances = 1500;
    JobHandle h = runner.submit(make_job("throttled",
                                         [](FakeConnection&, ProgressReporter& r) {
                                             r.set_total(advances, "rows");
                                             for (std::uint64_t i = 0; i < advances; ++i) {
                                                 r.advance(1);
                                                 std::this_thread::sleep_for(100us);
                                             }
                                         }),
                                rec.callback());
    ASSERT_EQ(h.wait(), JobState::succeeded);
    const auto seen = rec.all();
    ASSERT_GE(seen.size(), 4u);
    const Progress& last = seen.back();
    ASSERT_EQ(last.state, JobState::succeeded);

    // done never decreases.
    for (std::size_t i = 1; i < seen.size(); ++i)
        EXPECT_GE(seen[i].done, seen[i - 1].done) << "callback " << i;

    // Far fewer callbacks than reports: at most one per interval of running time, plus the
    // forced ones (queued, running, 100 %, final).
    const auto bound = static_cast<std::size_t>(last.elapsed / interval) + 5;
    EXPECT_LE(seen.size(), bound) << "elapsed " << std::chrono::duration<double>(last.elapsed).count() << " s";
    EXPECT_LT(seen.size(), advances / 10);

    // A throttled (non-forced) callback comes at least one interval after the previous one.
    // Progress::elapsed is taken at the moment each callback is prepared, so the gaps between
    // callbacks can be read from it exactly. Forced callbacks (state changes, reaching the total)
    // may come sooner and are skipped.
    int throttled = 0;
    for (std::size_t i = 1; i < seen.size(); ++i) {
        const Progress& p = seen[i];
        const Progress& prev = seen[i - 1];
        const bool forced = p.state != JobState::running || prev.state != JobState::running || p.done >= p.total;
        if (forced) continue;
        ++throttled;
        EXPECT_GE(p.elapsed - prev.elapsed, interval) << "callback " << i << " came too soon after " << i - 1;
    }
    // The run lasts at least 150 ms (1500 sleeps of 100 us), so throttled progress got through.
    EXPECT_GE(throttled, 1);
}

// cancel_all() from another thread while the job's first ("queued") callback still runs on the
// submitting thread. Whether cancel_all() already sees the job is the runner's business; if it
// cancels it, the "cancelled" callback must wait for the "queued" one to return.
TEST_F(JobRunnerTest, callbacks_of_one_job_never_overlap_when_another_thread_cancels_during_one) {
    FakePool& pool = make_pool(1);
    Gate in_queued_callback, cancel_returned;
    std::atomic<bool> cancel_returned_before_final{false};
    Recorder rec([&](const Progress& p) {
        if (p.state == JobState::queued) {
            in_queued_callback.open();
            (void)cancel_returned.wait(); // hold this callback until cancel_all() has returned
        } else if (connpool::is_final(p.state)) {
            cancel_returned_before_final = cancel_returned.is_open();
        }
    });
    Runner runner{pool};
    // Block the pool's only lease so the job stays queued.
    Gate started, release;
    JobHandle first = runner.submit(make_job("first", blocking(started, release)));
    ASSERT_TRUE(started.wait());

    std::thread canceller([&] {
        if (!in_queued_callback.wait()) return;
        runner.cancel_all();
        cancel_returned.open();
    });
    JobHandle h = runner.submit(make_job("second", noop()), rec.callback());
    canceller.join();
    release.open();
    runner.wait_all();
    EXPECT_EQ(rec.overlaps(), 0);
    const auto states = rec.states();
    ASSERT_FALSE(states.empty());
    EXPECT_EQ(states.front(), JobState::queued);
    EXPECT_EQ(states.back(), h.state());
    EXPECT_EQ(std::count_if(states.begin(), states.end(), [](JobState s) { return connpool::is_final(s); }), 1);
    EXPECT_TRUE(cancel_returned_before_final.load());
    if (h.state() == JobState::cancelled) {
        EXPECT_EQ(states, (std::vector<JobState>{JobState::queued, JobState::cancelled}));
    } else {
        EXPECT_EQ(states, (std::vector<JobState>{JobState::queued, JobState::running, JobState::succeeded}));
    }
}

TEST_F(JobRunnerTest, slow_callbacks_from_many_reports_never_overlap_and_never_go_back) {
    FakePool& pool = make_pool(2);
    std::uint64_t last_done = 0; // touched only inside callbacks: TSan checks they are ordered
    int decreases = 0;
    Recorder rec([&](const Progress& p) {
        if (p.done < last_done) ++decreases;
        last_done = p.done;
        std::this_thread::sleep_for(50us);
    });
    Runner runner{pool, unthrottled()};
    constexpr std::uint64_t n = 300;
    JobHandle h = runner.submit(make_job("busy",
                                         [](FakeConnection&, ProgressReporter& r) {
                                             r.set_total(n, "rows");
                                             for (std::uint64_t i = 0; i < n; ++i) {
                                                 r.advance(1);
                                                 if (i % 50 == 0) r.count_retry();
                                             }
                                         }),
                                rec.callback());
    // Other threads read the job meanwhile (progress, snapshot, a cancel of an unrelated job).
    std::atomic<bool> stop_readers{false};
    std::vector<std::thread> readers;
    for (int t = 0; t < 2; ++t) {
        readers.emplace_back([&] {
            std::uint64_t seen = 0;
            while (!stop_readers.load()) {
                const Progress p = h.progress();
                EXPECT_GE(p.done, seen);
                seen = p.done;
                for (const auto& s : runner.snapshot()) EXPECT_LE(s.done, n);
                std::this_thread::yield();
            }
        });
    }
    EXPECT_EQ(h.wait(), JobState::succeeded);
    stop_readers = true;
    for (auto& t : readers) t.join();
    EXPECT_EQ(rec.overlaps(), 0);
    EXPECT_EQ(decreases, 0);
    EXPECT_EQ(last_done, n);
    EXPECT_EQ(rec.all().size(), n + 4 + n / 50); // queued, running, set_total, advances, retries, final
}

TEST_F(JobRunnerTest, a_throwing_callback_goes_to_the_error_sink_and_the_job_goes_on) {
    FakePool& pool = make_pool(1);
    struct SinkCall {
        Progress progress;
        std::string message;
    };
    std::mutex sink_mutex;
    std::vector<SinkCall> sink_calls;
    RunnerOptions o = forced_only();
    o.on_callback_error = [&](const Progress& p, std::exception_ptr e) {
        std::string message;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            message = ex.what();
        }
        std::lock_guard lock(sink_mutex);
        sink_calls.push_back({p, message});
    };
    Runner runner{pool, o};
    std::atomic<int> calls{0};
    JobHandle h = runner.submit(make_job("noisy", noop()), [&](const Progress&) {
        calls.fetch_add(1);
        throw std::runtime_error("callback boom");
    });
    EXPECT_EQ(h.wait(), JobState::succeeded);
    EXPECT_EQ(h.error(), "") << "a callback's exception is not the job's";
    EXPECT_EQ(calls.load(), 3);
    {
        std::lock_guard lock(sink_mutex);
        ASSERT_EQ(sink_calls.size(), 3u);
        EXPECT_EQ(sink_calls[0].progress.state, JobState::queued);
        EXPECT_EQ(sink_calls[1].progress.state, JobState::running);
        EXPECT_EQ(sink_calls[2].progress.state, JobState::succeeded);
        for (const auto& c : sink_calls) {
            EXPECT_EQ(c.progress.name, "noisy");
            EXPECT_EQ(c.message, "callback boom");
        }
    }
    // The runner keeps working: a later job runs and reports normally.
    Recorder rec;
    JobHandle h2 = runner.submit(make_job("later", noop()), rec.callback());
    EXPECT_EQ(h2.wait(), JobState::succeeded);
    EXPECT_EQ(rec.states(), (std::vector<JobState>{JobState::queued, JobState::running, JobState::succeeded}));
    std::lock_guard lock(sink_mutex);
    EXPECT_EQ(sink_calls.size(), 3u);
}

TEST_F(JobRunnerTest, a_throwing_error_sink_is_swallowed_and_the_job_still_succeeds) {
    FakePool& pool = make_pool(1);
    RunnerOptions o;
    std::atomic<int> sink_calls{0};
    o.on_callback_error = [&](const Progress&, std::exception_ptr) {
        sink_calls.fetch_add(1);
        throw std::runtime_error("sink boom");
    };
    Runner runner{pool, o};
    JobHandle h = runner.submit(make_job("noisy", noop()),
                                [](const Progress&) { throw std::runtime_error("callback boom"); });
    EXPECT_EQ(h.wait(), JobState::succeeded);
    EXPECT_GE(sink_calls.load(), 3);
    JobHandle h2 = runner.submit(make_job("later", noop()));
    EXPECT_EQ(h2.wait(), JobState::succeeded);
}

TEST_F(JobRunnerTest, the_default_error_sink_writes_the_job_name_and_the_error_to_stderr) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    ::testing::internal::CaptureStderr();
    JobHandle h = runner.submit(make_job("orders.db", noop()), [](const Progress& p) {
        if (p.state == JobState::running) throw std::runtime_error("callback boom");
    });
    const JobState end = h.wait();
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(end, JobState::succeeded);
    EXPECT_NE(err.find("orders.db"), std::string::npos) << err;
    EXPECT_NE(err.find("callback boom"), std::string::npos) << err;
}

// ---- concurrency limits -------------------------------------------------------------------

namespace {

/// Runs `jobs` jobs through `runner` and returns the most operations seen running at once.
/// Each operation waits (bounded) until `expected` operations have been running together once,
/// so the test sees the runner's real parallelism rather than whatever timing allows.
std::pair<int, std::vector<JobHandle>> run_and_measure(Runner& runner, int jobs, int expected) {
    std::mutex m;
    std::condition_variable cv;
    int running = 0;
    int most = 0;
    bool reached = false;
    std::vector<JobHandle> handles;
    for (int i = 0; i < jobs; ++i) {
        handles.push_back(runner.submit(make_job("job " + std::to_string(i), [&](FakeConnection&, ProgressReporter&) {
            std::unique_lock lock(m);
            ++running;
            most = std::max(most, running);
            if (running >= expected) reached = true;
            cv.notify_all();
            // Wait (bounded) for the others, so that the most that *can* run together do.
            cv.wait_for(lock, 2s, [&] { return reached; });
            --running;
        })));
    }
    for (auto& h : handles) EXPECT_TRUE(h.wait_for(kGuard));
    std::lock_guard lock(m);
    return {most, handles};
}

} // namespace

TEST_F(JobRunnerTest, never_runs_more_jobs_than_the_pool_can_lease) {
    FakePool& pool = make_pool(3);
    {
        Runner runner{pool};
        EXPECT_EQ(runner.max_running(), 3u);
        auto [most, handles] = run_and_measure(runner, 20, 3);
        EXPECT_EQ(most, 3);
        for (auto& h : handles) EXPECT_EQ(h.state(), JobState::succeeded);
    }
    // (Exact lease accounting is JobsStress.the_runner_takes_a_lease_only_for_a_job_it_runs.)
    const auto s = pool.stats();
    EXPECT_LE(s.created, 3u);
    EXPECT_GE(s.acquired, 20u);
    EXPECT_EQ(s.in_use, 0u);
    expect_consistent(s);
}

TEST_F(JobRunnerTest, max_running_limits_the_jobs_running_at_once_below_the_pool_size) {
    FakePool& pool = make_pool(4);
    RunnerOptions o;
    o.max_running = 2;
    Runner runner{pool, o};
    EXPECT_EQ(runner.max_running(), 2u);
    auto [most, handles] = run_and_measure(runner, 12, 2);
    EXPECT_EQ(most, 2);
    for (auto& h : handles) EXPECT_EQ(h.state(), JobState::succeeded);
    EXPECT_LE(pool.stats().created, 2u);
}

TEST_F(JobRunnerTest, max_running_defaults_to_and_is_capped_at_the_pool_size) {
    FakePool& pool = make_pool(2);
    RunnerOptions big;
    big.max_running = 5;
    Runner capped{pool, big};
    EXPECT_EQ(capped.max_running(), 2u);
    Runner defaulted{pool};
    EXPECT_EQ(defaulted.max_running(), 2u);
    RunnerOptions one;
    one.max_running = 1;
    Runner single{pool, one};
    EXPECT_EQ(single.max_running(), 1u);
}

// ---- wait semantics -----------------------------------------------------------------------

TEST_F(JobHandleTest, wait_returns_only_after_the_final_callback_has_run_and_the_lease_is_back) {
    FakePool& pool = make_pool(1);
    std::atomic<bool> final_finished{false};
    std::optional<connpool::PoolStats> in_final; // written in the final callback, read after wait()
    Recorder rec([&](const Progress& p) {
        if (!connpool::is_final(p.state)) return;
        in_final = pool.stats();
        std::this_thread::sleep_for(30ms); // a wait() that returned early would be caught here
        final_finished = true;
    });
    Runner runner{pool};
    JobHandle h = runner.submit(make_job("j", noop()), rec.callback());
    EXPECT_EQ(h.wait(), JobState::succeeded);
    EXPECT_TRUE(final_finished.load());
    ASSERT_TRUE(in_final.has_value());
    EXPECT_EQ(in_final->in_use, 0u) << "the lease must be back before the final callback";
    EXPECT_EQ(in_final->idle, 1u);
}

TEST_F(JobHandleTest, wait_after_a_throw_returns_only_once_the_connection_is_discarded) {
    FakePool& pool = make_pool(1);
    std::optional<connpool::PoolStats> in_final;
    std::atomic<bool> final_finished{false};
    Recorder rec([&](const Progress& p) {
        if (!connpool::is_final(p.state)) return;
        in_final = pool.stats();
        std::this_thread::sleep_for(20ms);
        final_finished = true;
    });
    Runner runner{pool};
    JobHandle h = runner.submit(
        make_job("j", [](FakeConnection&, ProgressReporter&) { throw std::runtime_error("boom"); }), rec.callback());
    EXPECT_EQ(h.wait(), JobState::failed);
    EXPECT_TRUE(final_finished.load());
    ASSERT_TRUE(in_final.has_value());
    EXPECT_EQ(in_final->discarded, 1u);
    EXPECT_EQ(in_final->in_use, 0u);
}

TEST_F(JobRunnerTest, wait_all_returns_after_every_final_callback_and_leaves_no_lease_out) {
    FakePool& pool = make_pool(3);
    std::atomic<int> finals_finished{0};
    Runner runner{pool};
    constexpr int n = 10;
    for (int i = 0; i < n; ++i) {
        runner.submit(make_job("j" + std::to_string(i),
                               [](FakeConnection&, ProgressReporter& r) {
                                   r.set_total(10, "rows");
                                   r.advance(10);
                               }),
                      [&](const Progress& p) {
                          if (!connpool::is_final(p.state)) return;
                          std::this_thread::sleep_for(5ms);
                          finals_finished.fetch_add(1);
                      });
    }
    runner.wait_all();
    EXPECT_EQ(finals_finished.load(), n);
    EXPECT_EQ(pool.stats().in_use, 0u);
    for (const auto& p : runner.snapshot()) EXPECT_EQ(p.state, JobState::succeeded) << p.name;
    runner.wait_all(); // nothing left: returns at once
}

TEST_F(JobHandleTest, wait_for_reports_whether_the_job_has_ended) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate started, release;
    JobHandle h = runner.submit(make_job("j", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    EXPECT_FALSE(h.wait_for(0ms));
    EXPECT_FALSE(h.wait_for(-5ms));
    EXPECT_FALSE(h.wait_for(10ms));
    EXPECT_FALSE(h.wait_for(std::chrono::duration<double>(0.001)));
    release.open();
    EXPECT_TRUE(h.wait_for(kGuard));
    EXPECT_TRUE(h.wait_for(0ms));
    EXPECT_TRUE(h.wait_for(std::chrono::hours{24}));
}

// A caller that wants "no limit" may pass the largest duration of its type. Converting that to
// steady_clock ticks must not overflow into a deadline in the past.
TEST_F(JobHandleTest, wait_for_with_the_largest_duration_waits_until_the_job_ends) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate started, release;
    JobHandle h = runner.submit(make_job("j", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    auto ms_max = std::async(std::launch::async, [h] { return h.wait_for(std::chrono::milliseconds::max()); });
    auto s_max = std::async(std::launch::async, [h] { return h.wait_for(std::chrono::seconds::max()); });
    // Both must still be waiting: the job has not ended.
    EXPECT_EQ(ms_max.wait_for(100ms), std::future_status::timeout) << "wait_for(milliseconds::max()) returned at once";
    EXPECT_EQ(s_max.wait_for(0ms), std::future_status::timeout) << "wait_for(seconds::max()) returned at once";
    release.open();
    ASSERT_EQ(ms_max.wait_for(kGuard), std::future_status::ready);
    ASSERT_EQ(s_max.wait_for(kGuard), std::future_status::ready);
    EXPECT_TRUE(ms_max.get());
    EXPECT_TRUE(s_max.get());
    EXPECT_EQ(h.wait(), JobState::succeeded);
}

// ---- snapshot -----------------------------------------------------------------------------

TEST_F(JobRunnerTest, snapshot_lists_every_job_in_submission_order_with_its_latest_state) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    EXPECT_TRUE(runner.snapshot().empty());
    Gate started, release;
    JobHandle a = runner.submit(make_job("a", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    JobHandle b = runner.submit(make_job("b", noop()));
    JobHandle c = runner.submit(make_job("c", noop(), JobKind::restore));
    c.cancel();

    auto snap = runner.snapshot();
    ASSERT_EQ(snap.size(), 3u);
    EXPECT_EQ(snap[0].id, 1u);
    EXPECT_EQ(snap[1].id, 2u);
    EXPECT_EQ(snap[2].id, 3u);
    EXPECT_EQ(snap[0].name, "a");
    EXPECT_EQ(snap[1].name, "b");
    EXPECT_EQ(snap[2].name, "c");
    EXPECT_EQ(snap[2].kind, JobKind::restore);
    EXPECT_EQ(snap[0].state, JobState::running);
    EXPECT_EQ(snap[1].state, JobState::queued);
    EXPECT_EQ(snap[2].state, JobState::cancelled);
    EXPECT_EQ(a.id(), 1u);
    EXPECT_EQ(b.id(), 2u);
    EXPECT_EQ(c.id(), 3u);

    release.open();
    runner.wait_all();
    snap = runner.snapshot();
    ASSERT_EQ(snap.size(), 3u);
    EXPECT_EQ(snap[0].state, JobState::succeeded);
    EXPECT_EQ(snap[1].state, JobState::succeeded);
    EXPECT_EQ(snap[2].state, JobState::cancelled);
}

TEST_F(JobRunnerTest, snapshot_forgets_the_oldest_ended_jobs_first_and_never_unfinished_ones) {
    FakePool& pool = make_pool(1);
    RunnerOptions o;
    o.keep_ended = 2;
    Runner runner{pool, o};
    for (int i = 1; i <= 5; ++i) ASSERT_EQ(runner.submit(make_job("done" + std::to_string(i), noop())).wait(), JobState::succeeded);
    Gate started, release;
    JobHandle running = runner.submit(make_job("running", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    JobHandle queued = runner.submit(make_job("queued", noop()));

    const auto snap = runner.snapshot();
    std::vector<std::string> names;
    std::size_t ended = 0;
    for (const auto& p : snap) {
        names.push_back(p.name);
        if (connpool::is_final(p.state)) ++ended;
    }
    EXPECT_LE(ended, 2u);
    ASSERT_GE(snap.size(), 2u);
    EXPECT_EQ(snap[snap.size() - 2].name, "running");
    EXPECT_EQ(snap[snap.size() - 2].state, JobState::running);
    EXPECT_EQ(snap.back().name, "queued");
    EXPECT_EQ(snap.back().state, JobState::queued);
    // The ended jobs kept are the newest ones.
    EXPECT_EQ(names, (std::vector<std::string>{"done4", "done5", "running", "queued"}));
    release.open();
    runner.wait_all();
}

// RunnerOptions::keep_ended: "How many ended jobs snapshot() keeps". snapshot() should never
// show more, whenever the jobs happened to end.
TEST_F(JobRunnerTest, snapshot_never_shows_more_ended_jobs_than_keep_ended) {
    FakePool& pool = make_pool(1);
    RunnerOptions o;
    o.keep_ended = 3;
    Runner runner{pool, o};
    for (int i = 1; i <= 10; ++i) ASSERT_EQ(runner.submit(make_job("j" + std::to_string(i), noop())).wait(), JobState::succeeded);
    runner.wait_all();
    const auto snap = runner.snapshot();
    EXPECT_LE(snap.size(), 3u);
    ASSERT_FALSE(snap.empty());
    EXPECT_EQ(snap.back().name, "j10");
}

// ---- Progress fields ----------------------------------------------------------------------

TEST_F(ProgressTest, waited_counts_the_time_a_job_spent_queued_behind_another) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate started, release;
    JobHandle first = runner.submit(make_job("first", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    JobHandle second = runner.submit(make_job("second", noop()));

    const Progress q1 = second.progress();
    EXPECT_EQ(q1.state, JobState::queued);
    EXPECT_EQ(q1.elapsed, 0ns);
    EXPECT_FALSE(q1.eta.has_value());
    std::this_thread::sleep_for(30ms);
    const Progress q2 = second.progress();
    EXPECT_GE(q2.waited - q1.waited, 30ms) << "waited grows while queued";
    release.open();
    ASSERT_EQ(second.wait(), JobState::succeeded);
    const Progress end = second.progress();
    EXPECT_GE(end.waited, 30ms);
    EXPECT_GE(end.waited, q2.waited);
    EXPECT_GT(end.waited, 0ns);
    EXPECT_EQ(second.progress().waited, end.waited) << "waited is fixed once the job has ended";
}

TEST_F(ProgressTest, elapsed_grows_while_running_and_is_fixed_once_ended) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate started, release;
    JobHandle h = runner.submit(make_job("j", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    const Progress p1 = h.progress();
    std::this_thread::sleep_for(5ms);
    const Progress p2 = h.progress();
    EXPECT_EQ(p2.state, JobState::running);
    EXPECT_GE(p2.elapsed - p1.elapsed, 5ms);
    release.open();
    ASSERT_EQ(h.wait(), JobState::succeeded);
    const Progress e1 = h.progress();
    std::this_thread::sleep_for(2ms);
    const Progress e2 = h.progress();
    EXPECT_GE(e1.elapsed, p2.elapsed);
    EXPECT_EQ(e1.elapsed, e2.elapsed);
}

TEST_F(ProgressTest, eta_rate_unit_and_fraction_follow_the_operation) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate phase1, phase2, go2, go3;
    JobHandle h = runner.submit(make_job("phased", [&](FakeConnection&, ProgressReporter& r) {
        r.advance(5); // total unknown
        phase1.open();
        wait_or_fail(go2);
        r.set_total(100, "pages");
        r.advance(5);
        phase2.open();
        wait_or_fail(go3);
        r.advance(90);
    }));
    ASSERT_TRUE(phase1.wait());
    std::this_thread::sleep_for(2ms); // some running time, so a rate can be measured
    Progress p = h.progress();
    EXPECT_EQ(p.state, JobState::running);
    EXPECT_EQ(p.done, 5u);
    EXPECT_EQ(p.total, 0u);
    EXPECT_FALSE(p.fraction().has_value());
    EXPECT_FALSE(p.eta.has_value()) << "no eta while the total is unknown";
    EXPECT_TRUE(p.unit.empty());
    EXPECT_GT(p.elapsed, 0ns);

    go2.open();
    ASSERT_TRUE(phase2.wait());
    std::this_thread::sleep_for(2ms);
    p = h.progress();
    EXPECT_EQ(p.done, 10u);
    EXPECT_EQ(p.total, 100u);
    EXPECT_EQ(p.unit, "pages");
    ASSERT_TRUE(p.fraction().has_value());
    EXPECT_DOUBLE_EQ(*p.fraction(), 0.1);
    EXPECT_GT(p.rate, 0.0);
    ASSERT_TRUE(p.eta.has_value()) << "running, total known, non-zero rate: an eta";
    EXPECT_GT(*p.eta, 0ns);

    go3.open();
    ASSERT_EQ(h.wait(), JobState::succeeded);
    p = h.progress();
    EXPECT_EQ(p.done, 100u);
    EXPECT_EQ(p.total, 100u);
    ASSERT_TRUE(p.eta.has_value());
    EXPECT_EQ(*p.eta, 0ns) << "eta is zero once succeeded";
    EXPECT_GT(p.rate, 0.0) << "the average rate over the run";
    const double average = 100.0 / std::chrono::duration<double>(p.elapsed).count();
    EXPECT_NEAR(p.rate, average, average * 1e-9);
}

TEST_F(ProgressTest, a_failed_or_cancelled_job_has_no_eta) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    JobHandle failed = runner.submit(make_job("f", [](FakeConnection&, ProgressReporter& r) {
        r.set_total(10, "rows");
        r.advance(3);
        throw connpool::OperationError("nope");
    }));
    ASSERT_EQ(failed.wait(), JobState::failed);
    EXPECT_FALSE(failed.progress().eta.has_value());
    EXPECT_EQ(failed.progress().done, 3u);
    EXPECT_EQ(failed.progress().total, 10u);

    JobHandle cancelled = runner.submit(make_job("c", [](FakeConnection&, ProgressReporter& r) {
        r.set_total(10, "rows");
        r.advance(3);
        while (!r.stop_requested()) std::this_thread::yield();
    }));
    const auto deadline = std::chrono::steady_clock::now() + kGuard;
    while (cancelled.progress().done < 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    cancelled.cancel();
    ASSERT_EQ(cancelled.wait(), JobState::cancelled);
    EXPECT_FALSE(cancelled.progress().eta.has_value());
    EXPECT_EQ(cancelled.progress().done, 3u);
    EXPECT_TRUE(cancelled.progress().error.empty());
}

TEST_F(ProgressReporterTest, counts_restarts_and_retries) {
    FakePool& pool = make_pool(1);
    Recorder rec;
    Runner runner{pool, unthrottled()};
    JobHandle h = runner.submit(make_job("restarts", [](FakeConnection&, ProgressReporter& r) {
        r.set_total(10, "pages");
        r.advance(4);
        r.count_restart(); // starts over: the redone work goes into the total
        r.set_total(14);
        r.count_retry();
        r.count_retry();
        r.count_restart();
        r.count_retry();
        r.advance(10);
    }), rec.callback());
    ASSERT_EQ(h.wait(), JobState::succeeded);
    const Progress p = h.progress();
    EXPECT_EQ(p.restarts, 2u);
    EXPECT_EQ(p.retries, 3u);
    EXPECT_EQ(p.done, 14u);
    EXPECT_EQ(p.total, 14u);
    EXPECT_EQ(p.unit, "pages") << "an empty unit keeps the previous one";
    const auto seen = rec.all();
    ASSERT_FALSE(seen.empty());
    EXPECT_EQ(seen.back().restarts, 2u);
    EXPECT_EQ(seen.back().retries, 3u);
    // Restarts and retries were each delivered (interval 0): counts climb one at a time.
    std::uint64_t restarts = 0, retries = 0;
    for (const auto& s : seen) {
        EXPECT_TRUE(s.restarts == restarts || s.restarts == restarts + 1);
        EXPECT_TRUE(s.retries == retries || s.retries == retries + 1);
        restarts = s.restarts;
        retries = s.retries;
    }
}

TEST_F(ProgressReporterTest, set_phase_is_delivered_at_once_and_only_when_it_changes) {
    FakePool& pool = make_pool(1);
    Recorder rec;
    Runner runner{pool, forced_only()};
    JobHandle h = runner.submit(make_job("phased", [](FakeConnection&, ProgressReporter& r) {
        r.set_phase("copying");
        r.set_phase("copying"); // unchanged: nothing to deliver
        r.set_total(10, "pages");
        r.advance(10); // reaching 100 %
        r.set_phase("verifying");
    }), rec.callback());
    ASSERT_EQ(h.wait(), JobState::succeeded);
    std::vector<std::string> phases;
    for (const auto& p : rec.all()) phases.push_back(p.phase);
    // queued, running, "copying", 100 %, "verifying", final: the throttle (an hour) holds back
    // nothing here, because phase changes are delivered at once.
    EXPECT_EQ(phases, (std::vector<std::string>{"", "", "copying", "copying", "verifying", "verifying"}));
    EXPECT_EQ(rec.all().back().state, JobState::succeeded);
    EXPECT_EQ(h.progress().phase, "verifying");
}

TEST_F(ProgressReporterTest, set_total_never_goes_below_what_is_done) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate checked, go;
    JobHandle h = runner.submit(make_job("shrinking", [&](FakeConnection&, ProgressReporter& r) {
        r.set_total(100, "rows");
        r.advance(10);
        r.set_total(5, "bytes");
        checked.open();
        wait_or_fail(go);
    }));
    ASSERT_TRUE(checked.wait());
    const Progress p = h.progress();
    EXPECT_EQ(p.total, 10u);
    EXPECT_EQ(p.done, 10u);
    EXPECT_EQ(p.unit, "bytes");
    go.open();
    EXPECT_EQ(h.wait(), JobState::succeeded);
}

// Reaching the total is always delivered; an operation whose total was an underestimate (it
// keeps advancing past it: the total follows done) must still be throttled, not deliver a
// callback for every report.
TEST_F(JobRunnerTest, advancing_past_the_total_is_still_throttled) {
    FakePool& pool = make_pool(1);
    Recorder rec;
    Runner runner{pool, forced_only()};
    JobHandle h = runner.submit(make_job("underestimated",
                                         [](FakeConnection&, ProgressReporter& r) {
                                             r.set_total(10, "rows");
                                             for (int i = 0; i < 500; ++i) r.advance(1);
                                         }),
                                rec.callback());
    ASSERT_EQ(h.wait(), JobState::succeeded);
    const auto seen = rec.all();
    EXPECT_EQ(seen.back().done, 500u);
    EXPECT_EQ(seen.back().total, 500u);
    // queued, running, reaching 10/10, final: nothing else may beat an hour-long throttle.
    EXPECT_LE(seen.size(), 5u) << "every report past the total was delivered unthrottled";
}

// ---- the runner's destructor ----------------------------------------------------------------

TEST_F(JobRunnerTest, destructor_cancels_queued_jobs_and_waits_for_running_ones) {
    FakePool& pool = make_pool(1);
    std::optional<Runner> runner;
    runner.emplace(pool);
    Gate started, release;
    std::atomic<bool> stop_seen{false};
    JobHandle running = runner->submit(make_job("running", [&](FakeConnection&, ProgressReporter& r) {
        started.open();
        wait_or_fail(release);
        stop_seen = r.stop_requested();
    }));
    ASSERT_TRUE(started.wait());
    std::atomic<bool> queued_ran{false};
    JobHandle queued = runner->submit(make_job("queued", [&](FakeConnection&, ProgressReporter&) { queued_ran = true; }));

    std::atomic<bool> destroyed{false};
    std::thread destroyer([&] {
        runner.reset();
        destroyed = true;
    });
    // The destructor cancels the queued job first...
    EXPECT_TRUE(queued.wait_for(kGuard));
    EXPECT_EQ(queued.state(), JobState::cancelled);
    // ...and then waits for the running one, which it lets finish.
    EXPECT_FALSE(destroyed.load());
    EXPECT_EQ(running.state(), JobState::running);
    release.open();
    destroyer.join();
    EXPECT_TRUE(destroyed.load());
    EXPECT_EQ(running.state(), JobState::succeeded);
    EXPECT_FALSE(stop_seen.load()) << "a running job is waited for, not cancelled";
    EXPECT_FALSE(queued_ran.load());
    EXPECT_EQ(pool.stats().acquired, 1u);
    EXPECT_EQ(pool.stats().in_use, 0u);
}

TEST_F(JobHandleTest, stays_usable_after_the_runner_is_destroyed) {
    FakePool& pool = make_pool(1);
    JobHandle done, cancelled;
    Gate started, release; // outlive the runner: its worker touches them until it is joined
    {
        Runner runner{pool};
        done = runner.submit(make_job("done", [&](FakeConnection&, ProgressReporter& r) {
            r.set_total(3, "rows");
            r.advance(3);
            started.open();
            wait_or_fail(release);
        }));
        ASSERT_TRUE(started.wait());
        cancelled = runner.submit(make_job("never", noop()));
        release.open();
        // ~JobRunner
    }
    EXPECT_EQ(done.wait(), JobState::succeeded);
    EXPECT_EQ(done.progress().done, 3u);
    EXPECT_EQ(done.progress().name, "done");
    EXPECT_EQ(done.error(), "");
    EXPECT_TRUE(done.wait_for(0ms));
    done.cancel(); // harmless
    EXPECT_EQ(done.state(), JobState::succeeded);
    // Whether the second job ran before the destructor got to it is a race; either way it has
    // ended and its handle answers.
    EXPECT_TRUE(cancelled.wait_for(0ms));
    EXPECT_TRUE(cancelled.state() == JobState::cancelled || cancelled.state() == JobState::succeeded);
    EXPECT_EQ(cancelled.id(), 2u);
}

TEST_F(JobRunnerTest, submit_throws_logic_error_while_the_runner_is_being_destroyed) {
    FakePool& pool = make_pool(1);
    std::optional<Runner> runner;
    runner.emplace(pool);
    Runner* raw = &*runner; // the running job submits through this during destruction
    Gate started, release;
    enum Outcome { none, logic_error, accepted, other };
    std::atomic<Outcome> outcome{none};
    JobHandle running = runner->submit(make_job("running", [&](FakeConnection&, ProgressReporter&) {
        started.open();
        wait_or_fail(release);
        try {
            (void)raw->submit(make_job("late", noop()));
            outcome = accepted;
        } catch (const std::logic_error&) {
            outcome = logic_error;
        } catch (...) {
            outcome = other;
        }
    }));
    ASSERT_TRUE(started.wait());
    JobHandle queued = runner->submit(make_job("queued", noop()));
    std::thread destroyer([&] { runner.reset(); });
    // The destructor marks itself stopping before it cancels the queued jobs.
    EXPECT_TRUE(queued.wait_for(kGuard));
    EXPECT_EQ(queued.state(), JobState::cancelled);
    release.open();
    destroyer.join();
    EXPECT_EQ(running.state(), JobState::succeeded);
    EXPECT_EQ(outcome.load(), logic_error);
}

// The destructor cancels what is queued and waits for what *runs*. A queued job whose worker
// is blocked in pool.acquire() (every connection held elsewhere) is not running: destroying the
// runner must not wait for the pool's acquire_timeout (30 s here). The worker acquires with the
// runner's stop token, which the destructor requests; the connection stays held all along.
TEST(JobRunner, destructor_does_not_wait_for_a_worker_waiting_for_a_connection) {
    FakeFactory f;
    FakePool pool{f, pool_options(1)}; // acquire_timeout 30 s
    auto held = pool.acquire();        // the only connection, held outside the runner throughout
    auto runner = std::make_unique<Runner>(pool);
    std::atomic<int> ran{0};
    JobHandle h = runner->submit(make_job("starved", [&](FakeConnection&, ProgressReporter&) { ran.fetch_add(1); }));
    ASSERT_TRUE(eventually([&] { return pool.stats().waiting >= 1; })) << "the worker never waited for a lease";
    auto destroyed = std::async(std::launch::async, [&] { runner.reset(); });
    // A liveness bound far below the 30 s acquire_timeout, not a speed check.
    EXPECT_EQ(destroyed.wait_for(10s), std::future_status::ready) << "~JobRunner waited for the acquire";
    destroyed.get();
    EXPECT_EQ(h.state(), JobState::cancelled);
    EXPECT_EQ(ran.load(), 0);
    const auto s = pool.stats();
    EXPECT_EQ(s.waiting, 0u);
    EXPECT_EQ(s.timeouts, 0u) << "the worker's acquire was called off, not timed out";
    EXPECT_EQ(s.in_use, 1u);
}

// ---- pool failures --------------------------------------------------------------------------

TEST_F(JobRunnerTest, queued_jobs_fail_with_the_pool_closed_error_when_the_pool_is_closed) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    Gate started, release;
    JobHandle first = runner.submit(make_job("first", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    std::atomic<int> ran{0};
    auto counted = [&](FakeConnection&, ProgressReporter&) { ran.fetch_add(1); };
    JobHandle second = runner.submit(make_job("second", counted));
    JobHandle third = runner.submit(make_job("third", counted));
    pool.close();
    release.open();
    EXPECT_EQ(first.wait(), JobState::succeeded) << "a running job keeps its lease after close";
    EXPECT_EQ(second.wait(), JobState::failed);
    EXPECT_EQ(third.wait(), JobState::failed);
    EXPECT_NE(second.error().find("closed"), std::string::npos) << second.error();
    EXPECT_NE(third.error().find("closed"), std::string::npos) << third.error();
    EXPECT_EQ(ran.load(), 0);
    EXPECT_EQ(second.progress().elapsed, 0ns);

    // Jobs submitted after the close fail the same way.
    JobHandle late = runner.submit(make_job("late", counted));
    EXPECT_EQ(late.wait(), JobState::failed);
    EXPECT_NE(late.error().find("closed"), std::string::npos) << late.error();
    EXPECT_EQ(ran.load(), 0);
    EXPECT_EQ(pool.stats().in_use, 0u);
}

TEST(JobRunner, a_job_fails_with_the_acquire_timeout_message_when_no_connection_frees_up) {
    FakeFactory f;
    auto o = pool_options(1);
    o.acquire_timeout = 50ms;
    FakePool pool{f, o};
    Runner runner{pool};
    std::atomic<int> ran{0};
    {
        auto held = pool.acquire(); // the pool's only connection, held outside the runner
        JobHandle h = runner.submit(make_job("starved", [&](FakeConnection&, ProgressReporter&) { ran.fetch_add(1); }));
        EXPECT_EQ(h.wait(), JobState::failed);
        EXPECT_NE(h.error().find("acquire timed out"), std::string::npos) << h.error();
        EXPECT_EQ(ran.load(), 0);
        const Progress p = h.progress();
        EXPECT_GE(p.waited, 50ms);
        EXPECT_EQ(p.elapsed, 0ns);
        EXPECT_EQ(pool.stats().timeouts, 1u);
    }
    // The runner keeps working once a connection is free again.
    JobHandle h2 = runner.submit(make_job("fed", [&](FakeConnection&, ProgressReporter&) { ran.fetch_add(1); }));
    EXPECT_EQ(h2.wait(), JobState::succeeded);
    EXPECT_EQ(ran.load(), 1);
}

// ---- argument checks ----------------------------------------------------------------------

TEST_F(JobRunnerTest, submit_rejects_a_job_without_a_run_function) {
    FakePool& pool = make_pool(1);
    Runner runner{pool};
    std::atomic<int> callbacks{0};
    EXPECT_THROW((void)runner.submit(FakeJob{"empty", JobKind::backup, {}}, [&](const Progress&) { callbacks.fetch_add(1); }),
                 std::invalid_argument);
    EXPECT_EQ(callbacks.load(), 0);
    EXPECT_TRUE(runner.snapshot().empty());
    // The runner is unaffected.
    EXPECT_EQ(runner.submit(make_job("ok", noop())).wait(), JobState::succeeded);
    EXPECT_EQ(runner.snapshot().size(), 1u);
}

TEST_F(JobRunnerTest, rejects_a_negative_progress_interval) {
    FakePool& pool = make_pool(1);
    RunnerOptions o;
    o.progress_interval = -1ms;
    EXPECT_THROW(Runner(pool, o), std::invalid_argument);
}

TEST(JobHandle, a_default_handle_refers_to_no_job_and_its_members_throw_logic_error) {
    const JobHandle h;
    EXPECT_FALSE(h.valid());
    EXPECT_THROW((void)h.id(), std::logic_error);
    EXPECT_THROW((void)h.progress(), std::logic_error);
    EXPECT_THROW((void)h.state(), std::logic_error);
    EXPECT_THROW((void)h.wait(), std::logic_error);
    EXPECT_THROW((void)h.wait_for(1ms), std::logic_error);
    EXPECT_THROW(h.cancel(), std::logic_error);
    EXPECT_THROW((void)h.error(), std::logic_error);
}
