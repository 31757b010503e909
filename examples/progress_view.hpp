#pragma once

// Terminal rendering of job progress for the examples: on a terminal, one progress bar per job,
// redrawn in place; on a file or a pipe, plain lines, printed only when something changed.
// Standard library and connpool/jobs.hpp only, so it can move into the library as a monitor
// sink as it is.

#include <algorithm>
#include <chrono>
#include <cctype> // std::isalpha: the end of an escape sequence
#include <condition_variable>
#include <cstdint>
#include <cstdio> // std::FILE: one fwrite per frame, so a frame never tears
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <connpool/jobs.hpp>

namespace monitor {

/// How a ProgressView draws. Every field has a default.
struct ViewOptions {
    /// Redraw one line per job in place with ANSI escapes (for a terminal). Default false:
    /// print plain lines, for files and pipes.
    bool live = false;
    /// Columns available. Live lines are cut to fit, because a line that wraps would break the
    /// in-place redraw (it moves the cursor up by lines, not by rows). Default 100.
    std::size_t width = 100;
    /// Bytes per unit "pages", to show rates in MiB/s; 0 = show pages/s. Default 0.
    std::uint32_t page_size = 0;
    /// Plain mode: least time between two lines about one job whose state did not change
    /// (state changes are printed at once). Default 1 s.
    std::chrono::milliseconds plain_interval{1000};
    /// Live mode: colour the state word. Default true.
    bool color = true;
};

/// Returns `n` with thousands separators: 12,345.
inline std::string format_count(std::uint64_t n) {
    std::string digits = std::to_string(n);
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i != 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return out;
}

/// Returns `d` for people: "0.8s", "12.3s", "2m05s".
inline std::string format_duration(std::chrono::nanoseconds d) {
    const double s = std::chrono::duration<double>(d).count();
    char buffer[32];
    if (s < 60) {
        std::snprintf(buffer, sizeof buffer, "%.1fs", s);
    } else {
        const auto whole = static_cast<long long>(s);
        std::snprintf(buffer, sizeof buffer, "%lldm%02llds", whole / 60, whole % 60);
    }
    return buffer;
}

/// Returns p.rate for people: MiB/s when the unit is bytes, or pages of a known size;
/// otherwise "<n> <unit>/s".
inline std::string format_rate(const connpool::Progress& p, std::uint32_t page_size) {
    char buffer[48];
    double bytes_per_unit = 0;
    if (p.unit == "bytes") bytes_per_unit = 1;
    if (p.unit == "pages") bytes_per_unit = page_size;
    if (bytes_per_unit > 0) {
        std::snprintf(buffer, sizeof buffer, "%.1f MiB/s", p.rate * bytes_per_unit / (1024.0 * 1024.0));
    } else {
        std::snprintf(buffer, sizeof buffer, "%.0f %s/s", p.rate, p.unit.empty() ? "units" : p.unit.c_str());
    }
    return buffer;
}

/// Draws snapshots of jobs (JobRunner::snapshot()) on a FILE: a live block of bars or plain
/// lines, per ViewOptions.
///
/// Design: the view keeps what it last drew (the block's height; per job, the last state and
/// percent printed), so it must be given the jobs in a stable order: a job keeps its position
/// from one call to the next, and new jobs come last. Not thread-safe: one thread (a Monitor)
/// calls show(). It never reads the jobs' callbacks' data, only snapshots.
class ProgressView {
public:
    /// Draws on `out` (not owned; must outlive the view).
    explicit ProgressView(std::FILE* out, ViewOptions options = {})
        : out_(out), options_(options), started_at_(clock::now()) {
        options_.width = std::max<std::size_t>(options_.width, 20);
    }

    /// Shows `jobs`. Live: redraws the block in place (one write). Plain: prints a line for each
    /// job whose state changed, or whose whole percent changed at least plain_interval after
    /// its last line.
    void show(const std::vector<connpool::Progress>& jobs) {
        for (const auto& p : jobs) name_width_ = std::max(name_width_, p.name.size());
        if (options_.live) {
            show_live(jobs);
        } else {
            show_plain(jobs);
        }
    }

    /// Returns the options the view was built with.
    [[nodiscard]] const ViewOptions& options() const noexcept { return options_; }

private:
    using clock = std::chrono::steady_clock;

    struct Printed {
        bool seen = false;
        connpool::JobState state = connpool::JobState::queued;
        int percent = -1;
        clock::time_point at{};
    };

    static int percent_of(const connpool::Progress& p) {
        const auto fraction = p.fraction();
        return fraction ? static_cast<int>(*fraction * 100.0) : -1;
    }

