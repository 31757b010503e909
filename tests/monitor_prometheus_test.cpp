// Prometheus text (monitor/prometheus.hpp): the exact text for a fixed snapshot, escaping,
// `promtool check metrics` on a real run with several pools, many jobs and failures, our own
// checks promtool does not make (no duplicate series, buckets sorted and cumulative, +Inf ==
// _count), bounded cardinality, and the atomic textfile.
#include <connpool/monitor/prometheus.hpp>

#include <gtest/gtest.h>

#include <array>
#include <charconv>
#include <cstdint>
#include <limits>
#include <random>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>

#include "monitor_fixtures.hpp"

using namespace std::chrono_literals;
using connpool::JobKind;
using connpool::JobState;
using connpool::Progress;
using connpool::monitor::MetricsSnapshot;
using connpool::monitor::render_prometheus;

namespace {

const auto fixed_time = std::chrono::system_clock::time_point{} + 1'796'162'400s;

/// One sample line split up: family-level name, label text, value.
struct Sample {
    std::string name, labels, value;
};

std::vector<Sample> samples_of(const std::string& text) {
    std::vector<Sample> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        const auto brace = line.find('{');
        const auto space = line.rfind(' ');
        Sample s;
        if (brace != std::string::npos && brace < space) {
            s.name = line.substr(0, brace);
            s.labels = line.substr(brace + 1, line.rfind('}') - brace - 1);
        } else {
            s.name = line.substr(0, space);
        }
        s.value = line.substr(space + 1);
        out.push_back(s);
    }
    return out;
}

/// The checks promtool does not make: every series once, every family's HELP/TYPE once, and
/// histogram buckets sorted by le, cumulative, with +Inf equal to _count.
void expect_well_formed(const std::string& text) {
    std::set<std::string> series;
    for (const auto& s : samples_of(text)) EXPECT_TRUE(series.insert(s.name + "{" + s.labels + "}").second) << "duplicate " << s.name << "{" << s.labels << "}";
    std::map<std::string, int> helps, types;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with("# HELP ")) ++helps[line.substr(7, line.find(' ', 7) - 7)];
        if (line.starts_with("# TYPE ")) ++types[line.substr(7, line.find(' ', 7) - 7)];
    }
    for (const auto& [name, n] : helps) EXPECT_EQ(n, 1) << name;
    for (const auto& [name, n] : types) EXPECT_EQ(n, 1) << name;

    std::map<std::string, std::vector<std::pair<double, double>>> buckets; // labels without le -> (le, count)
    std::map<std::string, double> counts;
    for (const auto& s : samples_of(text)) {
        if (s.name.ends_with("_bucket")) {
            const auto le = s.labels.find("le=\"");
            ASSERT_NE(le, std::string::npos);
            const std::string bound = s.labels.substr(le + 4, s.labels.find('"', le + 4) - le - 4);
            std::string rest = s.labels.substr(0, le);
            if (!rest.empty() && rest.back() == ',') rest.pop_back();
            buckets[s.name.substr(0, s.name.size() - 7) + "{" + rest + "}"].emplace_back(
                bound == "+Inf" ? HUGE_VAL : std::stod(bound), std::stod(s.value));
        } else if (s.name.ends_with("_count")) {
            counts[s.name.substr(0, s.name.size() - 6) + "{" + s.labels + "}"] = std::stod(s.value);
        }
    }
    for (const auto& [key, list] : buckets) {
        SCOPED_TRACE(key);
        for (std::size_t i = 1; i < list.size(); ++i) {
            EXPECT_LT(list[i - 1].first, list[i].first) << "buckets not sorted by le";
            EXPECT_LE(list[i - 1].second, list[i].second) << "buckets not cumulative";
        }
        ASSERT_FALSE(list.empty());
        EXPECT_EQ(list.back().first, HUGE_VAL) << "no +Inf bucket";
        ASSERT_TRUE(counts.count(key)) << "no _count";
        EXPECT_EQ(list.back().second, counts[key]) << "+Inf != _count";
    }
}

