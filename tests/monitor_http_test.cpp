// The HTTP endpoint (monitor/http.hpp), scraped by a real HTTP client (httplib's) while jobs run:
// /metrics, /jobs, 404 for the rest, address parsing and a clean stop.
#include <connpool/monitor/http.hpp>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <stdexcept>
#include <string>

#include "monitor_fixtures.hpp"

using namespace std::chrono_literals;
using connpool::monitor::HttpEndpoint;
using connpool::monitor::parse_host_port;

namespace {

class HttpTest : public ::testing::Test {
protected:
    connpool::testing::MonitoredRun run;
};

TEST_F(HttpTest, serves_metrics_and_jobs_during_a_run_and_404_otherwise) {
    HttpEndpoint endpoint({"127.0.0.1", 0}, run.hub);
    ASSERT_GT(endpoint.port(), 0);
    run.start(/*pools=*/2, /*jobs=*/8, /*step=*/20ms);
    httplib::Client client("127.0.0.1", endpoint.port());
    client.set_read_timeout(10, 0);

    bool saw_running = false;
    for (int i = 0; i < 200 && !saw_running; ++i) {
        const auto jobs = client.Get("/jobs");
        ASSERT_TRUE(jobs) << httplib::to_string(jobs.error());
        ASSERT_EQ(jobs->status, 200);
        EXPECT_EQ(jobs->get_header_value("Content-Type"), "application/json");
        const auto array = nlohmann::json::parse(jobs->body);
        ASSERT_TRUE(array.is_array());
        for (const auto& j : array) saw_running = saw_running || j["state"] == "running";
        if (!saw_running) std::this_thread::sleep_for(5ms);
    }
    EXPECT_TRUE(saw_running) << "scraped while jobs ran";
    const auto during = client.Get("/metrics");
    ASSERT_TRUE(during);
    EXPECT_EQ(during->status, 200);
    EXPECT_EQ(during->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_NE(during->body.find("connpool_jobs{state=\"running\"} "), std::string::npos);
    EXPECT_NE(during->body.find("connpool_pool_acquires_total{pool=\"pool-1\"} "), std::string::npos);

    for (const char* path : {"/", "/metrics/x", "/favicon.ico"}) {
        const auto other = client.Get(path);
        ASSERT_TRUE(other);
        EXPECT_EQ(other->status, 404) << path;
    }
    run.wait();
    const auto after = client.Get("/jobs");
    ASSERT_TRUE(after);
    const auto array = nlohmann::json::parse(after->body);
    EXPECT_EQ(array.size(), 16u);
    for (const auto& j : array) EXPECT_NE(j["state"], "running");
    EXPECT_EQ(after->body.find("hunter2"), std::string::npos);

    endpoint.stop();
    endpoint.stop(); // idempotent
    httplib::Client late("127.0.0.1", endpoint.port());
    late.set_connection_timeout(1, 0);
    EXPECT_FALSE(late.Get("/metrics")) << "nothing listens after stop()";
}

TEST(HttpSets, serves_the_sets_of_a_hub_at_sets_and_their_series_at_metrics) {
    connpool::monitor::Hub hub;
    auto set = hub.track_set("backup of shop", connpool::JobKind::backup);
    set.update({.done = 300, .total = 1200, .jobs_done = 1, .jobs = 3});
    HttpEndpoint endpoint({"127.0.0.1", 0}, hub);
    httplib::Client client("127.0.0.1", endpoint.port());
    client.set_read_timeout(10, 0);
    const auto sets = client.Get("/sets");
    ASSERT_TRUE(sets) << httplib::to_string(sets.error());
    EXPECT_EQ(sets->status, 200);
    EXPECT_EQ(sets->get_header_value("Content-Type"), "application/json");
    const auto array = nlohmann::json::parse(sets->body);
    ASSERT_EQ(array.size(), 1u) << sets->body;
    EXPECT_EQ(array[0]["set"], "backup of shop");
    EXPECT_EQ(array[0]["state"], "running");
    EXPECT_EQ(array[0]["done"], 300);
    EXPECT_EQ(array[0]["total"], 1200);
    EXPECT_EQ(array[0]["jobs_done"], 1);
    EXPECT_EQ(array[0]["jobs"], 3);
    const auto metrics = client.Get("/metrics");
    ASSERT_TRUE(metrics);
    EXPECT_NE(metrics->body.find("connpool_set_progress_ratio{name=\"backup of shop\",kind=\"backup\"} 0.25\n"),
              std::string::npos)
        << metrics->body;
    set.end({.done = 1200, .total = 1200, .jobs_done = 3, .jobs = 3}, connpool::JobState::succeeded);
    const auto after = nlohmann::json::parse(client.Get("/sets")->body);
    EXPECT_EQ(after[0]["state"], "succeeded");
}

TEST_F(HttpTest, stops_at_once_even_right_after_it_started) {
    for (int i = 0; i < 20; ++i) {
        HttpEndpoint endpoint({"127.0.0.1", 0}, run.hub);
        endpoint.stop();
    }
}

TEST(HttpAddress, host_port_is_parsed_strictly) {
    EXPECT_EQ(parse_host_port("127.0.0.1:9464").host, "127.0.0.1");
    EXPECT_EQ(parse_host_port("127.0.0.1:9464").port, 9464);
    EXPECT_EQ(parse_host_port("[::1]:0").host, "::1");
    EXPECT_EQ(parse_host_port("localhost:80").port, 80);
    for (const char* bad : {"9464", ":9464", "host:", "host:http", "host:70000", "::1:80", "[::1]80", "host:-1"})
        EXPECT_THROW(parse_host_port(bad), std::invalid_argument) << bad;
}

TEST(HttpAddress, a_port_in_use_is_an_error_that_names_the_address) {
    connpool::monitor::Hub hub;
    HttpEndpoint first({"127.0.0.1", 0}, hub);
    try {
        HttpEndpoint second({"127.0.0.1", first.port()}, hub);
        FAIL() << "bound a port in use";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(first.port())), std::string::npos) << e.what();
    }
}

} // namespace
