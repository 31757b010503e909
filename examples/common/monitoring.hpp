#pragma once

// What both examples do the same way: the monitoring flags (--json-lines, --metrics-file,
// --serve, --linger) on CLI11, and the sinks they ask for, started and stopped in order.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <charconv>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include <stdio.h> // fileno

#include <CLI/CLI.hpp>

#include <connpool/monitor/http.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>
#include <connpool/monitor/terminal.hpp>

namespace examples {

/// The monitoring flags' values.
struct MonitoringFlags {
    std::string json_lines;   ///< --json-lines: a path, "-" for stdout, empty for none
    std::string metrics_file; ///< --metrics-file: node_exporter textfile, empty for none
    std::optional<connpool::monitor::HostPort> serve; ///< --serve HOST:PORT
    int linger_s = 0;         ///< --linger: keep serving this long after the jobs end
};

/// A CLI11 check: a whole number from `min` to `max` (or -1, when allowed).
inline CLI::Validator whole_number(int min, int max, bool allow_minus_one = false) {
    const std::string expected = "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max) +
                                 (allow_minus_one ? ", or -1" : "");
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            int value = 0;
            const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
            const bool whole = ec == std::errc{} && end == text.data() + text.size();
            if (whole && ((value >= min && value <= max) || (allow_minus_one && value == -1))) return {};
            return "invalid value '" + text + "': " + expected;
        },
        std::to_string(min) + "-" + std::to_string(max) + (allow_minus_one ? " or -1" : ""));
}

/// The terminal view's options for `out`: live redraws on a terminal (its width, its height
/// less three lines for the program's own), plain lines elsewhere, colour unless NO_COLOR.
inline connpool::monitor::TerminalOptions terminal_options(std::FILE* out, bool live) {
    const auto size = connpool::monitor::terminal_size(::fileno(out));
    return {.live = live,
            .width = size ? size->first : 80,
            .height = size ? std::max<std::size_t>(size->second, 4) - 3 : 0,
            .color = connpool::monitor::color_allowed()};
}

/// Adds the four flags to `app`; `serve_text` receives --serve's text (see finish_monitoring_flags).
inline void add_monitoring_flags(CLI::App& app, MonitoringFlags& f, std::string& serve_text) {
    app.add_option("--json-lines", f.json_lines, "write job and pool events as JSON lines to PATH ('-' = stdout)")
        ->type_name("PATH|-");
    app.add_option("--metrics-file", f.metrics_file, "keep Prometheus metrics in PATH for node_exporter's textfile collector")
        ->type_name("PATH");
    auto* serve = app.add_option("--serve", serve_text, "serve GET /metrics and GET /jobs over HTTP at HOST:PORT")
                      ->type_name("HOST:PORT")
                      ->check(CLI::Validator(
                          [](std::string& t) {
                              try {
                                  (void)connpool::monitor::parse_host_port(t);
                                  return std::string();
                              } catch (const std::invalid_argument& e) {
                                  return std::string(e.what());
                              }
                          },
                          "")); // unnamed: CLI11 would append the name to the type name (HOST:PORT:HOST:PORT)
    app.add_option("--linger", f.linger_s, "with --serve: keep serving SECONDS after the jobs end")
        ->type_name("SECONDS")
        ->check(whole_number(0, 86'400))
        ->needs(serve);
}

/// After parsing: fills `serve`; returns why the flags are wrong ("" when they are fine).
inline std::string finish_monitoring_flags(const CLI::App& app, MonitoringFlags& f, const std::string& serve_text) {
    if (!serve_text.empty()) f.serve = connpool::monitor::parse_host_port(serve_text);
    if (f.json_lines.empty() && app.count("--json-lines") > 0) return "--json-lines: expected a path or '-'";
    return "";
}

/// Adds the JSON-lines sink --json-lines asks for (stdout for "-") to `hub`; `file` keeps the file open.
inline void add_json_lines(connpool::monitor::Hub& hub, const MonitoringFlags& f, std::ofstream& file) {
    if (f.json_lines.empty()) return;
    std::ostream* out = &std::cout;
    if (f.json_lines != "-") {
        file.open(f.json_lines, std::ios::out | std::ios::trunc);
        if (!file) throw std::runtime_error("cannot write --json-lines file '" + f.json_lines + "'");
        out = &file;
    }
    hub.add(std::make_shared<connpool::monitor::JsonLinesSink>(*out));
}

/// The sinks with threads of their own: the Prometheus textfile and the HTTP endpoint. Make it
/// after the runners, so it stops before they go.
class ServingSinks {
public:
    /// Starts what `f` asks for; `program` prefixes the textfile writer's errors on stderr.
    ServingSinks(const connpool::monitor::Hub& hub, const MonitoringFlags& f, std::FILE* human, const char* program)
        : linger_s_(f.linger_s) {
        if (!f.metrics_file.empty())
            metrics_file_.emplace(
                f.metrics_file, [&hub] { return connpool::monitor::render_prometheus(hub.metrics()); }, std::chrono::seconds(1),
                [program](const std::exception& e) { std::fprintf(stderr, "%s: %s\n", program, e.what()); });
        if (f.serve) {
            endpoint_.emplace(*f.serve, hub);
            std::fprintf(human, "serving http://%s:%d/metrics and /jobs\n", f.serve->host.c_str(), endpoint_->port());
        }
    }

    /// Keeps serving --linger seconds (unless `interrupted`), then stops both; the textfile's
    /// last version has every job's end.
    void linger_then_stop(std::FILE* human, const std::atomic<bool>& interrupted) {
        if (endpoint_ && linger_s_ > 0 && !interrupted.load()) {
            std::fprintf(human, "serving for %d s more (--linger; Ctrl-C stops)\n", linger_s_);
            std::fflush(human);
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(linger_s_);
            while (std::chrono::steady_clock::now() < until && !interrupted.load())
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (endpoint_) endpoint_->stop();
        if (metrics_file_) metrics_file_->stop();
    }

private:
    int linger_s_;
    std::optional<connpool::monitor::TextfileWriter> metrics_file_;
    std::optional<connpool::monitor::HttpEndpoint> endpoint_;
};

/// Prints a command-line mistake the way both examples do and returns their exit status for it, 2.
inline int usage_error(const char* program, const std::string& message) {
    std::fprintf(stderr, "%s: %s\nTry '%s --help'.\n", program, message.c_str(), program);
    return 2;
}

/// Parses the command line into `app`'s options. Returns the exit status when the program ends
/// here: 0 after --help (printed), 2 after a mistake (said through usage_error, first passed
/// through `scrub`, e.g. to mask a password CLI11 quotes); nothing when it goes on.
template <class Scrub>
std::optional<int> parse_or_exit(CLI::App& app, int argc, char** argv, const char* program, Scrub scrub) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        std::fputs(app.help().c_str(), stdout);
        return 0;
    } catch (const CLI::ParseError& e) {
        return usage_error(program, scrub(std::string(e.what())));
    }
    return std::nullopt;
}

/// The end of both examples' runs: keeps serving --linger seconds, stops the sinks, prints the
/// verdict and returns the exit status (130 when interrupted, else 0 or 1).
inline int end_run(ServingSinks& serving, std::FILE* human, const std::atomic<bool>& interrupted, bool ok,
                   std::chrono::steady_clock::time_point started) {
    serving.linger_then_stop(human, interrupted); // --linger
    std::fprintf(human, "done in %.1f s: %s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                 interrupted.load() ? "interrupted" : ok ? "all succeeded" : "FAILED");
    if (interrupted.load()) return 130;
    return ok ? 0 : 1;
}

} // namespace examples
