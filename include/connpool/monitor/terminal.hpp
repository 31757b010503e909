#pragma once

// The terminal view: on a terminal, one progress bar per job redrawn in place, under a summary
// line per set (a whole database backup: bytes done/total, %, rate, ETA, jobs ended/in all); on
// a file or a pipe, plain timestamped lines, printed only when something changed. It draws snapshots
// (JobRunner::snapshot()) from a thread of its own (TerminalMonitor), so the jobs never wait
// for the terminal.

#include <algorithm>
#include <array>
#include <chrono>
#include <cctype> // std::isalpha: the end of an escape sequence
#include <condition_variable>
#include <cstdint>
#include <cstdio> // std::FILE: one fwrite per frame, so a frame never tears
#include <cstdlib> // std::getenv: NO_COLOR, TERM
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <sys/ioctl.h> // TIOCGWINSZ: the terminal's size, so live lines never wrap
#include <unistd.h>    // isatty

#include <connpool/jobs.hpp>
#include <connpool/monitor/redact.hpp>
#include <connpool/monitor/set_progress.hpp>

namespace connpool::monitor {

/// How a TerminalView draws. Every field has a default.
struct TerminalOptions {
    /// Redraw one line per job in place with ANSI escapes (for a terminal). Default false:
    /// print plain lines, for files and pipes.
    bool live = false;
    /// Columns available; every line is cut to fit, because a line that wraps would break the
    /// in-place redraw (it moves the cursor up by lines, not by rows). Default 80; at least 20.
    std::size_t width = 80;
    /// Live mode: most lines the block may take (0 = no limit). With more jobs than that, the
    /// running ones are shown first and one line summarises the others. Default 0.
    std::size_t height = 0;
    /// Bytes per unit "pages", to show rates in MiB/s; 0 = show pages/s. Default 0.
    std::uint32_t page_size = 0;
    /// Plain mode: least time between two lines about one job whose state did not change
    /// (state changes are printed at once). Default 1 s.
    std::chrono::milliseconds plain_interval{1000};
    /// Live mode: colour the state word. Default true (see color_allowed()).
    bool color = true;
    /// The clock plain lines are stamped with (time since the view was made). Default: steady_clock.
    std::function<std::chrono::steady_clock::time_point()> now = [] { return std::chrono::steady_clock::now(); };
};

/// Returns whether `fd` is a terminal that understands cursor movement (not TERM=dumb).
inline bool is_live_terminal(int fd) {
    const char* term = std::getenv("TERM");
    return ::isatty(fd) == 1 && !(term != nullptr && std::string_view(term) == "dumb");
}

/// Returns the terminal's (columns, rows) for `fd`, or nothing when it is not a terminal.
inline std::optional<std::pair<std::size_t, std::size_t>> terminal_size(int fd) {
    winsize size{};
    if (::ioctl(fd, TIOCGWINSZ, &size) != 0 || size.ws_col == 0) return std::nullopt;
    return std::pair<std::size_t, std::size_t>{size.ws_col, size.ws_row};
}

/// Returns false when the NO_COLOR environment variable is set to a non-empty value (no-color.org).
inline bool color_allowed() {
    const char* no_color = std::getenv("NO_COLOR");
    return no_color == nullptr || *no_color == '\0';
}

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

/// Returns `d` for people: "0.8s", "12.3s", "2m05s", "3h07m".
inline std::string format_duration(std::chrono::nanoseconds d) {
    const double s = std::chrono::duration<double>(d).count();
    char buffer[32];
    if (s < 60) {
        std::snprintf(buffer, sizeof buffer, "%.1fs", s);
    } else if (s < 3600) {
        const auto whole = static_cast<long long>(s);
        std::snprintf(buffer, sizeof buffer, "%lldm%02llds", whole / 60, whole % 60);
    } else {
        const auto whole = static_cast<long long>(s) / 60;
        std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", whole / 60, whole % 60);
    }
    return buffer;
}

/// Returns p.rate for people: MiB/s when the unit is bytes, or pages of a known size;
/// otherwise "<n> <unit>/s".
inline std::string format_rate(const Progress& p, std::uint32_t page_size) {
    char buffer[64];
    double bytes_per_unit = 0;
    if (p.unit == "bytes") bytes_per_unit = 1;
    if (p.unit == "pages") bytes_per_unit = page_size;
    if (bytes_per_unit > 0) {
        std::snprintf(buffer, sizeof buffer, "%.1f MiB/s", p.rate * bytes_per_unit / (1024.0 * 1024.0));
    } else {
        std::snprintf(buffer, sizeof buffer, "%.0f %s/s", p.rate, p.unit.empty() ? "units" : p.unit.substr(0, 16).c_str());
    }
    return buffer;
}

/// Returns what a terminal may show of `text`: clean()ed, with control characters (newlines,
/// escapes a hostile job name could use to move the cursor) shown as '?'.
inline std::string terminal_safe(std::string_view text) {
    std::string out = clean(text);
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || c == '\x7f') c = '?';
    return out;
}