/// Runs `promtool check metrics` on `text`; returns its exit status and output.
std::pair<int, std::string> promtool(const std::string& text) {
    const std::string tool = CONNPOOL_PROMTOOL;
    if (tool.empty()) return {-1, "promtool was not found when the build was configured (Debian: apt-get install prometheus)"};
    const auto dir = std::filesystem::temp_directory_path();
    const auto input = dir / ("connpool-promtool-" + std::to_string(::getpid()) + ".prom");
    const auto output = dir / ("connpool-promtool-" + std::to_string(::getpid()) + ".out");
    std::ofstream(input) << text;
    const std::string command = "'" + tool + "' check metrics < '" + input.string() + "' > '" + output.string() + "' 2>&1";
    const int status = std::system(command.c_str());
    std::ifstream in(output);
    std::stringstream said;
    said << in.rdbuf();
    std::filesystem::remove(input);
    std::filesystem::remove(output);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, said.str()};
}

class PrometheusGolden : public ::testing::Test {
protected:
    void SetUp() override {
        connpool::monitor::PoolSnapshot pool;
        pool.name = "backups";
        pool.stats = connpool::PoolStats{.max_size = 4, .open = 3, .idle = 1, .in_use = 2, .waiting = 1, .creating = 1,
                                         .paused = true, .created = 5, .destroyed = 2, .acquired = 40, .timeouts = 1,
                                         .cancelled = 3, .create_failures = 2, .validation_failures = 0, .discarded = 1,
                                         .leaks = 0, .retirements = 1};
        pool.acquire_wait.bounds = {0.001, 0.1};
        pool.acquire_wait.counts = {30, 8, 2};
        pool.acquire_wait.sum = 3.25;
        m.pools.push_back(pool);
        Progress running;
        running.name = "a \"quoted\" \\ name\nZ\xC3\xBCrich \xE2\x9C\x93";
        running.state = JobState::running;
        running.done = 250;
        running.total = 1000;
        running.unit = "pages";
        running.elapsed = 1500ms;
        running.waited = 250ms;
        running.eta = 4500ms;
        running.restarts = 1;
        m.jobs.push_back(running);
        Progress failed;
        failed.name = "restore.db";
        failed.kind = JobKind::restore;
        failed.state = JobState::failed;
        failed.done = 10;
        failed.unit = "pages";
        failed.elapsed = 2s;
        m.jobs.push_back(failed);
        m.jobs_by_state = {0, 1, 7, 1, 0};
        m.ended_by_kind[0][2] = 7;
        m.ended_by_kind[1][3] = 1;
        m.last_success.push_back({"orders.db", JobKind::backup, fixed_time + 500ms});
    }
    MetricsSnapshot m;
};

