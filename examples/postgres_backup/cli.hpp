#pragma once

// postgres_backup's command line, on CLI11 (as backup_demo's). A bad command line exits with
// status 2 and a one-line reason; nothing here ever prints a conninfo (it may hold a password).

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

#include <CLI/CLI.hpp>

#include <connpool/monitor/http.hpp>   // parse_host_port
#include <connpool/monitor/redact.hpp> // redact: no password in a message

namespace pgdemo {

/// What the command line asked for.
struct Settings {
    std::string conninfo;              ///< the database to back up (may hold a password: never print it)
    std::filesystem::path out = "pg-backup"; ///< the backup set's directory (new or empty)
    int jobs = 2;                      ///< tables copied at once; the pool has jobs + 1 connections
    std::string restore_into;          ///< with --restore-into: an empty database to restore the set into
    bool compress = true;              ///< zstd (level 1) or none
    std::string json_lines;            ///< --json-lines: a path, "-" for stdout, empty for none
    std::string metrics_file;          ///< --metrics-file: node_exporter textfile, empty for none
    std::optional<connpool::monitor::HostPort> serve; ///< --serve HOST:PORT
    int linger_s = 0;                  ///< --linger: keep serving this long after the jobs end
};

inline constexpr std::string_view description =
    R"(Backs up every table of a PostgreSQL database at once through a connection pool: one
consistent snapshot, the schema from pg_dump, one file per table, a manifest written last.
With --restore-into it then restores the set into another (empty) database.)";

inline constexpr std::string_view footer =
    R"(CONNINFO is a libpq connection string or URI, e.g. "host=127.0.0.1 port=5432 dbname=shop
user=me" (a password may be in it, or in PGPASSWORD or ~/.pgpass; it is never printed).
Exit status: 0 if everything succeeded; 1 if anything failed; 2 for a bad option; 130 when
interrupted (Ctrl-C cancels the jobs; no half-written file is left under its final name).)";

/// A CLI11 check: a whole number from `min` to `max`.
inline CLI::Validator whole_number(int min, int max) {
    return CLI::Validator(
        [=](std::string& text) -> std::string {
            int value = 0;
            const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
            if (ec == std::errc{} && end == text.data() + text.size() && value >= min && value <= max) return {};
            return "invalid value '" + text + "': expected a whole number from " + std::to_string(min) + " to " +
                   std::to_string(max);
        },
        std::to_string(min) + "-" + std::to_string(max));
}

/// Parses the command line. Returns the settings, or the exit status when the program should
/// stop now (0 after --help, 2 after a bad command line, with the reason on stderr).
inline std::variant<Settings, int> parse_command_line(int argc, char** argv) {
    Settings s;
    CLI::App app{std::string(description), "postgres_backup"};
    app.footer(std::string(footer));
    app.add_option("conninfo", s.conninfo, "the database to back up")->type_name("CONNINFO")->required();
    app.add_option("--out", s.out, "the backup set's directory; it must not exist or be empty")
        ->type_name("DIR")
        ->capture_default_str();
    app.add_option("--jobs,-j", s.jobs, "tables copied at once (the pool holds JOBS + 1 connections)")
        ->check(whole_number(1, 64))
        ->capture_default_str();
    app.add_option("--restore-into", s.restore_into, "then restore the set into this empty database")
        ->type_name("CONNINFO");
    std::string compression = "zstd";
    app.add_option("--compression", compression, "compression of the table files")
        ->check(CLI::IsMember({"zstd", "none"}))
        ->capture_default_str();
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
        // CLI11 may quote an argument, and a stray conninfo holds a password: mask it.
        std::fprintf(stderr, "postgres_backup: %s\nTry 'postgres_backup --help'.\n",
                     connpool::monitor::redact(e.what()).c_str());
        return 2;
    }
    s.compress = compression == "zstd";
    if (!serve.empty()) s.serve = connpool::monitor::parse_host_port(serve);
    if (s.json_lines.empty() && app.count("--json-lines") > 0) {
        std::fprintf(stderr, "postgres_backup: --json-lines: expected a path or '-'\nTry 'postgres_backup --help'.\n");
        return 2;
    }
    return s;
}

} // namespace pgdemo
