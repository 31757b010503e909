// JSON lines (monitor/json_lines.hpp): the exact text of each kind of line for fixed inputs,
// escaping of hostile names, throttling, and a real run parsed back line by line.
#include <connpool/monitor/json_lines.hpp>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "monitor_fixtures.hpp"

using namespace std::chrono_literals;
using connpool::JobKind;
using connpool::JobState;
using connpool::Progress;
using connpool::monitor::JobEvent;
using connpool::monitor::JobEventType;
using connpool::monitor::JsonLinesSink;
using connpool::monitor::PoolEventRecord;

namespace {

// 2026-12-01T22:00:00Z
const auto fixed_time = std::chrono::system_clock::time_point{} + 1'796'162'400s;

class JsonLinesTest : public ::testing::Test {
protected:
    std::ostringstream out;
    JsonLinesSink sink{out, {.progress_interval = 1000ms}};

    static Progress running_backup() {
        Progress p;
        p.id = 3;
        p.name = "orders.db";
        p.kind = JobKind::backup;
        p.state = JobState::running;
        p.done = 250;
        p.total = 1000;
        p.unit = "pages";
        p.phase = "copying";
        p.elapsed = 1500ms;
        p.waited = 250ms;
        p.rate = 166.5;
        p.eta = 4500ms;
        p.restarts = 1;
        return p;
    }

    void job(JobEventType type, const Progress& p, std::chrono::milliseconds at = 0ms, std::uint64_t key = 7) {
        sink.on_job(JobEvent{type, key, &p, fixed_time + at});
    }
};

TEST_F(JsonLinesTest, progress_line_has_the_pinned_fields_in_a_fixed_order) {
    job(JobEventType::progress, running_backup(), 250ms);
    EXPECT_EQ(out.str(),
              R"({"schema_version":1,"seq":1,"time":"2026-12-01T22:00:00.250Z","event":"job.progress","job":"orders.db","id":3,)"
              R"("kind":"backup","state":"running","done":250,"total":1000,"unit":"pages","phase":"copying",)"
              R"("elapsed_seconds":1.5,"waited_seconds":0.25,"rate":166.5,"eta_seconds":4.5,"restarts":1,"retries":0,"job_key":7})"
              "\n");
}

TEST_F(JsonLinesTest, failed_end_line_has_its_state_and_a_redacted_error) {
    Progress p = running_backup();
    p.state = JobState::failed;
    p.phase.clear();
    p.eta.reset();
    p.error = "cannot open 'postgresql://app:s3cret@db/x': password=s3cret rejected";
    job(JobEventType::ended, p);
    EXPECT_EQ(out.str(),
              R"({"schema_version":1,"seq":1,"time":"2026-12-01T22:00:00.000Z","event":"job.ended","job":"orders.db","id":3,)"
              R"("kind":"backup","state":"failed","done":250,"total":1000,"unit":"pages","elapsed_seconds":1.5,)"
              R"("waited_seconds":0.25,"rate":166.5,"restarts":1,"retries":0,)"
              R"("error":"cannot open 'postgresql://app:***@db/x': password=*** rejected","job_key":7})"
              "\n");
}

TEST_F(JsonLinesTest, hostile_job_names_are_escaped_and_stay_valid_utf8) {
    Progress p = running_backup();
    p.name = "a \"quoted\" \\ name\nwith Z\xC3\xBCrich \xE2\x9C\x93 and a bad byte \xFF";
    job(JobEventType::queued, p);
    const std::string line = out.str();
    EXPECT_NE(line.find(R"("job":"a \"quoted\" \\ name\nwith Zürich ✓ and a bad byte �")"), std::string::npos) << line;
    EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line per event";
    EXPECT_EQ(nlohmann::json::parse(line)["job"], "a \"quoted\" \\ name\nwith Zürich ✓ and a bad byte \xEF\xBF\xBD");
}

TEST_F(JsonLinesTest, progress_lines_are_throttled_per_job_but_other_events_are_not) {
    const Progress p = running_backup();
    job(JobEventType::started, p, 0ms);
    job(JobEventType::progress, p, 10ms);  // first progress line of the job: written
    job(JobEventType::progress, p, 500ms); // within the interval: dropped
    job(JobEventType::progress, p, 600ms, 8); // another job: written
    job(JobEventType::phase, p, 700ms);    // not throttled
    job(JobEventType::progress, p, 1100ms); // an interval after the first: written
    job(JobEventType::ended, p, 1200ms);
    std::istringstream in(out.str());
    std::vector<std::string> events;
    for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line);
        events.push_back(j["event"].get<std::string>() + "@" + j["time"].get<std::string>().substr(20, 3));
        EXPECT_EQ(j["seq"], events.size());
    }
    EXPECT_EQ(events, (std::vector<std::string>{"job.started@000", "job.progress@010", "job.progress@600", "job.phase@700",
                                                "job.progress@100", "job.ended@200"}));
}

