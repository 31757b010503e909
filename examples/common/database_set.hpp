#pragma once

// What the two database examples (postgres_backup, mysql_backup) do alike around a set: waiting
// for a backup_database or restore_database while feeding its aggregate progress to the sinks.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <connpool/io/backup_set.hpp>
#include <connpool/jobs.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/set_progress.hpp>
#include <connpool/monitor/terminal.hpp>

namespace examples {

/// Waits for `op` (a set `interrupted` cancels), feeding its aggregate progress to the sinks as
/// one set; prints one line about it (`data`: what its bytes are, "row data" or "COPY data");
/// returns whether it succeeded.
inline bool wait_and_report(std::FILE* out, const connpool::io::DatabaseOperation& op, connpool::monitor::SetTracker& set,
                            const char* what, const char* data, std::chrono::steady_clock::time_point started,
                            const std::atomic<bool>& interrupted) {
    namespace monitor = connpool::monitor;
    using namespace std::chrono_literals;
    while (op.progress().tables_done < op.tables().size()) {
        if (interrupted.load()) op.cancel();
        set.update(monitor::set_counts(op.progress())); // the JSON-lines sink throttles these
        std::this_thread::sleep_for(50ms);
    }
    const connpool::JobState end = op.wait();
    const auto p = op.progress();
    set.end(monitor::set_counts(p), end, op.error());
    std::fprintf(out, "%s: %zu tables, %s bytes of %s in %.2f s: %s\n", what, p.tables,
                 monitor::format_count(p.done).c_str(), data,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(),
                 std::string(connpool::to_string(end)).c_str());
    if (end != connpool::JobState::succeeded) std::fprintf(out, "    error: %s\n", monitor::terminal_safe(op.error()).c_str());
    return end == connpool::JobState::succeeded;
}

} // namespace examples