TEST_F(PrometheusGolden, renders_the_exact_text_of_a_fixed_snapshot) {
    EXPECT_EQ(render_prometheus(m), R"(# HELP connpool_pool_connections Connections open in the pool, by state (idle or in_use).
# TYPE connpool_pool_connections gauge
connpool_pool_connections{pool="backups",state="idle"} 1
connpool_pool_connections{pool="backups",state="in_use"} 2
# HELP connpool_pool_max_connections Most connections the pool may open (max_size).
# TYPE connpool_pool_max_connections gauge
connpool_pool_max_connections{pool="backups"} 4
# HELP connpool_pool_waiting_threads Threads waiting in acquire for a connection.
# TYPE connpool_pool_waiting_threads gauge
connpool_pool_waiting_threads{pool="backups"} 1
# HELP connpool_pool_pending_creates Connection creations in flight (create() running).
# TYPE connpool_pool_pending_creates gauge
connpool_pool_pending_creates{pool="backups"} 1
# HELP connpool_pool_paused 1 while the pool is paused (acquires wait for resume), else 0.
# TYPE connpool_pool_paused gauge
connpool_pool_paused{pool="backups"} 1
# HELP connpool_pool_acquires_total Leases handed out.
# TYPE connpool_pool_acquires_total counter
connpool_pool_acquires_total{pool="backups"} 40
# HELP connpool_pool_acquire_timeouts_total Acquires that gave up at their deadline.
# TYPE connpool_pool_acquire_timeouts_total counter
connpool_pool_acquire_timeouts_total{pool="backups"} 1
# HELP connpool_pool_acquire_cancellations_total Acquires called off by a stop request.
# TYPE connpool_pool_acquire_cancellations_total counter
connpool_pool_acquire_cancellations_total{pool="backups"} 3
# HELP connpool_pool_connections_created_total Connections created.
# TYPE connpool_pool_connections_created_total counter
connpool_pool_connections_created_total{pool="backups"} 5
# HELP connpool_pool_connections_destroyed_total Connections destroyed.
# TYPE connpool_pool_connections_destroyed_total counter
connpool_pool_connections_destroyed_total{pool="backups"} 2
# HELP connpool_pool_create_failures_total Connection creations that failed.
# TYPE connpool_pool_create_failures_total counter
connpool_pool_create_failures_total{pool="backups"} 2
# HELP connpool_pool_validation_failures_total Idle connections found dead by validation.
# TYPE connpool_pool_validation_failures_total counter
connpool_pool_validation_failures_total{pool="backups"} 0
# HELP connpool_pool_discarded_total Leases ended by discarding their connection as broken.
# TYPE connpool_pool_discarded_total counter
connpool_pool_discarded_total{pool="backups"} 1
# HELP connpool_pool_leaks_total Leases reported as held past the leak threshold.
# TYPE connpool_pool_leaks_total counter
connpool_pool_leaks_total{pool="backups"} 0
# HELP connpool_pool_retirements_total Calls of retire_all(), each replacing every connection.
# TYPE connpool_pool_retirements_total counter
connpool_pool_retirements_total{pool="backups"} 1
# HELP connpool_pool_acquire_wait_seconds Time acquires waited for a connection.
# TYPE connpool_pool_acquire_wait_seconds histogram
connpool_pool_acquire_wait_seconds_bucket{pool="backups",le="0.001"} 30
connpool_pool_acquire_wait_seconds_bucket{pool="backups",le="0.1"} 38
connpool_pool_acquire_wait_seconds_bucket{pool="backups",le="+Inf"} 40
connpool_pool_acquire_wait_seconds_sum{pool="backups"} 3.25
connpool_pool_acquire_wait_seconds_count{pool="backups"} 40
# HELP connpool_jobs Jobs by state: queued and running now; ended ones since the start.
# TYPE connpool_jobs gauge
connpool_jobs{state="queued"} 0
connpool_jobs{state="running"} 1
connpool_jobs{state="succeeded"} 7
connpool_jobs{state="failed"} 1
connpool_jobs{state="cancelled"} 0
# HELP connpool_jobs_ended_total Jobs that ended, by kind and end state.
# TYPE connpool_jobs_ended_total counter
connpool_jobs_ended_total{kind="backup",state="succeeded"} 7
connpool_jobs_ended_total{kind="backup",state="failed"} 0
connpool_jobs_ended_total{kind="backup",state="cancelled"} 0
connpool_jobs_ended_total{kind="restore",state="succeeded"} 0
connpool_jobs_ended_total{kind="restore",state="failed"} 1
connpool_jobs_ended_total{kind="restore",state="cancelled"} 0
# HELP connpool_job_state A job's current state (1 for the state it is in).
# TYPE connpool_job_state gauge
connpool_job_state{name="a \"quoted\" \\ name\nZürich ✓",kind="backup",state="running"} 1
connpool_job_state{name="restore.db",kind="restore",state="failed"} 1
# HELP connpool_job_progress_ratio Fraction of a job's work done, 0 to 1 (when its total is known).
# TYPE connpool_job_progress_ratio gauge
connpool_job_progress_ratio{name="a \"quoted\" \\ name\nZürich ✓",kind="backup"} 0.25
# HELP connpool_job_work_done Units of work a job has done (label unit says what they are).
# TYPE connpool_job_work_done gauge
connpool_job_work_done{name="a \"quoted\" \\ name\nZürich ✓",kind="backup",unit="pages"} 250
connpool_job_work_done{name="restore.db",kind="restore",unit="pages"} 10
# HELP connpool_job_work_expected Units of work a job has in all, when known.
# TYPE connpool_job_work_expected gauge
connpool_job_work_expected{name="a \"quoted\" \\ name\nZürich ✓",kind="backup",unit="pages"} 1000
# HELP connpool_job_elapsed_seconds Time a job has been running (holding a connection).
# TYPE connpool_job_elapsed_seconds gauge
connpool_job_elapsed_seconds{name="a \"quoted\" \\ name\nZürich ✓",kind="backup"} 1.5
connpool_job_elapsed_seconds{name="restore.db",kind="restore"} 2
# HELP connpool_job_waited_seconds Time a job waited for a connection.
# TYPE connpool_job_waited_seconds gauge
connpool_job_waited_seconds{name="a \"quoted\" \\ name\nZürich ✓",kind="backup"} 0.25
connpool_job_waited_seconds{name="restore.db",kind="restore"} 0
# HELP connpool_job_eta_seconds Estimated time until a running job ends (when known).
# TYPE connpool_job_eta_seconds gauge
connpool_job_eta_seconds{name="a \"quoted\" \\ name\nZürich ✓",kind="backup"} 4.5
# HELP connpool_job_restarts Times a job's operation started over.
# TYPE connpool_job_restarts gauge
connpool_job_restarts{name="a \"quoted\" \\ name\nZürich ✓",kind="backup"} 1
connpool_job_restarts{name="restore.db",kind="restore"} 0
# HELP connpool_job_last_success_timestamp_seconds When a job of this name and kind last succeeded, in seconds since the Unix epoch.
# TYPE connpool_job_last_success_timestamp_seconds gauge
connpool_job_last_success_timestamp_seconds{name="orders.db",kind="backup"} 1796162400.5
)");
}