/// Draws snapshots of jobs on a FILE: a live block of bars or plain lines, per TerminalOptions.
///
/// Design: the view keeps what it last drew (the block's height; per job, the last state and
/// percent printed, by id, kind and name), so jobs should come in a stable order (JobRunner::snapshot() order). Not
/// thread-safe: one thread (a TerminalMonitor) calls show(). It reads only snapshots, never the
/// jobs' callbacks' data.
class TerminalView {
public:
    /// Draws on `out` (not owned; must outlive the view).
    explicit TerminalView(std::FILE* out, TerminalOptions options = {})
        : out_(out), options_(std::move(options)), started_at_(options_.now()) {
        options_.width = std::max<std::size_t>(options_.width, 20);
    }

    /// Shows `jobs`. Live: redraws the block in place (one write). Plain: prints a line for each
    /// job whose state changed, or whose whole percent changed at least plain_interval after
    /// its last line.
    void show(const std::vector<Progress>& jobs) { show(jobs, {}); }

    /// Shows `jobs` under one summary line per set in `sets` (Hub::sets()), drawn like a job's
    /// line with the set's jobs ended/in all at its end; plain mode prints a set's line on the
    /// same rules as a job's.
    void show(const std::vector<Progress>& jobs, const std::vector<SetProgress>& sets) {
        std::vector<Progress> safe_sets;
        safe_sets.reserve(sets.size());
        for (const auto& set : sets) {
            Progress p;
            p.name = terminal_safe(set.name);
            p.kind = set.kind;
            p.state = set.state;
            p.done = set.done;
            p.total = set.state == JobState::succeeded ? std::max(set.total, set.done) : set.total;
            p.unit = terminal_safe(set.unit);
            p.elapsed = set.elapsed;
            p.rate = set.rate;
            p.eta = set.eta;
            p.error = terminal_safe(set.error);
            // Sets and jobs share the plain mode's memory of what was printed: a set's key
            // cannot be a job's (no job has this id).
            p.id = set_id;
            p.phase = "jobs " + std::to_string(set.jobs_done) + "/" + std::to_string(set.jobs);
            name_width_ = std::max(name_width_, std::min(columns(p.name), max_name));
            safe_sets.push_back(std::move(p));
        }
        sets_ = std::move(safe_sets);
        std::vector<Progress> safe = jobs;
        for (auto& p : safe) {
            p.name = terminal_safe(p.name);
            p.phase = terminal_safe(p.phase);
            p.error = terminal_safe(p.error);
            p.unit = terminal_safe(p.unit);
            name_width_ = std::max(name_width_, std::min(columns(p.name), max_name));
        }
        if (options_.live) {
            show_live(safe);
        } else {
            show_plain(safe);
        }
    }

    /// Returns the options the view was built with.
    [[nodiscard]] const TerminalOptions& options() const noexcept { return options_; }

    /// Returns how many columns `line` takes: escape sequences take none, a UTF-8 sequence one.
    static std::size_t columns(std::string_view line) {
        std::size_t visible = 0;
        for (std::size_t i = 0; i < line.size(); ++i) {
            if (line[i] == '\x1b') {
                while (i + 1 < line.size() && !std::isalpha(static_cast<unsigned char>(line[i + 1]))) ++i;
                ++i;
                continue;
            }
            const auto b = static_cast<unsigned char>(line[i]);
            if ((b & 0xC0) != 0x80 && b >= 0x20) ++visible; // '\r' and the like move, they take no column
        }
        return visible;
    }

