// Back up a whole PostgreSQL database through a connection pool, every table at once, watched
// live; optionally restore the set into another database.
//
//   examples/postgres_backup/try.sh          # a throwaway server with sample data, backup, restore, compare
//   build/default/examples/postgres_backup "host=db.example dbname=shop user=me" --out shop-backup --jobs 4
//   build/default/examples/postgres_backup "$SRC" --restore-into "$EMPTY_DB" --json-lines - --serve 127.0.0.1:9464
//
// It reads top to bottom as the steps of any program that backs up PostgreSQL with connpool:
//   1. a pool of N+1 connections   (the backup's leader holds one for the snapshot; N copy tables)
//   2. a runner over the pool      (one job per table; at most N run at once, the rest queue)
//   3. monitoring on one hub       (terminal view, JSON lines, Prometheus file and endpoint; each
//                                   table a job, the whole backup or restore a set)
//   4. backup_database             (consistent snapshot, pg_dump's schema, a file per table, manifest)
//   5. restore_database            (with --restore-into: the manifest checked first, tables in parallel)

#include <connpool.hpp>
#include <connpool/monitor/http.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>
#include <connpool/monitor/terminal.hpp>
#include <connpool/postgres.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "../common/database_set.hpp"
#include "cli.hpp"

namespace {

namespace pg = connpool::postgres;
namespace monitor = connpool::monitor;
using namespace std::chrono_literals;
using Pool = connpool::Pool<pg::Connection, pg::Factory>;
using Runner = connpool::JobRunner<Pool>;

std::atomic<bool> interrupted{false};

extern "C" void on_interrupt(int signal_number) {
    interrupted.store(true);
    std::signal(signal_number, SIG_DFL); // a second Ctrl-C kills at once
}

/// ---- 1. a pool of N+1 connections to one database ----
std::unique_ptr<Pool> make_pool(const monitor::Hub& hub, const std::string& conninfo, int jobs, const char* name) {
    pg::FactoryOptions factory{.application_name = "connpool postgres_backup"}; // shown in pg_stat_activity
    auto options = hub.instrument({.max_size = static_cast<std::size_t>(jobs) + 1,
                                   .acquire_timeout = 15s, // a server that is down fails in 15 s, saying why
                                   .name = name});
    return std::make_unique<Pool>(pg::Factory{conninfo, factory}, std::move(options));
}

int run(const pgdemo::Settings& settings) {
    const auto started = std::chrono::steady_clock::now();
    // With --json-lines -, stdout carries only JSON; everything for people goes to stderr.
    std::FILE* human = settings.json_lines == "-" ? stderr : stdout;
    const bool live = monitor::is_live_terminal(::fileno(human));

    // ---- 3a. the monitoring hub: the pools and every table job report to it ----
    monitor::Hub hub;
    std::ofstream json_file;
    examples::add_json_lines(hub, settings, json_file); // --json-lines

    // ---- 1. the pools, 2. the runners (the restore's only with --restore-into) ----
    auto source = make_pool(hub, settings.conninfo, settings.jobs, "backup");
    const auto watch_source = hub.watch(*source);
    Runner backup_runner{*source};
    const auto watch_backups = hub.watch(backup_runner);
    std::unique_ptr<Pool> target;
    std::optional<Runner> restore_runner;
    monitor::Watch watch_target, watch_restores;
    if (!settings.restore_into.empty()) {
        target = make_pool(hub, settings.restore_into, settings.jobs, "restore");
        watch_target = hub.watch(*target);
        restore_runner.emplace(*target);
        watch_restores = hub.watch(*restore_runner);
    }

    // ---- 3b. the sinks with threads of their own (after the runners, so they stop first) ----
    examples::ServingSinks serving(hub, settings, human, "postgres_backup"); // --metrics-file, --serve
    monitor::TerminalView view(human, examples::terminal_options(human, live));
    std::optional<monitor::TerminalMonitor> screen;
    const auto show_jobs = [&] {
        screen.emplace(view, [&] {
            auto jobs = backup_runner.snapshot();
            if (restore_runner)
                for (auto& p : restore_runner->snapshot()) jobs.push_back(std::move(p));
            return jobs;
        }, [&hub] { return hub.sets(); }, live ? 100ms : 250ms);
    };

    // One connection first, outside the pools: a wrong conninfo or a server that is down fails
    // now with libpq's reason (password masked), instead of after the pool's acquire_timeout.
    const std::string from = pg::Factory{settings.conninfo}.create().where(); // "database 'x' on host:port as 'user'"
    const std::string into = restore_runner ? pg::Factory{settings.restore_into}.create().where() : "";
    std::fprintf(human, "backing up %s into '%s' through a pool of %d+1 connections%s\n", from.c_str(),
                 settings.out.c_str(), settings.jobs, live ? " (Ctrl-C cancels)" : "");

    // ---- 4. the backup: returns once the table jobs are submitted (largest first) ----
    pg::DatabaseBackupOptions backup_options;
    backup_options.table.compression = settings.compress ? pg::Compression::zstd : pg::Compression::none;
    backup_options.table_progress = [&hub](const pg::Table&) { return hub.track(); }; // events to the sinks
    auto backup_started = std::chrono::steady_clock::now();
    bool ok = false;
    {
        // The whole set in every sink, named by its directory (the view cuts names at 24 columns).
        auto set = hub.track_set("backup to " + std::filesystem::path(settings.out).filename().string(), connpool::JobKind::backup);
        auto backup = pg::backup_database(backup_runner, settings.out, backup_options);
        show_jobs();
        ok = examples::wait_and_report(human, backup, set, "backup", "COPY data", backup_started, interrupted);
    }

    // ---- 5. the restore, into a database that must be empty ----
    if (ok && restore_runner && !interrupted.load()) {
        std::fprintf(human, "restoring '%s' into %s\n", settings.out.c_str(), into.c_str());
        pg::DatabaseRestoreOptions restore_options;
        restore_options.table_progress = [&hub](const pg::Table&) { return hub.track(); };
        const auto restore_started = std::chrono::steady_clock::now();
        auto set = hub.track_set("restore of " + std::filesystem::path(settings.out).filename().string(), connpool::JobKind::restore);
        const auto restored = pg::restore_database(*restore_runner, settings.out, restore_options);
        ok = examples::wait_and_report(human, restored, set, "restore", "COPY data", restore_started, interrupted);
    }
    if (screen) screen->stop(); // draws the final frame

    const auto stats = source->stats();
    std::fprintf(human, "backup pool: max_size %zu, %llu connections created, %llu leases\n", stats.max_size,
                 static_cast<unsigned long long>(stats.created), static_cast<unsigned long long>(stats.acquired));
    return examples::end_run(serving, human, interrupted, ok, started);
}

} // namespace

int main(int argc, char** argv) {
    const auto parsed = pgdemo::parse_command_line(argc, argv);
    if (const int* status = std::get_if<int>(&parsed)) return *status; // --help, or a bad option
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    try {
        return run(std::get<pgdemo::Settings>(parsed));
    } catch (const std::exception& e) {
        // The library masks passwords in its messages; redact() masks any password=... again.
        std::fflush(stdout);
        std::fprintf(stderr, "postgres_backup: %s\n", monitor::redact(e.what()).c_str());
        return 1;
    }
}