TEST_F(PrometheusGolden, the_fixed_snapshot_passes_promtool_and_our_own_checks) {
    const std::string text = render_prometheus(m);
    expect_well_formed(text);
    const auto [status, said] = promtool(text);
    EXPECT_EQ(status, 0) << said;
    EXPECT_EQ(said, "") << "promtool lint";
}

/// Two sets (Hub::track_set: a database backup running, a restore failed) beside the jobs.
void add_sets(MetricsSnapshot& m) {
    connpool::monitor::SetProgress backup;
    backup.name = "backup of \"shop\"";
    backup.done = 1500;
    backup.total = 6000;
    backup.jobs_done = 1;
    backup.jobs = 4;
    backup.elapsed = 3s;
    backup.rate = 500;
    backup.eta = 9s;
    m.sets.push_back(backup);
    connpool::monitor::SetProgress restore;
    restore.name = "restore into shop";
    restore.kind = JobKind::restore;
    restore.state = JobState::failed;
    restore.done = 10;
    restore.jobs_done = 2;
    restore.jobs = 2;
    restore.elapsed = 1500ms;
    restore.error = "public.orders failed";
    m.sets.push_back(restore);
}

TEST_F(PrometheusGolden, sets_render_their_own_series_after_the_jobs) {
    const std::string without = render_prometheus(m);
    EXPECT_EQ(without.find("connpool_set_"), std::string::npos) << "no set families without sets";
    add_sets(m);
    const std::string text = render_prometheus(m);
    ASSERT_EQ(text.compare(0, without.size(), without), 0) << "the sets come after everything else";
    EXPECT_EQ(text.substr(without.size()), R"(# HELP connpool_set_state A set's (e.g. a database backup's) current state (1 for the state it is in).
# TYPE connpool_set_state gauge
connpool_set_state{name="backup of \"shop\"",kind="backup",state="running"} 1
connpool_set_state{name="restore into shop",kind="restore",state="failed"} 1
# HELP connpool_set_progress_ratio Fraction of a set's work done over all its jobs, 0 to 1 (when its total is known).
# TYPE connpool_set_progress_ratio gauge
connpool_set_progress_ratio{name="backup of \"shop\"",kind="backup"} 0.25
# HELP connpool_set_work_done Units of work a set's jobs have done (label unit says what they are).
# TYPE connpool_set_work_done gauge
connpool_set_work_done{name="backup of \"shop\"",kind="backup",unit="bytes"} 1500
connpool_set_work_done{name="restore into shop",kind="restore",unit="bytes"} 10
# HELP connpool_set_work_expected Units of work a set's jobs have in all, when known.
# TYPE connpool_set_work_expected gauge
connpool_set_work_expected{name="backup of \"shop\"",kind="backup",unit="bytes"} 6000
# HELP connpool_set_jobs Jobs in a set (e.g. tables).
# TYPE connpool_set_jobs gauge
connpool_set_jobs{name="backup of \"shop\"",kind="backup"} 4
connpool_set_jobs{name="restore into shop",kind="restore"} 2
# HELP connpool_set_jobs_ended Jobs of a set that have ended.
# TYPE connpool_set_jobs_ended gauge
connpool_set_jobs_ended{name="backup of \"shop\"",kind="backup"} 1
connpool_set_jobs_ended{name="restore into shop",kind="restore"} 2
# HELP connpool_set_elapsed_seconds Time since a set started.
# TYPE connpool_set_elapsed_seconds gauge
connpool_set_elapsed_seconds{name="backup of \"shop\"",kind="backup"} 3
connpool_set_elapsed_seconds{name="restore into shop",kind="restore"} 1.5
# HELP connpool_set_eta_seconds Estimated time until a running set ends (when known).
# TYPE connpool_set_eta_seconds gauge
connpool_set_eta_seconds{name="backup of \"shop\"",kind="backup"} 9
)");
    expect_well_formed(text);
    const auto [status, said] = promtool(text);
    EXPECT_EQ(status, 0) << said;
    EXPECT_EQ(said, "") << "promtool lint";
}