TEST_F(JsonLinesTest, pool_event_lines_say_why_where_and_in_what_state) {
    PoolEventRecord destroyed{"backups", connpool::PoolEventKind::destroyed, 2, 0ns, "", "", 0, "idle timeout", std::nullopt, fixed_time};
    sink.on_pool(destroyed);
    PoolEventRecord timeout{"backups", connpool::PoolEventKind::timeout, 0, 1500ms, "app.cpp", "int main()", 42, "", std::nullopt, fixed_time};
    timeout.stats = connpool::PoolStats{.max_size = 2, .open = 2, .idle = 0, .in_use = 2, .waiting = 3, .creating = 1};
    sink.on_pool(timeout);
    PoolEventRecord leak{"backups", connpool::PoolEventKind::leak, 1, 60s, "job.cpp", "void run()", 7, "", std::nullopt, fixed_time};
    sink.on_pool(leak);
    PoolEventRecord failed{"backups", connpool::PoolEventKind::create_failed, 0, 0ns, "", "", 0,
                           "connection to server failed: password=hunter2 host=db", std::nullopt, fixed_time};
    sink.on_pool(failed);
    EXPECT_EQ(out.str(),
              R"j({"schema_version":1,"seq":1,"time":"2026-12-01T22:00:00.000Z","event":"pool.destroyed","pool":"backups","slot":2,"reason":"idle timeout"})j"
              "\n"
              R"j({"schema_version":1,"seq":2,"time":"2026-12-01T22:00:00.000Z","event":"pool.timeout","pool":"backups","slot":0,"waited_seconds":1.5,)j"
              R"j("site":{"file":"app.cpp","function":"int main()","line":42},"stats":{"max_size":2,"open":2,"idle":0,"in_use":2,"waiting":3,"creating":1,"paused":false}})j"
              "\n"
              R"j({"schema_version":1,"seq":3,"time":"2026-12-01T22:00:00.000Z","event":"pool.leak","pool":"backups","slot":1,"held_seconds":60.0,)j"
              R"j("site":{"file":"job.cpp","function":"void run()","line":7}})j"
              "\n"
              R"j({"schema_version":1,"seq":4,"time":"2026-12-01T22:00:00.000Z","event":"pool.create_failed","pool":"backups","slot":0,)j"
              R"j("error":"connection to server failed: password=*** host=db"})j"
              "\n");
}

TEST(JsonLinesRun, a_real_run_parses_back_with_monotonic_progress_one_end_per_job_and_errors) {
    auto out = std::make_shared<std::ostringstream>();
    connpool::testing::MonitoredRun run;
    run.hub.add(std::make_shared<JsonLinesSink>(*out, connpool::monitor::JsonLinesOptions{.progress_interval = 0ms}));
    run.run(/*pools=*/3, /*jobs=*/30);
    run.runners.clear();
    run.watches.clear();
    run.pool_list.clear(); // pool.destroyed lines for every connection

    std::istringstream in(out->str());
    std::uint64_t seq = 0;
    std::map<std::uint64_t, std::uint64_t> done;   // job_key -> last done
    std::map<std::uint64_t, int> ends;             // job_key -> end lines
    std::map<std::string, int> events;
    int failed_with_error = 0;
    for (std::string line; std::getline(in, line);) {
        SCOPED_TRACE(line);
        EXPECT_EQ(line.find("hunter2"), std::string::npos);
        const auto j = nlohmann::json::parse(line);
        EXPECT_EQ(j["schema_version"], 1);
        EXPECT_EQ(j["seq"].get<std::uint64_t>(), ++seq);
        const std::string time = j["time"];
        EXPECT_EQ(time.size(), 24u);
        EXPECT_EQ(time.back(), 'Z');
        const std::string event = j["event"];
        ++events[event];
        if (event.starts_with("job.")) {
            for (const char* field : {"job", "kind", "state", "done", "total", "unit"}) EXPECT_TRUE(j.contains(field)) << field;
            const auto key = j["job_key"].get<std::uint64_t>();
            EXPECT_GE(j["done"].get<std::uint64_t>(), done[key]) << "done went back";
            done[key] = j["done"].get<std::uint64_t>();
            EXPECT_EQ(ends[key], 0) << "a line after the end line";
            if (event == "job.ended") {
                ++ends[key];
                const std::string state = j["state"];
                EXPECT_TRUE(state == "succeeded" || state == "failed" || state == "cancelled");
                if (state == "failed") {
                    ASSERT_TRUE(j.contains("error"));
                    EXPECT_NE(j["error"].get<std::string>().find("password=***"), std::string::npos);
                    ++failed_with_error;
                }
            }
        }
    }
    EXPECT_EQ(done.size(), 90u);
    EXPECT_EQ(ends.size(), 90u);
    for (const auto& [key, n] : ends) EXPECT_EQ(n, 1) << key;
    EXPECT_EQ(failed_with_error, 3 * 4); // j % 7 == 3 for j < 30: 3, 10, 17, 24
    EXPECT_EQ(events["job.queued"], 90);
    EXPECT_GT(events["job.progress"], 0);
    EXPECT_GT(events["job.phase"], 0);
    EXPECT_EQ(events["pool.timeout"], 1);
    EXPECT_EQ(events["pool.create_failed"], 2);
    EXPECT_EQ(events["pool.created"], events["pool.destroyed"]);
}

} // namespace

