#pragma once

// The demo's closing summary: one row per backup, then the restore, the writers and the pool.
// Every line fits 80 columns, so the summary reads in a default terminal.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <connpool/jobs.hpp>
#include <connpool/monitor/terminal.hpp> // format_count

#include "workers.hpp" // CopiedAt

namespace demo {

inline double mib(std::uintmax_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

inline double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

inline std::uintmax_t file_size_or_zero(const std::filesystem::path& file) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(file, ec);
    return ec ? 0 : size;
}

/// Prints one row per backup job on `out`; `copied_at[i]` says when job i had copied its last page.
inline void print_summary(std::FILE* out, const std::vector<connpool::Progress>& jobs,
                          const std::vector<std::filesystem::path>& files, const std::vector<CopiedAt>& copied_at,
                          std::uint32_t page_size) {
    std::fprintf(out, "\n%-14s %6s %7s %6s %6s %7s %8s %6s  %s\n", "database", "MB", "copied", "time s", "MiB/s", "check s",
                 "restarts", "wait s", "state");
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        const auto& p = jobs[i];
        // A failed job leaves no file, but an earlier run's backup may be there: don't report it.
        const auto bytes = p.state == connpool::JobState::succeeded ? file_size_or_zero(files[i]) : 0;
        const auto copied_ns = copied_at[i].elapsed_ns.load();
        char check[16] = "-";
        if (copied_ns >= 0) std::snprintf(check, sizeof check, "%.2f", seconds(p.elapsed - std::chrono::nanoseconds{copied_ns}));
        const std::string name = connpool::monitor::TerminalView::fit(connpool::monitor::terminal_safe(p.name), 14);
        std::fprintf(out, "%-14s %6.1f %7s %6.2f %6.1f %7s %8llu %6.2f  %s\n", name.c_str(), mib(bytes),
                     connpool::monitor::format_count(p.done).c_str(), seconds(p.elapsed),
                     p.rate * page_size / (1024.0 * 1024.0), check, static_cast<unsigned long long>(p.restarts),
                     seconds(p.waited), std::string(connpool::to_string(p.state)).c_str());
        if (p.state == connpool::JobState::failed)
            std::fprintf(out, "    error: %s\n", connpool::monitor::terminal_safe(p.error).c_str());
    }
    std::fprintf(out, "(MB: the backup's size; copied: its pages (pages read again after a restart are\n"
                      " not counted); MiB/s: copied / time; check s: checking, syncing, renaming it)\n");
}

} // namespace demo
