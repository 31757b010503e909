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

#include "../common/monitoring.hpp"

namespace demo {

/// What the command line asked for.
struct Settings : examples::MonitoringFlags { // --json-lines, --metrics-file, --serve, --linger
    int databases = 6;
    int size_mb = 8;
    int pool_size = 3;
    std::filesystem::path out = "connpool-demo";
    int pages_per_step = 32;
    int pause_ms = 40;
};

inline constexpr std::string_view description =
    R"(Creates a few demo SQLite databases (once), keeps writing to them while it backs them all up
at once through a connection pool smaller than the number of databases (so jobs queue), shows
each job's progress, then restores one backup into a fresh database and verifies it.)";

inline constexpr std::string_view footer =
    R"(The databases are reused by later runs with the same --size-mb. Exit status: 0 if every
backup, the restore and its verification succeeded; 1 if anything failed; 2 for a bad option;
130 when interrupted (Ctrl-C cancels the jobs; their files are left out, never half-written).)";

using examples::whole_number;

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
    std::string serve;
    examples::add_monitoring_flags(app, s, serve);
    if (const auto end = examples::parse_or_exit(app, argc, argv, "backup_demo", [](std::string m) { return m; }))
        return *end;
    if (const std::string error = examples::finish_monitoring_flags(app, s, serve); !error.empty()) {
        return examples::usage_error("backup_demo", error);
    }
    return s;
}

} // namespace demo