namespace {

// A set (Hub::track_set) fed like a database backup's DatabaseOperation: its lines through a hub
// whose clock is fixed, so the rate and the ETA are exact.
TEST(JsonLinesSet, a_set_writes_started_progress_and_ended_lines_with_its_totals) {
    std::ostringstream out;
    auto now = fixed_time;
    connpool::monitor::Hub hub({.now = [&] { return now; }});
    hub.add(std::make_shared<JsonLinesSink>(out, connpool::monitor::JsonLinesOptions{.progress_interval = 1000ms}));
    auto set = hub.track_set("backup of shop", JobKind::backup);
    now += 2s;
    set.update({.done = 500, .total = 2000, .jobs_done = 1, .jobs = 4});
    now += 500ms; // within progress_interval of the last line: not written
    set.update({.done = 600, .total = 2000, .jobs_done = 1, .jobs = 4});
    now += 1500ms;
    set.update({.done = 1000, .total = 2000, .jobs_done = 2, .jobs = 4});
    now += 4s;
    set.end({.done = 2000, .total = 2000, .jobs_done = 4, .jobs = 4}, JobState::succeeded);
    set.update({.done = 1, .total = 2, .jobs_done = 0, .jobs = 4}); // after the end: ignored
    EXPECT_EQ(out.str(),
              R"({"schema_version":1,"seq":1,"time":"2026-12-01T22:00:02.000Z","event":"set.started","set":"backup of shop",)"
              R"("kind":"backup","state":"running","done":500,"total":2000,"unit":"bytes","jobs_done":1,"jobs":4,)"
              R"("elapsed_seconds":2.0,"rate":250.0,"eta_seconds":6.0,"set_key":1})"
              "\n"
              R"({"schema_version":1,"seq":2,"time":"2026-12-01T22:00:04.000Z","event":"set.progress","set":"backup of shop",)"
              R"("kind":"backup","state":"running","done":1000,"total":2000,"unit":"bytes","jobs_done":2,"jobs":4,)"
              R"("elapsed_seconds":4.0,"rate":250.0,"eta_seconds":4.0,"set_key":1})"
              "\n"
              R"({"schema_version":1,"seq":3,"time":"2026-12-01T22:00:08.000Z","event":"set.ended","set":"backup of shop",)"
              R"("kind":"backup","state":"succeeded","done":2000,"total":2000,"unit":"bytes","jobs_done":4,"jobs":4,)"
              R"("elapsed_seconds":8.0,"rate":250.0,"set_key":1})"
              "\n");
}

TEST(JsonLinesSet, a_failed_set_says_why_redacted_and_a_dropped_tracker_ends_cancelled) {
    std::ostringstream out;
    auto now = fixed_time;
    connpool::monitor::Hub hub({.now = [&] { return now; }});
    hub.add(std::make_shared<JsonLinesSink>(out));
    {
        auto failed = hub.track_set("restore into shop", JobKind::restore);
        now += 1s;
        failed.end({.done = 10, .total = 100, .jobs_done = 1, .jobs = 2}, JobState::failed,
                   "public.orders: cannot connect: password=s3cret rejected");
        auto dropped = hub.track_set("backup of shop", JobKind::backup);
        dropped.update({.done = 0, .total = 100, .jobs_done = 0, .jobs = 2});
    }
    std::vector<nlohmann::json> lines;
    std::istringstream in(out.str());
    for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
    ASSERT_EQ(lines.size(), 3u) << out.str();
    EXPECT_EQ(lines[0]["event"], "set.ended");
    EXPECT_EQ(lines[0]["state"], "failed");
    EXPECT_EQ(lines[0]["error"], "public.orders: cannot connect: password=*** rejected");
    EXPECT_EQ(out.str().find("s3cret"), std::string::npos);
    EXPECT_EQ(lines[1]["event"], "set.started");
    EXPECT_EQ(lines[2]["event"], "set.ended");
    EXPECT_EQ(lines[2]["state"], "cancelled");
    EXPECT_EQ(lines[2]["set_key"], 2);
    // Both ended: the hub keeps them among the recent ones, none running.
    const auto sets = hub.sets();
    ASSERT_EQ(sets.size(), 2u);
    EXPECT_EQ(sets[0].state, JobState::failed);
    EXPECT_EQ(sets[1].state, JobState::cancelled);
}

} // namespace