TEST(PrometheusSets, set_series_stay_bounded_and_one_per_name_and_kind) {
    connpool::monitor::Hub hub({.keep_ended = 5});
    for (int i = 0; i < 40; ++i) {
        auto set = hub.track_set("backup " + std::to_string(i % 20), JobKind::backup);
        set.update({.done = 1, .total = 2, .jobs_done = 0, .jobs = 1});
        set.end({.done = 2, .total = 2, .jobs_done = 1, .jobs = 1}, JobState::succeeded);
    }
    auto running = hub.track_set("backup 19", JobKind::backup); // same labels as an ended one
    running.update({.done = 1, .total = 4, .jobs_done = 0, .jobs = 1});
    const std::string text = render_prometheus(hub.metrics());
    expect_well_formed(text); // one series per (name, kind): the newest set's
    std::size_t states = 0;
    for (std::size_t at = text.find("\nconnpool_set_state{"); at != std::string::npos; at = text.find("\nconnpool_set_state{", at + 1)) ++states;
    EXPECT_EQ(states, 5u) << text; // 5 ended kept (backup 15..19), the running one replacing backup 19's
    EXPECT_NE(text.find("connpool_set_progress_ratio{name=\"backup 19\",kind=\"backup\"} 0.25\n"), std::string::npos) << text;
    const auto [status, said] = promtool(text);
    EXPECT_EQ(status, 0) << said;
}

class PrometheusRun : public ::testing::Test {
protected:
    connpool::testing::MonitoredRun run{connpool::monitor::HubOptions{.keep_ended = 25}};
};

TEST_F(PrometheusRun, a_real_run_with_several_pools_many_jobs_and_failures_is_clean_under_promtool) {
    run.run(/*pools=*/3, /*jobs=*/60);
    const std::string text = render_prometheus(run.hub.metrics());
    expect_well_formed(text);
    const auto [status, said] = promtool(text);
    EXPECT_EQ(status, 0) << said;
    EXPECT_EQ(said, "") << "promtool lint";

    for (const char* pinned : {"connpool_pool_connections{pool=\"pool-2\",state=\"idle\"} ",
                               "connpool_pool_connections{pool=\"pool-0\",state=\"in_use\"} 0",
                               "connpool_pool_acquires_total{pool=\"pool-1\"} ", "connpool_jobs{state=\"failed\"} 24",
                               ".sqlite\",kind=\"backup\"} 1\n",
                               "connpool_job_last_success_timestamp_seconds{name=\"db_0_1.sqlite\",kind=\"backup\"} ",
                               "connpool_pool_acquire_timeouts_total{pool=\"pool-0\"} 1",
                               "connpool_pool_create_failures_total{pool=\"pool-1\"} 2"})
        EXPECT_NE(text.find(pinned), std::string::npos) << pinned << "\n" << text;
}