    /// Cuts `line` to `width` columns (see columns()); a colour left open by the cut is closed.
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
            const auto b = static_cast<unsigned char>(line[i]);
            if ((b & 0xC0) == 0x80 || b < 0x20) continue;
            if (++visible > width) return line.substr(0, i) + (colour_open ? "\x1b[0m" : "");
        }
        return line;
    }

private:
    using clock = std::chrono::steady_clock;

    struct Printed {
        std::string key; // id, kind and name
        JobState state = JobState::queued;
        int percent = -1;
        clock::time_point at{};
    };

    static constexpr std::uint64_t set_id = ~std::uint64_t{0}; // a set's line (no job has this id)
    static constexpr std::size_t max_name = 24; // longer names are cut, so the bars keep their room
    static constexpr std::size_t min_bar = 8;

    static int percent_of(const Progress& p) {
        const auto fraction = p.fraction();
        return fraction ? static_cast<int>(*fraction * 100.0) : -1;
    }

    /// Returns the jobs to draw and, when some are left out, a line summarising those.
    std::pair<std::vector<const Progress*>, std::string> choose(const std::vector<Progress>& jobs) const {
        std::vector<const Progress*> shown;
        const std::size_t rows = options_.height;
        if (rows == 0 || jobs.size() <= rows) {
            for (const auto& p : jobs) shown.push_back(&p);
            return {shown, {}};
        }
        // Running first, then failed, then queued, then the rest; keep submission order on screen.
        const std::size_t room = rows > 1 ? rows - 1 : 0;
        std::vector<bool> take(jobs.size(), false);
        std::size_t taken = 0;
        for (const JobState s : {JobState::running, JobState::failed, JobState::queued, JobState::cancelled, JobState::succeeded})
            for (std::size_t i = 0; i < jobs.size() && taken < room; ++i)
                if (jobs[i].state == s && !take[i]) take[i] = true, ++taken;
        std::array<std::size_t, 5> hidden{};
        for (std::size_t i = 0; i < jobs.size(); ++i) {
            if (take[i]) {
                shown.push_back(&jobs[i]);
            } else {
                ++hidden[static_cast<std::size_t>(jobs[i].state)];
            }
        }
        std::string summary = "... " + std::to_string(jobs.size() - taken) + " more:";
        bool first = true;
        for (const JobState s : {JobState::running, JobState::queued, JobState::succeeded, JobState::failed, JobState::cancelled}) {
            if (hidden[static_cast<std::size_t>(s)] == 0) continue;
            summary += std::string(first ? " " : ", ") + std::to_string(hidden[static_cast<std::size_t>(s)]) + " " +
                       std::string(to_string(s));
            first = false;
        }
        return {shown, summary};
    }

    void show_live(const std::vector<Progress>& jobs) {
        // Not a structured binding: clang 14 cannot capture one in the lambda below.
        const auto chosen = choose(jobs);
        const std::vector<const Progress*>& shown = chosen.first;
        const std::string& summary = chosen.second;
        // Fit the longest line to the width: first drop the least useful fields, then shrink the
        // bar. Both only ever go down, and apply to every line, so columns stay put from frame to
        // frame. A failed job's error text is cut instead.
        const std::size_t room = options_.width - 1; // the last column would make some terminals wrap
        const auto widest = [&](int detail) {
            std::size_t widest = 0;
            for (const auto* p : shown)
                widest = std::max(widest, columns(describe(*p, 0, detail, /*with_error=*/false)));
            return widest + 4; // a bar adds "  [" and "]"
        };
        while (detail_ > 0 && widest(detail_) + min_bar > room) --detail_;
        const std::size_t used = widest(detail_);
        bar_width_ = std::clamp(room > used ? room - used : 0, min_bar, bar_width_);

        std::string frame;
        std::size_t lines = 0;
        // The cursor rests on the line below the block: go back to its first line.
        if (drawn_ > 0) frame += "\x1b[" + std::to_string(drawn_) + "A";
        for (const auto& set : sets_) {
            frame += "\r\x1b[2K" + fit(describe_set(set, bar_width_, detail_), room) + "\n";
            ++lines;
        }
        for (const auto* p : shown) {
            frame += "\r\x1b[2K" + fit(describe(*p, bar_width_, detail_), room) + "\n";
            ++lines;
        }
        if (!summary.empty()) {
            frame += "\r\x1b[2K" + fit(summary, room) + "\n";
            ++lines;
        }
        // A shorter block must not leave stale lines below it.
        for (std::size_t i = lines; i < drawn_; ++i) frame += "\r\x1b[2K\n";
        drawn_ = std::max(drawn_, lines);
        write(frame);
    }

    void show_plain(const std::vector<Progress>& jobs) {
        const auto now = options_.now();
        std::string text;
        std::vector<const Progress*> all;
        all.reserve(sets_.size() + jobs.size());
        for (const auto& p : sets_) all.push_back(&p);
        for (const auto& p : jobs) all.push_back(&p);
        for (const Progress* item : all) {
            const Progress& p = *item;
            const bool is_set = p.id == set_id;
            // Ids are per runner and a view may show several runners' jobs: key by id, kind and name.
            const std::string key = std::to_string(p.id) + '\0' + std::string(to_string(p.kind)) + '\0' + p.name;
            auto it = std::find_if(printed_.begin(), printed_.end(), [&](const Printed& x) { return x.key == key; });
            const int percent = percent_of(p);
            const bool fresh = it == printed_.end();
            const bool state_changed = fresh || p.state != it->state;
            const bool moved = !fresh && percent != it->percent && now - it->at >= options_.plain_interval;
            if (!state_changed && !moved) continue;
            const Printed entry{key, p.state, percent, now};
            if (fresh) {
                printed_.push_back(entry);
            } else {
                *it = entry;
            }
            // Each line on its own: drop the least useful fields until it fits (the error is cut).
            const std::string stamp = "[" + pad_left(format_duration(now - started_at_), 6) + "] ";
            const auto line_of = [&](int detail, bool with_error) {
                return stamp + (is_set ? describe_set(p, 0, detail, with_error) : describe(p, 0, detail, with_error));
            };
            int detail = all_details;
            while (detail > 0 && columns(line_of(detail, /*with_error=*/false)) > options_.width - 1) --detail;
            std::string line = fit(line_of(detail, /*with_error=*/true), options_.width - 1);
            line.erase(line.find_last_not_of(' ') + 1); // padding that ends a line only costs bytes
            text += line + "\n";
        }
        if (!text.empty()) write(text);
    }

    // Which fields describe() shows: those whose level is at most its `detail`. Narrow
    // terminals lose the highest levels first; name, state, bar and percent always stay.
    enum Detail : int { keep_always, keep_eta, keep_restarts, keep_rate, keep_waited, keep_pages, keep_kind };
    static constexpr int all_details = keep_kind;

    /// Returns one line about `p`: with a bar of `bar` cells when bar > 0, the fields whose
    /// Detail is at most `detail`, and a failed job's error unless `with_error` is false.
    std::string describe(const Progress& p, std::size_t bar, int detail = all_details, bool with_error = true) const {
        std::string name = fit(p.name, name_width_);
        std::string line = pad_right(name, name_width_);
        if (detail >= keep_kind) line += "  " + pad_right(std::string(to_string(p.kind)), 7);
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
            line += p.state != JobState::running ? "  in  " + pad_right(format_duration(p.elapsed), 5)
                    : copying ? "  ETA " + pad_right(p.eta ? format_duration(*p.eta) : std::string("?"), 5)
                              : "  " + pad_right(p.phase, 9);
        }
        if (detail >= keep_waited && p.id != set_id) line += "  waited " + pad_right(format_duration(p.waited), 5);
        // Restarts apart from done/total: a restarted copy re-reads pages, which is why done can
        // pass the database's size.
        if (detail >= keep_restarts && p.restarts > 0) line += "  restarts " + std::to_string(p.restarts);
        if (p.state == JobState::failed && with_error) line += "  error: " + p.error;
        return line;
    }

    /// Returns one line about a set (as show() turned it into a Progress): a job's line without
    /// the waiting time, with "set" for the kind's column and the jobs ended/in all at the end.
    std::string describe_set(const Progress& p, std::size_t bar, int detail = all_details, bool with_error = true) const {
        Progress shown = p;
        shown.phase.clear(); // so describe() shows the ETA, not the phase
        std::string line = describe(shown, bar, detail, /*with_error=*/false);
        line += "  " + p.phase;
        if (p.state == JobState::failed && with_error) line += "  error: " + p.error;
        return line;
    }

    std::string state_word(JobState state) const {
        std::string word = pad_right(std::string(to_string(state)), 9);
        if (!options_.live || !options_.color) return word;
        const char* colour = "";
        switch (state) {
        case JobState::queued: colour = "\x1b[2m"; break;     // dim
        case JobState::running: colour = "\x1b[36m"; break;   // cyan
        case JobState::succeeded: colour = "\x1b[32m"; break; // green
        case JobState::failed: colour = "\x1b[31m"; break;    // red
        case JobState::cancelled: colour = "\x1b[33m"; break; // yellow
        }
        return colour + word + "\x1b[0m";
    }

    static std::string pad_right(std::string s, std::size_t width) {
        const std::size_t n = columns(s);
        if (n < width) s.append(width - n, ' ');
        return s;
    }

    static std::string pad_left(std::string s, std::size_t width) {
        const std::size_t n = columns(s);
        if (n < width) s.insert(0, width - n, ' ');
        return s;
    }

    void write(const std::string& text) {
        std::fwrite(text.data(), 1, text.size(), out_);
        std::fflush(out_);
    }

    std::FILE* out_;
    TerminalOptions options_;
    clock::time_point started_at_;
    std::size_t drawn_ = 0;        // live: lines of the block on screen, cursor below them
    std::size_t name_width_ = 0;   // widest name so far (at most max_name), so columns don't jump
    std::size_t bar_width_ = 30;   // live: cells in a bar
    int detail_ = all_details;     // live: which fields fit (see Detail)
    std::vector<Printed> printed_; // plain: what was last printed, per job
    std::vector<Progress> sets_;   // the sets of the current show(), as Progress lines
};

