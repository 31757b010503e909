// The main example: online backups of several live SQLite databases at once, through one pool
// smaller than the number of databases, watched live; then one backup is restored into a fresh
// database and checked against the backup.
//
//   build/default/examples/backup_demo                      # 6 databases x 8 MB, pool of 3
//   build/default/examples/backup_demo --serve 127.0.0.1:9464 --json-lines events.jsonl
//   build/default/examples/backup_demo --help
//
// It reads top to bottom as the steps of any program that uses connpool for backups:
//   1. a pool                       (here: workers that can open any demo database)
//   2. a runner over the pool       (at most --pool-size backups at once, the rest queue)
//   3. monitoring sinks on one hub  (terminal view, JSON lines, Prometheus file and endpoint)
//   4. submit the jobs              (sqlite::backup_to, with the hub's progress callback)
//   5. wait, then report            (restore one backup, verify it, print a summary)
//
// The helpers beside this file: demo_data.hpp (the shop databases and the writers that keep
// changing them), workers.hpp (the backup pool's connections), verify.hpp, report.hpp, cli.hpp.

#include <connpool.hpp>
#include <connpool/monitor/http.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/json_lines.hpp>
#include <connpool/monitor/prometheus.hpp>
#include <connpool/monitor/terminal.hpp>
#include <connpool/sqlite.hpp>

#include <chrono>
#include <csignal> // SIGINT: Ctrl-C cancels the jobs instead of killing the process mid-file
#include <cstdio>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <unistd.h> // STDOUT_FILENO

#include "cli.hpp"
#include "demo_data.hpp"
#include "report.hpp"
#include "verify.hpp"
#include "workers.hpp"