    void show_live(const std::vector<connpool::Progress>& jobs) {
        // Fit the longest line to the width: first drop the least useful fields, then shrink the
        // bar. Both only ever go down, and apply to every line, so columns stay put from frame to
        // frame. A failed job's error text is cut instead.
        const std::size_t room = options_.width - 1; // the last column would make some terminals wrap
        const auto widest = [&](int detail) {
            std::size_t widest = 0;
            for (const auto& p : jobs)
                if (p.state != connpool::JobState::failed) widest = std::max(widest, visible_length(describe(p, 0, detail)));
            return widest + 4; // a bar adds "  [" and "]"
        };
        while (detail_ > 0 && widest(detail_) + min_bar > room) --detail_;
        const std::size_t used = widest(detail_);
        bar_width_ = std::clamp(room > used ? room - used : 0, min_bar, bar_width_);

        std::string frame;
        // The cursor rests on the line below the block: go back to its first line.
        if (drawn_ > 0) frame += "\x1b[" + std::to_string(drawn_) + "A";
        for (const auto& p : jobs) frame += "\r\x1b[2K" + fit(describe(p, bar_width_, detail_), room) + "\n";
        // Jobs are never removed in our use, but a shorter list must not leave stale lines.
        for (std::size_t i = jobs.size(); i < drawn_; ++i) frame += "\r\x1b[2K\n";
        drawn_ = std::max(drawn_, jobs.size());
        write(frame);
    }

    void show_plain(const std::vector<connpool::Progress>& jobs) {
        const auto now = clock::now();
        printed_.resize(std::max(printed_.size(), jobs.size()));
        std::string text;
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            const auto& p = jobs[i];
            Printed& last = printed_[i];
            const int percent = percent_of(p);
            const bool state_changed = !last.seen || p.state != last.state;
            const bool moved = percent != last.percent && now - last.at >= options_.plain_interval;
            if (!state_changed && !moved) continue;
            last = Printed{true, p.state, percent, now};
            text += "[" + pad_left(format_duration(now - started_at_), 6) + "] " + describe(p, /*bar=*/0) + "\n";
        }
        if (!text.empty()) write(text);
    }

    // Which fields describe() shows: those whose level is at most its `detail`. Narrow
    // terminals lose the highest levels first; name, state, bar and percent always stay.
    enum Detail : int { keep_always, keep_eta, keep_rate, keep_waited, keep_restarts, keep_pages, keep_kind };
    static constexpr int all_details = keep_kind;

    /// Returns one line about `p`: with a bar of `bar` cells when bar > 0, and the fields whose
    /// Detail is at most `detail`.
    std::string describe(const connpool::Progress& p, std::size_t bar, int detail = all_details) const {
        using connpool::JobState;
        std::string line = pad_right(p.name, std::max(name_width_, p.name.size()));
        if (detail >= keep_kind) line += "  " + pad_right(std::string(connpool::to_string(p.kind)), 7);
        line += "  " + state_word(p.state);
        if (bar > 0) {
            const auto filled = static_cast<std::size_t>(p.fraction().value_or(0.0) * static_cast<double>(bar));
            line += "  [" + std::string(filled, '#') + std::string(bar - filled, '.') + "]";
        }
        const int percent = percent_of(p);
        line += percent >= 0 ? "  " + pad_left(std::to_string(percent), 3) + "%" : std::string("     -");
        if (p.state == JobState::queued) return line + "  waiting for a connection " + format_duration(p.waited);
        if (p.unit.empty()) { // nothing counted yet (e.g. a restore checking its source first)
            if (p.state == JobState::running) return line + "  " + (p.phase.empty() ? "starting" : p.phase);
        } else {
            if (detail >= keep_pages)
                line += "  " + pad_left(format_count(p.done) + "/" + (p.total ? format_count(p.total) : "?") + " " + p.unit, 17);
            if (detail >= keep_rate) line += "  " + pad_left(format_rate(p, options_.page_size), 10);
        }
        if (detail >= keep_eta) {
            // After the last page a backup still verifies and syncs: say so rather than "ETA 0s".
            const bool copying = p.phase.empty() || p.phase == "copying";
            line += p.state != JobState::running ? "  in  " + pad_right(format_duration(p.elapsed), 4)
                    : copying ? "  ETA " + pad_right(p.eta ? format_duration(*p.eta) : std::string("?"), 4)
                              : "  " + pad_right(p.phase, 8);
        }
        if (detail >= keep_waited) line += "  waited " + pad_right(format_duration(p.waited), 4);
        if (detail >= keep_restarts) line += "  restarts " + std::to_string(p.restarts);
        if (p.state == JobState::failed) line += "  error: " + p.error.substr(0, p.error.find('\n'));
        return line;
    }