/// Shows a source of progress snapshots on a TerminalView from its own thread, every `period`,
/// until stop(). Progress callbacks run on the runner's worker threads and must stay quick, so
/// drawing happens here instead, from snapshots.
///
/// Design: the thread owns the view while it runs; stop() joins it and then draws the last
/// frame on the calling thread, so the final states are always shown exactly once.
class TerminalMonitor {
public:
    /// Where the jobs come from: e.g. `[&] { return runner.snapshot(); }`.
    using Source = std::function<std::vector<Progress>()>;

    /// Starts drawing `source()` on `view` every `period`. `view` and whatever `source` reads
    /// must outlive the monitor (or its stop()).
    TerminalMonitor(TerminalView& view, Source source, std::chrono::milliseconds period)
        : view_(view), source_(std::move(source)), period_(period), thread_([this] { loop(); }) {}

    /// Where the sets come from: e.g. `[&] { return hub.sets(); }`.
    using SetSource = std::function<std::vector<SetProgress>()>;

    /// As above, with a summary line per set of `sets()` above the jobs.
    TerminalMonitor(TerminalView& view, Source source, SetSource sets, std::chrono::milliseconds period)
        : view_(view), source_(std::move(source)), sets_(std::move(sets)), period_(period), thread_([this] { loop(); }) {}

    TerminalMonitor(const TerminalMonitor&) = delete;
    TerminalMonitor& operator=(const TerminalMonitor&) = delete;

    /// Stops, as stop() does.
    ~TerminalMonitor() { stop(); }

    /// Stops the thread and draws a last frame. Idempotent; call from one thread.
    void stop() {
        if (!thread_.joinable()) return;
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        cv_.notify_all();
        thread_.join();
        draw();
    }

private:
    void loop() {
        std::unique_lock lock(mu_);
        while (!stopping_) {
            lock.unlock();
            draw();
            lock.lock();
            cv_.wait_for(lock, period_, [this] { return stopping_; });
        }
    }

    void draw() {
        if (sets_) {
            view_.show(source_(), sets_());
        } else {
            view_.show(source_());
        }
    }

    TerminalView& view_;
    Source source_;
    SetSource sets_;
    std::chrono::milliseconds period_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false; // guarded by mu_
    std::thread thread_;    // last: starts after everything it reads is initialized
};

} // namespace connpool::monitor