namespace {

using namespace demo;
using namespace std::chrono_literals;
namespace monitor = connpool::monitor;

extern "C" void on_interrupt(int signal_number) {
    interrupted.store(true);
    std::signal(signal_number, SIG_DFL); // a second Ctrl-C kills at once
}

int run(const Settings& settings) {
    const auto started = std::chrono::steady_clock::now();
    // With --json-lines -, stdout carries only JSON; everything for people goes to stderr.
    std::FILE* human = settings.json_lines == "-" ? stderr : stdout;
    const bool live = monitor::is_live_terminal(::fileno(human));
    const fs::path& work = settings.out;
    fs::create_directories(work / "backups");

    std::vector<fs::path> dbs, backup_files;
    for (int i = 1; i <= settings.databases; ++i) {
        dbs.push_back(work / ("orders_" + std::to_string(i) + ".db"));
        backup_files.push_back(work / "backups" / dbs.back().filename());
    }
    prepare_databases(dbs, settings.size_mb, live, human);
    const sqlite::FactoryOptions existing{.open_flags = SQLITE_OPEN_READWRITE}; // never creates a file
    const auto page_size =
        static_cast<std::uint32_t>(sqlite::Factory{dbs.front(), existing}.create().query_int("PRAGMA page_size"));

    // ---- 3a. the monitoring hub: every pool and job below reports to it ----
    monitor::Hub hub;
    std::ofstream json_file;
    examples::add_json_lines(hub, settings, json_file); // --json-lines

    // The applications start writing first (each through its own pool); the backups then copy
    // databases in use.
    std::deque<Writer> writers; // a deque: Writers don't move (their threads point at them)
    for (std::size_t i = 0; i < dbs.size(); ++i) writers.emplace_back(dbs[i], 1000 + i, hub);

    // Declared before the runners: their jobs and callbacks use these until the runners are gone.
    Concurrency concurrency;
    std::vector<CopiedAt> copied_at(dbs.size()); // never resized: callbacks point into it

    // ---- 1. the pool, 2. the runner ----
    const auto pool_size = static_cast<std::size_t>(settings.pool_size);
    // The hub reports each pool under its PoolOptions::name, and reads the watched pools' stats
    // and the watched runners' jobs whenever it is asked (a scrape, the metrics file).
    connpool::Pool workers{WorkerFactory{}, hub.instrument({.max_size = pool_size, .name = "backup"})};
    const auto watch_workers = hub.watch(workers);
    connpool::JobRunner backup_runner{workers};
    const auto watch_backups = hub.watch(backup_runner);
    const fs::path restored = work / "restored.db";
    remove_database_files(restored);
    connpool::Pool restore_pool{sqlite::Factory{restored}, hub.instrument({.max_size = 1, .name = "restore"})};
    const auto watch_restore = hub.watch(restore_pool);
    connpool::JobRunner restore_runner{restore_pool};
    const auto watch_restores = hub.watch(restore_runner);

    // ---- 3b. the sinks that run on threads of their own (declared after the runners, so
    // they stop before the runners go) ----
    examples::ServingSinks serving(hub, settings, human, "backup_demo"); // --metrics-file, --serve

    if (settings.pool_size >= settings.databases)
        std::fprintf(human, "note: --pool-size %d >= --databases %d: no backup waits for a connection\n",
                     settings.pool_size, settings.databases);
    std::fprintf(human, "backing up %d live databases through a pool of %d%s\n\n", settings.databases, settings.pool_size,
                 live ? " (Ctrl-C cancels)" : "");

    monitor::TerminalOptions view_options = examples::terminal_options(human, live);
    view_options.page_size = page_size; // rates of pages in MiB/s
    monitor::TerminalView view(human, view_options);
    monitor::TerminalMonitor screen(
        view,
        [&] {
            auto jobs = backup_runner.snapshot();
            for (auto& p : restore_runner.snapshot()) jobs.push_back(std::move(p));
            return jobs;
        },
        live ? 100ms : 250ms); // the plain view prints at most once a second per job anyway

    // Waits for `handles`, cancelling everything on Ctrl-C.
    const auto wait_for = [&](const std::vector<connpool::JobHandle>& handles) {
        for (const auto& h : handles) {
            while (!h.wait_for(50ms)) {
                if (interrupted.load()) {
                    backup_runner.cancel_all();
                    restore_runner.cancel_all();
                }
            }
        }
    };

    // ---- 4. submit: one backup per database; each reports to the hub and to its CopiedAt ----
    const sqlite::BackupOptions backup_options{.pages_per_step = settings.pages_per_step,
                                               .pause = std::chrono::milliseconds(settings.pause_ms),
                                               .overwrite = true}; // each run replaces the last run's backups
    std::vector<connpool::JobHandle> backups;
    for (std::size_t i = 0; i < dbs.size(); ++i) {
        backups.push_back(backup_runner.submit(on_database(dbs[i], sqlite::backup_to(backup_files[i], backup_options), concurrency),
                                               hub.track(copied_at[i].callback())));
    }

    // ---- 5. wait, restore one backup into a fresh database, report ----
    wait_for(backups);
    for (auto& w : writers) w.join(); // the writing stops once every backup has been taken

    const fs::path& restore_source = backup_files.front();
    std::optional<connpool::JobHandle> restore;
    if (!interrupted.load() && backups.front().state() == connpool::JobState::succeeded) {
        auto job = sqlite::restore_from(restore_source, {.pages_per_step = settings.pages_per_step,
                                                         .pause = std::chrono::milliseconds(settings.pause_ms)});
        job.name = restored.filename().string();
        restore = restore_runner.submit(std::move(job), hub.track());
        wait_for({*restore});
    }
    screen.stop(); // draws the final frame

    bool ok = true;
    std::vector<connpool::Progress> jobs;
    for (const auto& h : backups) jobs.push_back(h.progress());
    print_summary(human, jobs, backup_files, copied_at, page_size);
    for (const auto& p : jobs) ok = ok && p.state == connpool::JobState::succeeded;

    std::fprintf(human, "\n");
    if (!restore) {
        std::fprintf(human, "restore: skipped (%s)\n", interrupted.load() ? "interrupted" : "its backup failed");
        ok = false;
    } else if (const auto p = restore->progress(); p.state != connpool::JobState::succeeded) {
        std::fprintf(human, "restore: backups/%s into %s %s\n", restore_source.filename().c_str(), restored.filename().c_str(),
                     std::string(connpool::to_string(p.state)).c_str());
        if (!p.error.empty()) std::fprintf(human, "    error: %s\n", monitor::terminal_safe(p.error).c_str());
        ok = false;
    } else {
        std::fprintf(human, "restore: backups/%s -> %s, %s pages in %.2f s\n", restore_source.filename().c_str(),
                     restored.filename().c_str(), monitor::format_count(p.done).c_str(), seconds(p.elapsed));
        const auto result = verify_restore(restored, restore_source);
        std::fprintf(human, "verify:  %s: %s\n", result.text.c_str(), result.ok ? "verified OK" : "VERIFICATION FAILED");
        ok = ok && result.ok;
        // The backup is a point in time; the source kept changing after it was taken.
        const auto orders_now = sqlite::Factory{dbs.front(), existing}.create().query_int("SELECT count(*) FROM orders");
        const auto orders_then = sqlite::Factory{restored, existing}.create().query_int("SELECT count(*) FROM orders");
        if (orders_now > orders_then)
            std::fprintf(human, "         (%s has %lld more orders: placed after its backup)\n", dbs.front().filename().c_str(),
                         static_cast<long long>(orders_now - orders_then));
    }

    std::uint64_t transactions = 0;
    for (const auto& w : writers) {
        transactions += w.transactions;
        if (!w.error.empty()) {
            std::fprintf(human, "writer on %s failed: %s\n", w.db.c_str(), w.error.c_str());
            ok = false;
        }
    }
    std::fprintf(human, "writers: %llu transactions on %zu databases while the backups ran\n",
                 static_cast<unsigned long long>(transactions), writers.size());
    const auto stats = workers.stats();
    std::fprintf(human, "backup pool: max_size %zu, %llu connections created, %llu leases, %llu discarded\n",
                 stats.max_size, static_cast<unsigned long long>(stats.created),
                 static_cast<unsigned long long>(stats.acquired), static_cast<unsigned long long>(stats.discarded));
    const auto longest = std::max_element(jobs.begin(), jobs.end(), [](const auto& a, const auto& b) { return a.waited < b.waited; });
    std::fprintf(human, "queuing: at most %d of %zu backups ran at once; longest wait %.2f s (%s)\n", concurrency.peak(),
                 jobs.size(), seconds(longest->waited), monitor::TerminalView::fit(longest->name, 20).c_str());

    return examples::end_run(serving, human, interrupted, ok, started);
}

} // namespace

int main(int argc, char** argv) {
    const auto parsed = parse_command_line(argc, argv);
    if (const int* status = std::get_if<int>(&parsed)) return *status; // --help, or a bad option
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    try {
        return run(std::get<Settings>(parsed));
    } catch (const Interrupted&) {
        std::printf("\ninterrupted\n");
        return 130;
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "\nbackup_demo: %s\n", e.what());
        return 1;
    }
}
