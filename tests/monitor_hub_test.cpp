// The Hub (monitor/hub.hpp) and what it takes from the core: the pool's name
// (PoolOptions::name), the pool's state carried on a timeout event (PoolEvent::stats), the
// acquire-wait histogram in PoolStats (acquire_wait_buckets), and a watched runner's jobs read
// from its snapshot (current, and including jobs submitted without track()).
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "counting_connection.hpp"

using namespace std::chrono_literals;
using connpool::JobState;
using connpool::PoolEvent;
using connpool::PoolEventKind;
using connpool::PoolOptions;
using connpool::PoolStats;
using connpool::Progress;
using connpool::testing::FakeConnection;
using connpool::testing::FakeFactory;
using Pool = connpool::Pool<FakeConnection, FakeFactory>;
using Runner = connpool::JobRunner<Pool>;

namespace {

PoolOptions quiet(std::size_t max_size) {
    PoolOptions o;
    o.max_size = max_size;
    o.maintenance_interval = 0ms;
    return o;
}

// ---- PoolOptions::name --------------------------------------------------------------------

TEST(HubPoolName, a_named_pool_is_labelled_by_its_name_without_one_given_to_the_hub) {
    connpool::monitor::Hub hub;
    PoolOptions o = quiet(2);
    o.name = "orders";
    Pool pool{FakeFactory{}, hub.instrument(o)};
    const auto watch = hub.watch(pool);
    (void)pool.acquire();
    const auto m = hub.metrics();
    ASSERT_EQ(m.pools.size(), 1u);
    EXPECT_EQ(m.pools[0].name, "orders");
    ASSERT_TRUE(m.pools[0].stats);
    EXPECT_EQ(m.pools[0].stats->acquired, 1u);
    EXPECT_NE(connpool::monitor::render_prometheus(m).find("connpool_pool_acquires_total{pool=\"orders\"} 1\n"), std::string::npos);
}

TEST(HubPoolName, a_name_given_to_instrument_becomes_the_pools_name_when_it_has_none) {
    connpool::monitor::Hub hub;
    EXPECT_EQ(hub.instrument("backups", quiet(2)).name, "backups");
    PoolOptions named = quiet(2);
    named.name = "mine";
    EXPECT_EQ(hub.instrument("label", named).name, "mine") << "the pool's own name is kept";
}

TEST(HubPoolName, instrumenting_or_watching_an_unnamed_pool_without_a_name_is_an_error_that_says_so) {
    connpool::monitor::Hub hub;
    try {
        (void)hub.instrument(quiet(2));
        FAIL() << "no exception";
    } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("PoolOptions::name"), std::string::npos) << e.what();
    }
    Pool pool{FakeFactory{}, quiet(1)};
    EXPECT_THROW((void)hub.watch(pool), std::invalid_argument);
}

// ---- PoolEvent::stats ---------------------------------------------------------------------

TEST(HubTimeoutState, a_timeout_event_carries_the_pools_state_at_that_moment) {
    std::mutex mu;
    std::optional<PoolStats> seen;
    int others_with_stats = 0;
    PoolOptions o = quiet(1);
    o.on_event = [&](const PoolEvent& e) {
        std::lock_guard lock(mu);
        if (e.kind == PoolEventKind::timeout) {
            ASSERT_NE(e.stats, nullptr);
            seen = *e.stats;
        } else if (e.stats != nullptr) {
            ++others_with_stats;
        }
    };
    Pool pool{FakeFactory{}, o};
    auto held = pool.acquire();
    EXPECT_THROW((void)pool.acquire_for(1ms), connpool::AcquireTimeout);
    std::lock_guard lock(mu);
    ASSERT_TRUE(seen);
    EXPECT_EQ(seen->open, 1u);
    EXPECT_EQ(seen->in_use, 1u);
    EXPECT_EQ(seen->idle, 0u);
    EXPECT_EQ(seen->waiting, 1u) << "the thread timing out is still waiting when it is reported";
    EXPECT_EQ(seen->timeouts, 1u);
    EXPECT_EQ(others_with_stats, 0);
}

