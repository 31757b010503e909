// Back up a whole MySQL or MariaDB database through a connection pool, every table at once,
// watched live; optionally restore the set into another database on the same server.
//
//   examples/mysql_backup/try.sh          # a throwaway server with sample data, backup, restore, compare
//   MYSQL_PWD=... build/default/examples/mysql_backup --host db.example --user backup shop --out shop-backup --jobs 4
//   build/default/examples/mysql_backup --socket /run/mysqld/mysqld.sock shop --restore-into shop_copy --json-lines -
//
// It reads top to bottom as the steps of any program that backs up MySQL with connpool:
//   1. a pool of N+1 connections   (the backup's leader holds one for FLUSH TABLES WITH READ
//                                   LOCK; N sessions start their snapshots together and copy tables)
//   2. a runner over the pool      (one job per table; at most N run at once, the rest queue)
//   3. monitoring on one hub       (terminal view, JSON lines, Prometheus file and endpoint; each
//                                   table a job, the whole backup or restore a set)
//   4. backup_database             (consistent snapshot, the schema with views, triggers and
//                                   routines, a file per table, manifest)
//   5. restore_database            (with --restore-into: the manifest checked first, tables in
//                                   parallel, then routines, views and triggers)

#include <connpool.hpp>
#include <connpool/monitor/http.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>
#include <connpool/monitor/terminal.hpp>
#include <connpool/mysql.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "../common/database_set.hpp"
#include "cli.hpp"

