#pragma once

// The demo's command line, on CLI11. Values are checked strictly (whole numbers in range, as
// before the switch to CLI11), and a bad command line exits with status 2 and a one-line reason.

#include <charconv> // std::from_chars: strict parsing of flag values
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <stdexcept>
#include <string_view>
#include <variant>

#include <CLI/CLI.hpp>

#include <connpool/monitor/http.hpp> // parse_host_port

namespace demo {

/// What the command line asked for.
struct Settings {
    int databases = 6;
    int size_mb = 8;
    int pool_size = 3;
    std::filesystem::path out = "connpool-demo";
    int pages_per_step = 32;
    int pause_ms = 40;
    std::string json_lines;   ///< --json-lines: a path, "-" for stdout, empty for none
    std::string metrics_file; ///< --metrics-file: node_exporter textfile, empty for none
    std::optional<connpool::monitor::HostPort> serve; ///< --serve HOST:PORT
    int linger_s = 0;         ///< --linger: keep serving this long after the jobs end
};

inline constexpr std::string_view description =
    R"(Creates a few demo SQLite databases (once), keeps writing to them while it backs them all up
at once through a connection pool smaller than the number of databases (so jobs queue), shows
each job's progress, then restores one backup into a fresh database and verifies it.)";

inline constexpr std::string_view footer =
    R"(The databases are reused by later runs with the same --size-mb. Exit status: 0 if every
backup, the restore and its verification succeeded; 1 if anything failed; 2 for a bad option;
130 when interrupted (Ctrl-C cancels the jobs; their files are left out, never half-written).)";

/// A CLI11 check: a whole number from `min` to `max` (or -1, when allowed), with today's message.
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

/// Parses the command line. Returns the settings, or the exit status when the program should
/// stop now (0 after --help, 2 after a bad command line, with the reason on stderr).
inline std::variant<Settings, int> parse_command_line(int argc, char** argv) {
    Settings s;
    CLI::App app{std::string(description), "backup_demo"};
    app.footer(std::string(footer));
    app.option_defaults()->always_capture_default();
    app.add_option("--databases", s.databases, "demo databases to create and back up")->check(whole_number(1, 64));
    app.add_option("--size-mb", s.size_mb, "size of each demo database in MB")->check(whole_number(1, 1024));
    app.add_option("--pool-size", s.pool_size, "connections in the backup pool; below --databases, jobs queue")
        ->check(whole_number(1, 64));
    app.add_option("--out", s.out, "work folder: databases, backups/, restored.db")
        ->check(CLI::Validator([](std::string& t) { return t.empty() ? std::string("expected a folder") : std::string(); }, "DIR"));
    app.add_option("--pages-per-step", s.pages_per_step, "pages a backup or restore step copies; -1 = all")
        ->check(whole_number(1, 1'000'000, /*allow_minus_one=*/true));
    app.add_option("--pause-ms", s.pause_ms, "pause between steps, so there is something to watch; 0 = full speed")
        ->check(whole_number(0, 10'000));
    app.add_option("--json-lines", s.json_lines, "write job and pool events as JSON lines to PATH ('-' = stdout)")
        ->type_name("PATH|-");
    app.add_option("--metrics-file", s.metrics_file, "keep Prometheus metrics in PATH for node_exporter's textfile collector")
        ->type_name("PATH");
    std::string serve;
    auto* serve_option = app.add_option("--serve", serve, "serve GET /metrics and GET /jobs over HTTP at HOST:PORT")
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
                                 "HOST:PORT"));
    app.add_option("--linger", s.linger_s, "with --serve: keep serving SECONDS after the jobs end")
        ->type_name("SECONDS")
        ->check(whole_number(0, 86'400))
        ->needs(serve_option);
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        std::fputs(app.help().c_str(), stdout);
        return 0;
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "backup_demo: %s\nTry 'backup_demo --help'.\n", e.what());
        return 2;
    }
    if (!serve.empty()) s.serve = connpool::monitor::parse_host_port(serve);
    if (s.json_lines.empty() && app.count("--json-lines") > 0) {
        std::fprintf(stderr, "backup_demo: --json-lines: expected a path or '-'\nTry 'backup_demo --help'.\n");
        return 2;
    }
    return s;
}

} // namespace demo