TEST(HubTimeoutState, the_json_timeout_line_has_the_state_from_the_event_even_for_a_pool_not_watched) {
    connpool::monitor::Hub hub;
    std::ostringstream out;
    hub.add(std::make_shared<connpool::monitor::JsonLinesSink>(out));
    Pool pool{FakeFactory{}, hub.instrument("p", quiet(1))}; // instrumented, never watched
    {
        auto held = pool.acquire();
        EXPECT_THROW((void)pool.acquire_for(1ms), connpool::AcquireTimeout);
    }
    std::istringstream lines(out.str());
    int timeouts = 0;
    for (std::string line; std::getline(lines, line);) {
        const auto j = nlohmann::json::parse(line);
        if (j["event"] != "pool.timeout") continue;
        ++timeouts;
        ASSERT_TRUE(j.contains("stats")) << line;
        EXPECT_EQ(j["stats"]["open"], 1) << line;
        EXPECT_EQ(j["stats"]["in_use"], 1) << line;
        EXPECT_EQ(j["stats"]["idle"], 0) << line;
        EXPECT_EQ(j["stats"]["waiting"], 1) << line;
        EXPECT_EQ(j["stats"]["paused"], false) << line;
    }
    EXPECT_EQ(timeouts, 1) << out.str();
}

// ---- PoolStats::acquire_wait_buckets ------------------------------------------------------

TEST(HubWaitHistogram, pool_stats_count_every_acquire_in_cumulative_buckets_at_the_fixed_bounds) {
    Pool pool{FakeFactory{}, quiet(1)};
    for (int i = 0; i < 5; ++i) (void)pool.acquire(); // the fast path: waits of 0
    {
        auto held = pool.acquire();
        std::thread waiter([&] { (void)pool.acquire(); });
        std::this_thread::sleep_for(60ms); // the waiter sleeps in the queue by now
        held.release();
        waiter.join();
    }
    const PoolStats st = pool.stats();
    const auto& b = st.acquire_wait_buckets;
    EXPECT_EQ(b.back(), st.acquired) << "+Inf counts every acquire";
    for (std::size_t i = 1; i < b.size(); ++i) EXPECT_LE(b[i - 1], b[i]) << "cumulative at " << i;
    // The waiter waited about 60 ms: over the 50 ms bound, at most the 30 s one.
    std::size_t over_50ms = 0;
    while (connpool::acquire_wait_bucket_bounds[over_50ms] < 50ms) ++over_50ms;
    EXPECT_EQ(b[over_50ms], st.acquired - 1) << "every acquire but the waiter's waited <= 50 ms";
    EXPECT_GE(st.acquire_wait_sum, 50ms);
    EXPECT_LT(st.acquire_wait_sum, 30s);
}

TEST(HubWaitHistogram, the_prometheus_histogram_of_a_watched_pool_is_the_pools_own) {
    connpool::monitor::Hub hub;
    Pool pool{FakeFactory{}, hub.instrument("p", quiet(2))};
    const auto watch = hub.watch("p", pool);
    for (int i = 0; i < 7; ++i) (void)pool.acquire();
    const auto m = hub.metrics();
    ASSERT_EQ(m.pools.size(), 1u);
    EXPECT_EQ(m.pools[0].acquire_wait.count(), 7u);
    const std::string text = connpool::monitor::render_prometheus(m);
    // The first acquire waited for the creator thread; the other six took an idle one at once.
    EXPECT_NE(text.find("connpool_pool_acquire_wait_seconds_bucket{pool=\"p\",le=\"+Inf\"} 7\n"), std::string::npos) << text;
    EXPECT_NE(text.find("connpool_pool_acquire_wait_seconds_count{pool=\"p\"} 7\n"), std::string::npos) << text;
}

TEST(HubWaitHistogram, a_pool_instrumented_but_not_watched_shows_no_histogram) {
    connpool::monitor::Hub hub;
    Pool pool{FakeFactory{}, hub.instrument("p", quiet(2))};
    (void)pool.acquire();
    const std::string text = connpool::monitor::render_prometheus(hub.metrics());
    EXPECT_EQ(text.find("connpool_pool_acquire_wait_seconds_bucket"), std::string::npos) << text;
    EXPECT_EQ(text.find("connpool_pool_acquire_wait_seconds_count"), std::string::npos) << text;
}

