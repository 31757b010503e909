// The monitor components as a consumer uses them (shared by the find_package and FetchContent
// consumers): a Hub over a named pool and a runner, JSON lines, Prometheus text, and, when
// CONSUMER_MONITOR_HTTP is defined, the HTTP endpoint scraped over loopback. A second
// translation unit beside main.cpp, so the header-only sinks also link twice without clashes.
#include <connpool.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>
#include <connpool/monitor/terminal.hpp>
#ifdef CONSUMER_MONITOR_HTTP
#include <connpool/monitor/http.hpp>
#include <httplib.h>
#endif

#include <cstdio>
#include <memory>
#include <sstream>
#include <string>

namespace {

struct Conn {};
struct Factory {
  Conn create() { return {}; }
};

bool says(const std::string& text, const char* what) {
  if (text.find(what) != std::string::npos) return true;
  std::fprintf(stderr, "missing '%s' in:\n%s\n", what, text.c_str());
  return false;
}

} // namespace

int run_monitor() {
  connpool::monitor::Hub hub;
  std::ostringstream lines;
  hub.add(std::make_shared<connpool::monitor::JsonLinesSink>(lines));
  connpool::Pool pool{Factory{}, hub.instrument(connpool::PoolOptions{.max_size = 2, .name = "consumer"})};
  const auto pool_watch = hub.watch(pool);
  connpool::JobRunner runner{pool};
  const auto runner_watch = hub.watch(runner);
  const auto end = runner.submit({"consumer.db", connpool::JobKind::backup,
                                  [](Conn&, connpool::ProgressReporter& r) {
                                    r.set_total(10, "pages");
                                    r.advance(10);
                                  }},
                                 hub.track())
                       .wait();
  const std::string metrics = connpool::monitor::render_prometheus(hub.metrics());
  bool ok = end == connpool::JobState::succeeded &&
            says(metrics, "connpool_pool_acquires_total{pool=\"consumer\"} 1\n") &&
            says(metrics, "connpool_jobs{state=\"succeeded\"} 1\n") && says(lines.str(), "\"event\":\"job.ended\"");
#ifdef CONSUMER_MONITOR_HTTP
  connpool::monitor::HttpEndpoint endpoint(
      connpool::monitor::parse_host_port("127.0.0.1:0"),
      [&hub] { return connpool::monitor::render_prometheus(hub.metrics()); },
      [&hub] { return connpool::monitor::jobs_json(hub.jobs()); });
  httplib::Client client("127.0.0.1", endpoint.port());
  const auto scraped = client.Get("/jobs");
  ok = ok && scraped && scraped->status == 200 && says(scraped->body, "\"job\":\"consumer.db\"");
#endif
  return ok ? 0 : 1;
}