TEST_F(PrometheusRun, per_job_series_stay_bounded_while_aggregates_count_every_job) {
    run.run(/*pools=*/2, /*jobs=*/200);
    const std::string text = render_prometheus(run.hub.metrics());
    std::size_t per_job = 0;
    for (const auto& s : samples_of(text)) per_job += s.name == "connpool_job_state";
    EXPECT_LE(per_job, 25u); // keep_ended; nothing is queued or running any more
    const auto m = run.hub.metrics();
    EXPECT_EQ(m.jobs_by_state[2] + m.jobs_by_state[3] + m.jobs_by_state[4], 400u);
    std::size_t names = 0;
    for (const auto& s : samples_of(text)) names += s.name == "connpool_job_last_success_timestamp_seconds";
    EXPECT_EQ(names, m.last_success.size());
    EXPECT_GT(names, 300u) << "one series per job name that succeeded";
}

// The renderer writes durations from their integer nanoseconds instead of through
// std::to_chars(double) (its largest cost); the text must be the same, digit for digit, in the
// plain and the scientific form, at every magnitude, and at the edges where it falls back.
TEST(PrometheusNumbers, seconds_are_written_exactly_as_to_chars_writes_the_double) {
    std::mt19937_64 rng(20261202);
    const auto expect_same = [](std::int64_t ns) {
        char fast[64];
        char slow[64];
        const std::string_view a(fast, static_cast<std::size_t>(
                                          connpool::monitor::detail::append_seconds(fast, fast + 64, std::chrono::nanoseconds(ns)) - fast));
        const double seconds = std::chrono::duration<double>(std::chrono::nanoseconds(ns)).count();
        const std::string_view b(slow, static_cast<std::size_t>(std::to_chars(slow, slow + 64, seconds).ptr - slow));
        EXPECT_EQ(a, b) << ns << " ns";
        return a == b;
    };
    for (std::int64_t ns = -3; ns < 200'000; ++ns)
        if (!expect_same(ns)) return;
    for (int i = 0; i < 300'000; ++i) {
        std::int64_t ns = static_cast<std::int64_t>(rng() % 10'000'000'000'000'000ULL) >> (rng() % 60);
        for (auto zeros = rng() % 12; zeros > 0 && ns < (std::int64_t{1} << 53) / 10; --zeros) ns *= 10;
        if (!expect_same(ns)) return;
    }
    for (int exponent = 0; exponent <= 18; ++exponent) { // 10^18 * 9 + 1 still fits in int64_t
        std::int64_t p = 1;
        for (int e = 0; e < exponent; ++e) p *= 10;
        for (std::int64_t k = 1; k < 10; ++k)
            for (const std::int64_t ns : {p * k - 1, p * k, p * k + 1}) expect_same(ns);
    }
    for (const std::int64_t ns : {(std::int64_t{1} << 53) - 1, std::int64_t{1} << 53, std::numeric_limits<std::int64_t>::max(),
                                  std::numeric_limits<std::int64_t>::min()})
        expect_same(ns);
}

TEST(PrometheusTextfile, write_textfile_replaces_the_file_whole_and_leaves_no_temp) {
    const auto dir = std::filesystem::temp_directory_path() / ("connpool-textfile-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const auto file = dir / "connpool.prom";
    connpool::monitor::write_textfile(file, "a 1\n");
    connpool::monitor::write_textfile(file, "b 2\n");
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_EQ(text.str(), "b 2\n");
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0644u) << "node_exporter runs as another user";
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator{}), 1);
    EXPECT_THROW(connpool::monitor::write_textfile(dir / "missing" / "x.prom", "c 3\n"), std::runtime_error);
    std::filesystem::remove_all(dir);
}

} // namespace