// ---- Hub::watch(runner) -------------------------------------------------------------------

/// A job that does `done` units of 100 and then waits until released.
struct Gate {
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;
    std::latch reached{1};

    connpool::Job<FakeConnection> job(std::string name, std::uint64_t done) {
        return {std::move(name), connpool::JobKind::backup, [this, done](FakeConnection&, connpool::ProgressReporter& r) {
                    r.set_total(100, "pages");
                    r.advance(done);
                    reached.count_down();
                    std::unique_lock lock(mu);
                    cv.wait(lock, [this] { return open; });
                }};
    }
    void release() {
        {
            std::lock_guard lock(mu);
            open = true;
        }
        cv.notify_all();
    }
};

TEST(HubWatchRunner, jobs_of_a_watched_runner_show_their_current_progress_between_callbacks) {
    connpool::monitor::Hub hub;
    Pool pool{FakeFactory{}, quiet(1)};
    Runner runner{pool, {.progress_interval = std::chrono::milliseconds::max()}}; // state changes only
    const auto watch = hub.watch(runner);
    Gate gate;
    auto handle = runner.submit(gate.job("orders.db", 40), hub.track());
    gate.reached.wait();
    const auto jobs = hub.jobs();
    ASSERT_EQ(jobs.size(), 1u) << "tracked and watched: shown once";
    EXPECT_EQ(jobs[0].name, "orders.db");
    EXPECT_EQ(jobs[0].state, JobState::running);
    EXPECT_EQ(jobs[0].done, 40u) << "from the snapshot, not the last callback";
    gate.release();
    EXPECT_EQ(handle.wait(), JobState::succeeded);
}

TEST(HubWatchRunner, jobs_submitted_without_track_are_visible_in_jobs_and_metrics) {
    connpool::monitor::Hub hub;
    Pool pool{FakeFactory{}, quiet(1)};
    Runner runner{pool};
    auto watch = hub.watch(runner);
    Gate gate;
    auto running = runner.submit(gate.job("untracked.db", 25));
    gate.reached.wait();
    auto queued = runner.submit(gate.job("queued.db", 0));
    auto m = hub.metrics();
    ASSERT_EQ(m.jobs.size(), 2u);
    EXPECT_EQ(m.jobs[0].name, "untracked.db");
    EXPECT_EQ(m.jobs[0].done, 25u);
    EXPECT_EQ(m.jobs[1].state, JobState::queued);
    EXPECT_EQ(m.jobs_by_state[static_cast<std::size_t>(JobState::running)], 1u);
    EXPECT_EQ(m.jobs_by_state[static_cast<std::size_t>(JobState::queued)], 1u);
    const std::string text = connpool::monitor::render_prometheus(m);
    EXPECT_NE(text.find("connpool_job_progress_ratio{name=\"untracked.db\",kind=\"backup\"} 0.25\n"), std::string::npos) << text;
    watch.reset();
    EXPECT_TRUE(hub.jobs().empty()) << "a runner no longer watched is no longer shown";
    gate.release();
    EXPECT_EQ(running.wait(), JobState::succeeded);
    EXPECT_EQ(queued.wait(), JobState::succeeded);
}

TEST(HubWatchRunner, a_watched_runners_ended_jobs_are_bounded_by_keep_ended) {
    connpool::monitor::Hub hub({.keep_ended = 3});
    Pool pool{FakeFactory{}, quiet(2)};
    Runner runner{pool};
    const auto watch = hub.watch(runner);
    for (int i = 0; i < 10; ++i)
        runner.submit({"db" + std::to_string(i), connpool::JobKind::backup, [](FakeConnection&, connpool::ProgressReporter&) {}});
    runner.wait_all();
    const auto jobs = hub.jobs();
    ASSERT_EQ(jobs.size(), 3u);
    EXPECT_EQ(jobs[0].name, "db7");
    EXPECT_EQ(jobs[2].name, "db9");
}

} // namespace
