// submit() does O(1) amortised work however many jobs the runner holds (issue 7: 40,000
// submits were quadratic, each one scanning the whole job list to trim it). Counted, not
// timed: the test seam CONNPOOL_JOB_TEST_POINT reports how many job-list entries each submit
// walks (the search for its place, and the trim when there is one), and the tests bound the
// total by a constant times the number of submits. A trim on every submit walks n²/2.
#include <cstdint>
#include <string_view>

// Declared before the job layer is included: submit() calls it at its named points.
void jobs_linear_test_point(std::string_view point, std::uint64_t count);
#define CONNPOOL_JOB_TEST_POINT(point, count) ::jobs_linear_test_point(point, count)

#include "job_fixtures.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

using namespace connpool::testing;

namespace {

std::atomic<std::uint64_t> g_walked{0}; // job-list entries walked by submits
std::atomic<std::uint64_t> g_trims{0};

} // namespace

void jobs_linear_test_point(std::string_view point, std::uint64_t count) {
    if (point == "submit: job list searched") g_walked.fetch_add(count + 1); // + the comparison that stopped
    if (point == "submit: job list trimmed") {
        g_walked.fetch_add(count);
        g_trims.fetch_add(1);
    }
}

namespace {

class SubmitIsLinear : public PoolAndRunner<1> {
protected:
    SubmitIsLinear() {
        g_walked = 0;
        g_trims = 0;
    }
};

constexpr std::uint64_t kSubmits = 20'000;

} // namespace

TEST_F(SubmitIsLinear, submits_that_all_stay_queued_walk_a_constant_number_of_entries_each) {
    auto held = pool().acquire(); // every job stays queued, so no trim can drop anything
    Runner& r = runner();
    for (std::uint64_t i = 0; i < kSubmits; ++i) static_cast<void>(r.submit(make_job("queued", noop())));
    EXPECT_LE(g_walked.load(), 4 * kSubmits) << "submit() walks a growing part of the job list";
    EXPECT_GE(g_trims.load(), 1u) << "the seam is not reached: this test checks nothing";
    EXPECT_EQ(r.snapshot().size(), kSubmits);
    destroy_runner(); // cancels the 20,000 queued jobs
}

TEST_F(SubmitIsLinear, submits_of_jobs_that_end_walk_a_constant_number_of_entries_each) {
    RunnerOptions options = unthrottled();
    options.keep_ended = 16; // many trims
    Runner& r = runner(std::move(options));
    for (std::uint64_t i = 0; i < kSubmits; ++i) static_cast<void>(r.submit(make_job("ends", noop())));
    r.wait_all();
    EXPECT_LE(g_walked.load(), 4 * kSubmits);
    EXPECT_GE(g_trims.load(), 1u);
    EXPECT_LE(r.snapshot().size(), 16u);
}

TEST_F(SubmitIsLinear, concurrent_submits_walk_no_more_than_the_submits_racing_them) {
    auto held = pool().acquire();
    Runner& r = runner();
    constexpr int kThreads = 4;
    std::vector<std::thread> submitters;
    for (int t = 0; t < kThreads; ++t)
        submitters.emplace_back([&r] {
            for (std::uint64_t i = 0; i < kSubmits / kThreads; ++i) static_cast<void>(r.submit(make_job("raced", noop())));
        });
    for (auto& s : submitters) s.join();
    EXPECT_LE(g_walked.load(), (4 + kThreads) * kSubmits);
    EXPECT_EQ(r.snapshot().size(), kSubmits);
    destroy_runner();
}