namespace {

namespace my = connpool::mysql;
namespace monitor = connpool::monitor;
using namespace std::chrono_literals;
using Pool = connpool::Pool<my::Connection, my::Factory>;
using Runner = connpool::JobRunner<Pool>;

std::atomic<bool> interrupted{false};

extern "C" void on_interrupt(int signal_number) {
    interrupted.store(true);
    std::signal(signal_number, SIG_DFL); // a second Ctrl-C kills at once
}

/// `connect` with another default database.
my::ConnectOptions with_database(my::ConnectOptions connect, const std::string& database) {
    connect.database = database;
    return connect;
}

/// ---- 1. a pool of N+1 connections to one database ----
std::unique_ptr<Pool> make_pool(const monitor::Hub& hub, const my::ConnectOptions& connect, int jobs, const char* name) {
    auto options = hub.instrument({.max_size = static_cast<std::size_t>(jobs) + 1,
                                   .acquire_timeout = 15s, // a server that is down fails in 15 s, saying why
                                   .name = name});
    // FactoryOptions' defaults: utf8mb4, LOAD DATA LOCAL through the restore's own handler, no read timeout.
    return std::make_unique<Pool>(my::Factory{connect}, std::move(options));
}

int run(const mydemo::Settings& settings) {
    const auto started = std::chrono::steady_clock::now();
    // With --json-lines -, stdout carries only JSON; everything for people goes to stderr.
    std::FILE* human = settings.json_lines == "-" ? stderr : stdout;
    const bool live = monitor::is_live_terminal(::fileno(human));
    const my::ConnectOptions source_at = settings.connect;
    const my::ConnectOptions target_at = with_database(settings.connect, settings.restore_into);

    // One connection first, outside the pools: a wrong password or a server that is down fails
    // now with the server's reason (password masked), instead of after the pool's acquire_timeout.
    const std::string from = my::Factory{source_at}.create().where(); // "database 'x' on host:port as 'user'"
    const std::string into = settings.restore_into.empty() ? "" : my::Factory{target_at}.create().where();

    // ---- 3a. the monitoring hub: the pools and every table job report to it ----
    monitor::Hub hub;
    std::ofstream json_file;
    examples::add_json_lines(hub, settings, json_file); // --json-lines

    // ---- 1. the pools, 2. the runners (the restore's only with --restore-into) ----
    auto source = make_pool(hub, source_at, settings.jobs, "backup");
    const auto watch_source = hub.watch(*source);
    Runner backup_runner{*source};
    const auto watch_backups = hub.watch(backup_runner);
    std::unique_ptr<Pool> target;
    std::optional<Runner> restore_runner;
    monitor::Watch watch_target, watch_restores;
    if (!settings.restore_into.empty()) {
        target = make_pool(hub, target_at, settings.jobs, "restore");
        watch_target = hub.watch(*target);
        restore_runner.emplace(*target);
        watch_restores = hub.watch(*restore_runner);
    }

    // ---- 3b. the sinks with threads of their own (after the runners, so they stop first) ----
    examples::ServingSinks serving(hub, settings, human, "mysql_backup"); // --metrics-file, --serve
    monitor::TerminalView view(human, examples::terminal_options(human, live));
    std::optional<monitor::TerminalMonitor> screen;
    // The backup's table jobs run on its own runner over the snapshot sessions, not on
    // backup_runner: the view lists them from the operation's handles.
    std::vector<connpool::JobHandle> shown;
    std::mutex shown_mu;
    const auto show = [&](const my::DatabaseOperation& op) {
        {
            std::lock_guard lock(shown_mu);
            for (const auto& h : op.tables()) shown.push_back(h);
        }
        if (screen) return;
        screen.emplace(view, [&] {
            std::vector<connpool::Progress> jobs;
            std::lock_guard lock(shown_mu);
            for (const auto& h : shown) jobs.push_back(h.progress());
            return jobs;
        }, [&hub] { return hub.sets(); }, live ? 100ms : 250ms);
    };
    std::fprintf(human, "backing up %s into '%s' through a pool of %d+1 connections%s\n", from.c_str(),
                 settings.out.c_str(), settings.jobs, live ? " (Ctrl-C cancels)" : "");

    // ---- 4. the backup: returns once the table jobs are submitted (largest first) ----
    my::DatabaseBackupOptions backup_options;
    backup_options.table.compression = settings.compress ? my::Compression::zstd : my::Compression::none;
    backup_options.table_progress = [&hub](const my::Table&) { return hub.track(); }; // events to the sinks
    const auto backup_started = std::chrono::steady_clock::now();
    bool ok = false;
    {
        // The whole set in every sink, named by its directory (the view cuts names at 24 columns).
        auto set = hub.track_set("backup to " + std::filesystem::path(settings.out).filename().string(), connpool::JobKind::backup);
        auto backup = my::backup_database(backup_runner, settings.out, backup_options);
        show(backup);
        ok = examples::wait_and_report(human, backup, set, "backup", "row data", backup_started, interrupted);
    }

    // ---- 5. the restore, into a database that must be empty ----
    if (ok && restore_runner && !interrupted.load()) {
        std::fprintf(human, "restoring '%s' into %s\n", settings.out.c_str(), into.c_str());
        my::DatabaseRestoreOptions restore_options;
        restore_options.table_progress = [&hub](const my::Table&) { return hub.track(); };
        if (settings.definers_mine) restore_options.definers = my::Definers::current_user;
        const auto restore_started = std::chrono::steady_clock::now();
        auto set = hub.track_set("restore of " + std::filesystem::path(settings.out).filename().string(), connpool::JobKind::restore);
        const auto restored = my::restore_database(*restore_runner, settings.out, restore_options);
        show(restored);
        ok = examples::wait_and_report(human, restored, set, "restore", "row data", restore_started, interrupted);
    }
    if (screen) screen->stop(); // draws the final frame

    const auto stats = source->stats();
    std::fprintf(human, "backup pool: max_size %zu, %llu connections created, %llu leases\n", stats.max_size,
                 static_cast<unsigned long long>(stats.created), static_cast<unsigned long long>(stats.acquired));
    return examples::end_run(serving, human, interrupted, ok, started);
}

} // namespace

int main(int argc, char** argv) {
    const auto parsed = mydemo::parse_command_line(argc, argv);
    if (const int* status = std::get_if<int>(&parsed)) return *status; // --help, or a bad option
    const auto& settings = std::get<mydemo::Settings>(parsed);
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    try {
        return run(settings);
    } catch (const std::exception& e) {
        // The library masks the password in its messages; mask it here once more, and anything
        // that looks like one.
        std::fflush(stdout);
        std::fprintf(stderr, "mysql_backup: %s\n",
                     mydemo::mask(monitor::redact(e.what()), settings.connect.password).c_str());
        return 1;
    }
}
