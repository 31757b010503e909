// Durations at the edges of their range in the job layer (issue 7, bug 2): milliseconds::max()
// is a natural spelling of "never", and negative or NaN values must not overflow into something
// else. Every duration either saturates to never/forever or is rejected with
// std::invalid_argument naming the field and the value. UBSan (the asan preset) checks that
// nothing overflows on the way.
#include "job_fixtures.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <stdexcept>
#include <string>

using namespace connpool::testing;

namespace {

class JobDurations : public PoolAndRunner<1> {};

/// Returns the message of the std::invalid_argument `f` throws, or "" if it throws none.
template <class F>
std::string invalid_argument_message(F f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_F(JobDurations, a_progress_interval_of_milliseconds_max_never_lets_a_throttled_callback_through) {
    RunnerOptions options;
    options.progress_interval = std::chrono::milliseconds::max();
    Recorder rec;
    JobHandle h = runner(std::move(options)).submit(make_job("never", [](FakeConnection&, ProgressReporter& r) {
        for (int i = 0; i < 50; ++i) r.advance(1); // unknown total: no 100 % to force a callback
    }), rec.callback());
    EXPECT_EQ(wait_or_abort(h, "the job"), JobState::succeeded);
    EXPECT_EQ(rec.states(), (std::vector<JobState>{JobState::queued, JobState::running, JobState::succeeded}));
    EXPECT_EQ(h.progress().done, 50u);
}

TEST_F(JobDurations, a_progress_interval_too_large_for_nanoseconds_saturates_too) {
    RunnerOptions options;
    options.progress_interval = std::chrono::milliseconds{std::numeric_limits<std::int64_t>::max() / 1000};
    Recorder rec;
    JobHandle h = runner(std::move(options)).submit(make_job("never", [](FakeConnection&, ProgressReporter& r) {
        for (int i = 0; i < 50; ++i) r.advance(1);
    }), rec.callback());
    EXPECT_EQ(wait_or_abort(h, "the job"), JobState::succeeded);
    EXPECT_EQ(rec.states(), (std::vector<JobState>{JobState::queued, JobState::running, JobState::succeeded}));
}

TEST_F(JobDurations, a_negative_progress_interval_is_rejected_naming_the_field_and_the_value) {
    for (const auto interval : {std::chrono::milliseconds{-1}, std::chrono::milliseconds::min()}) {
        RunnerOptions options;
        options.progress_interval = interval;
        const std::string message = invalid_argument_message([&] { Runner r{pool(), std::move(options)}; });
        EXPECT_NE(message.find("progress_interval"), std::string::npos) << message;
        EXPECT_NE(message.find(std::to_string(interval.count())), std::string::npos) << message;
    }
}

TEST_F(JobDurations, wait_for_with_a_negative_timeout_of_any_size_returns_at_once) {
    Gate started, release;
    JobHandle h = runner().submit(make_job("running", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    EXPECT_FALSE(h.wait_for(std::chrono::milliseconds{-1}));
    EXPECT_FALSE(h.wait_for(std::chrono::milliseconds::min()));
    EXPECT_FALSE(h.wait_for(std::chrono::hours::min()));
    EXPECT_FALSE(h.wait_for(std::chrono::duration<double>(-std::numeric_limits<double>::infinity())));
    release.open();
    EXPECT_EQ(wait_or_abort(h, "the job"), JobState::succeeded);
}

TEST_F(JobDurations, wait_for_with_a_huge_or_infinite_timeout_waits_until_the_job_ends) {
    Gate started, release;
    JobHandle h = runner().submit(make_job("running", blocking(started, release)));
    ASSERT_TRUE(started.wait());
    std::thread opener([&] {
        std::this_thread::sleep_for(20ms); // a window in which a wrong wait_for returns false
        release.open();
    });
    EXPECT_TRUE(h.wait_for(std::chrono::hours::max()));
    opener.join();
    EXPECT_TRUE(h.wait_for(std::chrono::nanoseconds::max()));
    EXPECT_TRUE(h.wait_for(std::chrono::duration<double>(std::numeric_limits<double>::infinity())));
}

TEST_F(JobDurations, wait_for_with_a_nan_timeout_is_rejected) {
    JobHandle h = runner().submit(make_job("done", noop()));
    EXPECT_EQ(wait_or_abort(h, "the job"), JobState::succeeded);
    const std::string message = invalid_argument_message(
        [&] { (void)h.wait_for(std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN())); });
    EXPECT_NE(message.find("wait_for"), std::string::npos) << message;
    EXPECT_NE(message.find("nan"), std::string::npos) << message;
}