    std::string state_word(connpool::JobState state) const {
        std::string word = pad_right(std::string(connpool::to_string(state)), 9);
        if (!options_.live || !options_.color) return word;
        const char* colour = "";
        switch (state) {
        case connpool::JobState::queued: colour = "\x1b[2m"; break;     // dim
        case connpool::JobState::running: colour = "\x1b[36m"; break;   // cyan
        case connpool::JobState::succeeded: colour = "\x1b[32m"; break; // green
        case connpool::JobState::failed: colour = "\x1b[31m"; break;    // red
        case connpool::JobState::cancelled: colour = "\x1b[33m"; break; // yellow
        }
        return colour + word + "\x1b[0m";
    }

    /// Cuts `line` to `width` visible columns; escape sequences ("ESC [ ... letter") take none,
    /// and a colour left open by the cut is closed. (ASCII text only.)
    static std::string fit(const std::string& line, std::size_t width) {
        std::size_t visible = 0;
        bool colour_open = false;
        for (std::size_t i = 0; i < line.size(); ++i) {
            if (line[i] == '\x1b') {
                const std::size_t start = i;
                while (i + 1 < line.size() && !std::isalpha(static_cast<unsigned char>(line[i + 1]))) ++i;
                ++i; // the final letter
                colour_open = line.compare(start, 4, "\x1b[0m") != 0;
                continue;
            }
            if (++visible > width) return line.substr(0, i) + (colour_open ? "\x1b[0m" : "");
        }
        return line;
    }

    /// Returns how many columns `line` takes (escape sequences take none).
    static std::size_t visible_length(const std::string& line) {
        std::size_t visible = 0;
        for (std::size_t i = 0; i < line.size(); ++i) {
            if (line[i] == '\x1b') {
                while (i + 1 < line.size() && !std::isalpha(static_cast<unsigned char>(line[i + 1]))) ++i;
                ++i;
                continue;
            }
            ++visible;
        }
        return visible;
    }

    static std::string pad_right(std::string s, std::size_t width) {
        if (s.size() < width) s.append(width - s.size(), ' ');
        return s;
    }

    static std::string pad_left(std::string s, std::size_t width) {
        if (s.size() < width) s.insert(0, width - s.size(), ' ');
        return s;
    }

    void write(const std::string& text) {
        std::fwrite(text.data(), 1, text.size(), out_);
        std::fflush(out_);
    }

    std::FILE* out_;
    ViewOptions options_;
    clock::time_point started_at_;
    std::size_t drawn_ = 0;      // live: lines of the block on screen, cursor below them
    std::size_t name_width_ = 0; // widest name so far, so columns don't jump
    static constexpr std::size_t min_bar = 8;
    std::size_t bar_width_ = 30; // live: cells in a bar
    int detail_ = all_details;   // live: which fields fit (see Detail)
    std::vector<Printed> printed_; // plain: what was last printed, by position
};

/// Shows a source of progress snapshots on a ProgressView from its own thread, every `period`,
/// until stop(). Progress callbacks run on the runner's worker threads and must stay quick, so
/// drawing happens here instead, from snapshots.
///
/// Design: the thread owns the view while it runs; stop() joins it and then draws the last
/// frame on the calling thread, so the final states are always shown exactly once.
class Monitor {
public:
    using Source = std::function<std::vector<connpool::Progress>()>;

    /// Starts drawing `source()` on `view` every `period`. `view` and whatever `source` reads
    /// must outlive the monitor (or its stop()).
    Monitor(ProgressView& view, Source source, std::chrono::milliseconds period)
        : view_(view), source_(std::move(source)), period_(period), thread_([this] { loop(); }) {}

    Monitor(const Monitor&) = delete;
    Monitor& operator=(const Monitor&) = delete;

    /// Stops, as stop() does.
    ~Monitor() { stop(); }

    /// Stops the thread and draws a last frame. Idempotent; call from one thread.
    void stop() {
        if (!thread_.joinable()) return;
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        cv_.notify_all();
        thread_.join();
        view_.show(source_());
    }

private:
    void loop() {
        std::unique_lock lock(mu_);
        while (!stopping_) {
            lock.unlock();
            view_.show(source_());
            lock.lock();
            cv_.wait_for(lock, period_, [this] { return stopping_; });
        }
    }

    ProgressView& view_;
    Source source_;
    std::chrono::milliseconds period_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false; // guarded by mu_
    std::thread thread_;    // last: starts after everything it reads is initialized
};

} // namespace monitor
