// Waiting from inside the job layer (issue 7): wait(), wait_for() and wait_all() called from a
// job's own progress callback or from its own running operation can never return (the job
// cannot end while its own thread waits for it), so they throw std::logic_error instead of
// deadlocking. Waiting for *another* job from a callback or an operation works.
#include "job_fixtures.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>

using namespace connpool::testing;

namespace {

enum class Outcome { none, returned, logic_error, other };

/// Runs `f` and says how it ended.
template <class F>
Outcome outcome_of(F f) {
    try {
        f();
        return Outcome::returned;
    } catch (const std::logic_error&) {
        return Outcome::logic_error;
    } catch (...) {
        return Outcome::other;
    }
}

class JobWaitFromInside : public PoolAndRunner<2> {};

} // namespace

TEST_F(JobWaitFromInside, wait_from_the_jobs_own_progress_callback_throws_logic_error) {
    HandleSlot self;
    std::atomic<Outcome> outcome{Outcome::none};
    Recorder rec([&](const Progress& p) {
        if (p.state == JobState::running) outcome = outcome_of([&] { self.get().wait(); });
    });
    self.set(runner().submit(make_job("self", noop()), rec.callback()));
    EXPECT_EQ(wait_or_abort(self.get(), "a job whose callback waits for it"), JobState::succeeded);
    EXPECT_EQ(outcome.load(), Outcome::logic_error);
}

TEST_F(JobWaitFromInside, wait_from_the_jobs_own_final_callback_throws_logic_error) {
    HandleSlot self;
    std::atomic<Outcome> outcome{Outcome::none};
    Recorder rec([&](const Progress& p) {
        if (p.state == JobState::succeeded) outcome = outcome_of([&] { self.get().wait(); });
    });
    self.set(runner().submit(make_job("self", noop()), rec.callback()));
    EXPECT_EQ(wait_or_abort(self.get(), "a job whose final callback waits for it"), JobState::succeeded);
    EXPECT_EQ(outcome.load(), Outcome::logic_error);
}

TEST_F(JobWaitFromInside, wait_for_from_the_jobs_own_callback_throws_logic_error) {
    HandleSlot self;
    std::atomic<Outcome> outcome{Outcome::none};
    Recorder rec([&](const Progress& p) {
        if (p.state == JobState::running)
            outcome = outcome_of([&] { (void)self.get().wait_for(std::chrono::hours::max()); });
    });
    self.set(runner().submit(make_job("self", noop()), rec.callback()));
    EXPECT_EQ(wait_or_abort(self.get(), "a job whose callback waits for it"), JobState::succeeded);
    EXPECT_EQ(outcome.load(), Outcome::logic_error);
}

TEST_F(JobWaitFromInside, wait_all_from_a_jobs_progress_callback_throws_logic_error) {
    std::atomic<Outcome> outcome{Outcome::none};
    Runner& r = runner();
    Recorder rec([&](const Progress& p) {
        if (p.state == JobState::running) outcome = outcome_of([&] { r.wait_all(); });
    });
    JobHandle h = r.submit(make_job("self", noop()), rec.callback());
    EXPECT_EQ(wait_or_abort(h, "a job whose callback calls wait_all()"), JobState::succeeded);
    EXPECT_EQ(outcome.load(), Outcome::logic_error);
}

TEST_F(JobWaitFromInside, wait_all_from_a_jobs_final_callback_throws_logic_error) {
    std::atomic<Outcome> outcome{Outcome::none};
    Recorder rec([&](const Progress& p) {
        if (p.state == JobState::succeeded) outcome = outcome_of([&] { runner().wait_all(); });
    });
    JobHandle h = runner().submit(make_job("self", noop()), rec.callback());
    EXPECT_EQ(wait_or_abort(h, "a job whose final callback calls wait_all"), JobState::succeeded);
    EXPECT_EQ(outcome.load(), Outcome::logic_error);
}

TEST_F(JobWaitFromInside, wait_from_a_callback_of_a_job_cancelled_while_queued_throws_logic_error) {
    // The final callback of a job cancelled in the queue runs on the cancelling thread, inside
    // cancel(): waiting for the job there could never return either.
    Gate started, release;
    JobHandle running = runner().submit(make_job("running", blocking(started, release)));
    JobHandle second = runner().submit(make_job("second", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    HandleSlot self;
    std::atomic<Outcome> outcome{Outcome::none};
    Recorder rec([&](const Progress& p) {
        if (p.state == JobState::cancelled) outcome = outcome_of([&] { self.get().wait(); });
    });
    self.set(runner().submit(make_job("queued", noop()), rec.callback()));
    self.get().cancel();
    EXPECT_EQ(wait_or_abort(self.get(), "the cancelled job"), JobState::cancelled);
    EXPECT_EQ(outcome.load(), Outcome::logic_error);
    release.open();
    EXPECT_EQ(wait_or_abort(running, "the running job"), JobState::succeeded);
    EXPECT_EQ(wait_or_abort(second, "the running job"), JobState::succeeded);
}

TEST_F(JobWaitFromInside, wait_from_the_jobs_own_operation_throws_logic_error) {
    HandleSlot self;
    std::atomic<Outcome> outcome{Outcome::none};
    self.set(runner().submit(make_job("self", [&](FakeConnection&, ProgressReporter&) {
        outcome = outcome_of([&] { self.get().wait(); });
    })));
    EXPECT_EQ(wait_or_abort(self.get(), "a job whose operation waits for it"), JobState::succeeded);
    EXPECT_EQ(outcome.load(), Outcome::logic_error);
}

TEST_F(JobWaitFromInside, wait_all_from_a_running_operation_throws_logic_error) {
    std::atomic<Outcome> outcome{Outcome::none};
    Runner& r = runner();
    JobHandle h = r.submit(make_job("self", [&](FakeConnection&, ProgressReporter&) {
        outcome = outcome_of([&] { r.wait_all(); });
    }));
    EXPECT_EQ(wait_or_abort(h, "a job whose operation calls wait_all()"), JobState::succeeded);
    EXPECT_EQ(outcome.load(), Outcome::logic_error);
}

TEST_F(JobWaitFromInside, a_callback_may_wait_for_another_job_to_end) {
    Gate release;
    JobHandle a = runner().submit(make_job("a", [&](FakeConnection&, ProgressReporter&) { wait_or_fail(release); }));
    std::atomic<Outcome> outcome{Outcome::none};
    std::atomic<JobState> seen{JobState::queued};
    Recorder rec([&](const Progress& p) {
        if (p.state != JobState::running) return;
        release.open();
        outcome = outcome_of([&] { seen = a.wait(); });
    });
    JobHandle b = runner().submit(make_job("b", noop()), rec.callback());
    EXPECT_EQ(wait_or_abort(b, "a job whose callback waits for another"), JobState::succeeded);
    EXPECT_EQ(outcome.load(), Outcome::returned);
    EXPECT_EQ(seen.load(), JobState::succeeded);
}

TEST_F(JobWaitFromInside, an_operation_may_wait_for_another_job_to_end) {
    Gate release;
    JobHandle a = runner().submit(make_job("a", [&](FakeConnection&, ProgressReporter&) { wait_or_fail(release); }));
    std::atomic<JobState> seen{JobState::queued};
    JobHandle b = runner().submit(make_job("b", [&](FakeConnection&, ProgressReporter&) {
        release.open();
        seen = a.wait();
    }));
    EXPECT_EQ(wait_or_abort(b, "a job whose operation waits for another"), JobState::succeeded);
    EXPECT_EQ(seen.load(), JobState::succeeded);
}
