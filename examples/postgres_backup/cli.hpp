#pragma once

// postgres_backup's command line, on CLI11 (as backup_demo's). A bad command line exits with
// status 2 and a one-line reason; nothing here ever prints a conninfo (it may hold a password).

#include <cstdio>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

#include <CLI/CLI.hpp>

#include "../common/monitoring.hpp"
#include <connpool/monitor/redact.hpp> // redact: no password in a message

namespace pgdemo {

/// What the command line asked for.
struct Settings : examples::MonitoringFlags { // --json-lines, --metrics-file, --serve, --linger
    std::string conninfo;              ///< the database to back up (may hold a password: never print it)
    std::filesystem::path out = "pg-backup"; ///< the backup set's directory (new or empty)
    int jobs = 2;                      ///< tables copied at once; the pool has jobs + 1 connections
    std::string restore_into;          ///< with --restore-into: an empty database to restore the set into
    bool compress = true;              ///< zstd (level 1) or none
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

using examples::whole_number;

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
    std::string serve;
    examples::add_monitoring_flags(app, s, serve);
    // CLI11 may quote an argument, and a stray conninfo holds a password: mask it.
    if (const auto end = examples::parse_or_exit(app, argc, argv, "postgres_backup",
                                                 [](const std::string& m) { return connpool::monitor::redact(m); }))
        return *end;
    s.compress = compression == "zstd";
    if (const std::string error = examples::finish_monitoring_flags(app, s, serve); !error.empty()) {
        return examples::usage_error("postgres_backup", error);
    }
    return s;
}

} // namespace pgdemo
