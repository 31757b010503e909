#pragma once

// Prometheus text exposition, format 0.0.4, of pools and jobs, for a scrape endpoint
// (monitor/http.hpp) and for node_exporter's textfile collector (write_textfile()).
//
// Cardinality is bounded whatever the number of jobs: per-job series (labels name, kind) exist
// only for the jobs a Hub still holds (queued, running and HubOptions::keep_ended most recent
// ended ones; when two share a name and kind, the newest one), per-state and per-kind counts
// cover every job, and connpool_job_last_success_timestamp_seconds keeps one series per job
// name (HubOptions::keep_names at most). The job's name is the `name` label: Prometheus adds a
// `job` label of its own.

#include <algorithm> // std::reverse
#include <array>
#include <charconv> // std::to_chars: fast, locale-independent numbers
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <connpool/jobs.hpp>
#include <connpool/monitor/detail/atomic_file.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/redact.hpp>

namespace connpool::monitor {

/// The Content-Type of the text this header renders.
inline constexpr std::string_view prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";

namespace detail {

inline void append_number(std::string& out, double v) {
    if (std::isnan(v)) {
        out += "NaN";
    } else if (std::isinf(v)) {
        out += v > 0 ? "+Inf" : "-Inf";
    } else {
        char buffer[32];
        const auto r = std::to_chars(buffer, buffer + sizeof buffer, v);
        out.append(buffer, r.ptr);
    }
}

inline void append_number(std::string& out, std::uint64_t v) {
    char buffer[24];
    const auto r = std::to_chars(buffer, buffer + sizeof buffer, v);
    out.append(buffer, r.ptr);
}

/// Returns whether clean() could change `text`: anything but ASCII without '=' and ':' (the
/// characters every secret pattern needs). Lets the common name skip clean()'s copies.
inline bool may_need_cleaning(std::string_view text) noexcept {
    for (const char c : text)
        if (static_cast<unsigned char>(c) >= 0x80 || c == '=' || c == ':') return true;
    return false;
}

/// Appends `value` escaped as a label value: backslash, double quote and newline.
inline void append_label_value(std::string& out, std::string_view value) {
    bool plain = true;
    for (const char c : value) plain = plain && c != '\\' && c != '"' && c != '\n';
    if (plain) {
        out += value; // the usual case, in one copy
        return;
    }
    for (const char c : value) {
        switch (c) {
        case '\\': out += "\\\\"; break;
        case '"': out += "\\\""; break;
        case '\n': out += "\\n"; break;
        default: out += c;
        }
    }
}

/// Appends `value` clean()ed and escaped as a label value.
inline void append_clean_label_value(std::string& out, std::string_view value) {
    if (may_need_cleaning(value)) {
        append_label_value(out, clean(value));
    } else {
        append_label_value(out, value);
    }
}

inline void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help; // our own constant texts: no backslash or newline to escape
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

/// Appends `name{labels<more>} value\n`; `labels` and `more` are already rendered
/// (`pool="x"`, `,state="idle"`), so a series' common labels are built once.
template <class V>
void sample(std::string& out, std::string_view name, std::string_view labels, V value, std::string_view more = {}) {
    out += name;
    if (!labels.empty() || !more.empty()) {
        out += '{';
        out += labels;
        out += more;
        out += '}';
    }
    out += ' ';
    append_number(out, value);
    out += '\n';
}

inline double seconds_since_epoch(std::chrono::system_clock::time_point t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

} // namespace detail

/// Returns the Prometheus text (0.0.4) of `m`: each family once, with HELP and TYPE; label values
/// clean()ed and escaped; base units; counters ending in _total; the acquire-wait histogram with
/// cumulative buckets whose +Inf bucket equals its _count.
inline std::string render_prometheus(const MetricsSnapshot& m) {
    using detail::family;
    using detail::sample;
    std::string out;
    out.reserve(4096 + m.jobs.size() * 700);

    // ---- pools ----
    std::vector<std::string> pool_labels; // pool="<name>", rendered once
    for (const auto& p : m.pools) {
        std::string l = "pool=\"";
        detail::append_clean_label_value(l, p.name);
        l += '"';
        pool_labels.push_back(std::move(l));
    }
    struct Gauge {
        std::string_view name, type, help;
        std::uint64_t (*get)(const PoolStats&);
    };
    family(out, "connpool_pool_connections", "gauge", "Connections open in the pool, by state (idle or in_use).");
    for (std::size_t i = 0; i < m.pools.size(); ++i) {
        if (!m.pools[i].stats) continue;
        sample(out, "connpool_pool_connections", pool_labels[i], std::uint64_t{m.pools[i].stats->idle}, ",state=\"idle\"");
        sample(out, "connpool_pool_connections", pool_labels[i], std::uint64_t{m.pools[i].stats->in_use}, ",state=\"in_use\"");
    }
    static constexpr std::array<Gauge, 10> pool_families{{
        {"connpool_pool_max_connections", "gauge", "Most connections the pool may open (max_size).",
         [](const PoolStats& s) -> std::uint64_t { return s.max_size; }},
        {"connpool_pool_waiting_threads", "gauge", "Threads waiting in acquire for a connection.",
         [](const PoolStats& s) -> std::uint64_t { return s.waiting; }},
        {"connpool_pool_acquires_total", "counter", "Leases handed out.",
         [](const PoolStats& s) -> std::uint64_t { return s.acquired; }},
        {"connpool_pool_acquire_timeouts_total", "counter", "Acquires that gave up at their deadline.",
         [](const PoolStats& s) -> std::uint64_t { return s.timeouts; }},
        {"connpool_pool_connections_created_total", "counter", "Connections created.",
         [](const PoolStats& s) -> std::uint64_t { return s.created; }},
        {"connpool_pool_connections_destroyed_total", "counter", "Connections destroyed.",
         [](const PoolStats& s) -> std::uint64_t { return s.destroyed; }},
        {"connpool_pool_create_failures_total", "counter", "Connection creations that failed.",
         [](const PoolStats& s) -> std::uint64_t { return s.create_failures; }},
        {"connpool_pool_validation_failures_total", "counter", "Idle connections found dead by validation.",
         [](const PoolStats& s) -> std::uint64_t { return s.validation_failures; }},
        {"connpool_pool_discarded_total", "counter", "Leases ended by discarding their connection as broken.",
         [](const PoolStats& s) -> std::uint64_t { return s.discarded; }},
        {"connpool_pool_leaks_total", "counter", "Leases reported as held past the leak threshold.",
         [](const PoolStats& s) -> std::uint64_t { return s.leaks; }},
    }};
    for (const auto& f : pool_families) {
        family(out, f.name, f.type, f.help);
        for (std::size_t i = 0; i < m.pools.size(); ++i)
            if (m.pools[i].stats) sample(out, f.name, pool_labels[i], f.get(*m.pools[i].stats));
    }
    family(out, "connpool_pool_acquire_wait_seconds", "histogram", "Time acquires waited for a connection.");
    for (std::size_t i = 0; i < m.pools.size(); ++i) {
        const auto& h = m.pools[i].acquire_wait;
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b < h.counts.size(); ++b) {
            cumulative += h.counts[b];
            std::string labels = pool_labels[i] + ",le=\"";
            if (b < h.bounds.size()) {
                detail::append_number(labels, h.bounds[b]);
            } else {
                labels += "+Inf";
            }
            labels += '"';
            sample(out, "connpool_pool_acquire_wait_seconds_bucket", labels, cumulative);
        }
        sample(out, "connpool_pool_acquire_wait_seconds_sum", pool_labels[i], h.sum);
        sample(out, "connpool_pool_acquire_wait_seconds_count", pool_labels[i], cumulative);
    }

    // ---- jobs: aggregates over all of them ----
    static constexpr std::array<JobState, 5> states{JobState::queued, JobState::running, JobState::succeeded,
                                                    JobState::failed, JobState::cancelled};
    family(out, "connpool_jobs", "gauge", "Jobs by state: queued and running now; ended ones since the start.");
    for (const auto s : states) {
        std::string labels = "state=\"";
        labels += to_string(s);
        labels += '"';
        sample(out, "connpool_jobs", labels, m.jobs_by_state[static_cast<std::size_t>(s)]);
    }
    family(out, "connpool_jobs_ended_total", "counter", "Jobs that ended, by kind and end state.");
    for (const auto k : {JobKind::backup, JobKind::restore}) {
        for (const auto s : {JobState::succeeded, JobState::failed, JobState::cancelled}) {
            std::string labels = "kind=\"";
            labels += to_string(k);
            labels += "\",state=\"";
            labels += to_string(s);
            labels += '"';
            sample(out, "connpool_jobs_ended_total", labels,
                   m.ended_by_kind[static_cast<std::size_t>(k)][static_cast<std::size_t>(s)]);
        }
    }

    // ---- jobs: one series per (name, kind), the newest job of each ----
    std::vector<std::size_t> shown;
    std::vector<std::string> job_labels(m.jobs.size()); // sized once: the set below views into it
    {
        std::unordered_set<std::string_view> seen;
        seen.reserve(m.jobs.size() * 2);
        for (std::size_t i = m.jobs.size(); i-- > 0;) {
            std::string& l = job_labels[i];
            l = "name=\"";
            detail::append_clean_label_value(l, m.jobs[i].name);
            l += "\",kind=\"";
            l += to_string(m.jobs[i].kind);
            l += '"';
            if (!seen.insert(l).second) continue;
            shown.push_back(i);
        }
        std::reverse(shown.begin(), shown.end());
    }
    family(out, "connpool_job_state", "gauge", "A job's current state (1 for the state it is in).");
    for (const auto i : shown) {
        out += "connpool_job_state{";
        out += job_labels[i];
        out += ",state=\"";
        out += to_string(m.jobs[i].state);
        out += "\"} 1\n";
    }
    family(out, "connpool_job_progress_ratio", "gauge", "Fraction of a job's work done, 0 to 1 (when its total is known).");
    for (const auto i : shown)
        if (const auto f = m.jobs[i].fraction()) sample(out, "connpool_job_progress_ratio", job_labels[i], *f);
    std::vector<std::string> unit_labels(m.jobs.size());
    for (const auto i : shown) {
        std::string& l = unit_labels[i];
        l = ",unit=\"";
        if (m.jobs[i].unit.empty()) {
            l += "units";
        } else {
            detail::append_clean_label_value(l, m.jobs[i].unit);
        }
        l += '"';
    }
    family(out, "connpool_job_work_done", "gauge", "Units of work a job has done (label unit says what they are).");
    for (const auto i : shown) sample(out, "connpool_job_work_done", job_labels[i], m.jobs[i].done, unit_labels[i]);
    family(out, "connpool_job_work_expected", "gauge", "Units of work a job has in all, when known.");
    for (const auto i : shown)
        if (m.jobs[i].total != 0) sample(out, "connpool_job_work_expected", job_labels[i], m.jobs[i].total, unit_labels[i]);
    family(out, "connpool_job_elapsed_seconds", "gauge", "Time a job has been running (holding a connection).");
    for (const auto i : shown)
        sample(out, "connpool_job_elapsed_seconds", job_labels[i], detail::to_seconds(m.jobs[i].elapsed));
    family(out, "connpool_job_waited_seconds", "gauge", "Time a job waited for a connection.");
    for (const auto i : shown)
        sample(out, "connpool_job_waited_seconds", job_labels[i], detail::to_seconds(m.jobs[i].waited));
    family(out, "connpool_job_eta_seconds", "gauge", "Estimated time until a running job ends (when known).");
    for (const auto i : shown)
        if (m.jobs[i].eta) sample(out, "connpool_job_eta_seconds", job_labels[i], detail::to_seconds(*m.jobs[i].eta));
    family(out, "connpool_job_restarts", "gauge", "Times a job's operation started over.");
    for (const auto i : shown) sample(out, "connpool_job_restarts", job_labels[i], m.jobs[i].restarts);

    // ---- per job name, however many jobs there were ----
    family(out, "connpool_job_last_success_timestamp_seconds", "gauge",
           "When a job of this name and kind last succeeded, in seconds since the Unix epoch.");
    for (const auto& s : m.last_success) {
        out += "connpool_job_last_success_timestamp_seconds{name=\"";
        detail::append_clean_label_value(out, s.name);
        out += "\",kind=\"";
        out += to_string(s.kind);
        out += "\"} ";
        detail::append_number(out, detail::seconds_since_epoch(s.time));
        out += '\n';
    }
    return out;
}

/// Writes `text` (render_prometheus()) to `path` for node_exporter's textfile collector,
/// atomically: the collector reads the old file or the new one, never a part. `path` should end
/// in ".prom" and be in the collector's directory. Throws std::runtime_error naming the file.
inline void write_textfile(const std::filesystem::path& path, std::string_view text) {
    detail::replace_file(path, text, 0644);
}

/// Keeps a node_exporter textfile up to date from its own thread: writes `render()` to `path`
/// at once, every `period`, and a last time on stop(), so even a backup process that lives a few
/// seconds leaves its final metrics behind. A write that fails goes to `on_error` (the writer
/// keeps trying); the default ignores it.
class TextfileWriter {
public:
    /// Produces the text to write, e.g. `[&hub] { return render_prometheus(hub.metrics()); }`.
    using Source = std::function<std::string()>;

    /// Starts writing `render()` to `path` every `period`. Whatever `render` reads must outlive
    /// the writer (or its stop()).
    TextfileWriter(std::filesystem::path path, Source render, std::chrono::milliseconds period,
                   std::function<void(const std::exception&)> on_error = {})
        : path_(std::move(path)), render_(std::move(render)), period_(period), on_error_(std::move(on_error)),
          thread_([this] { loop(); }) {}

    TextfileWriter(const TextfileWriter&) = delete;
    TextfileWriter& operator=(const TextfileWriter&) = delete;

    /// Stops, as stop() does.
    ~TextfileWriter() { stop(); }

    /// Stops the thread and writes the file a last time. Idempotent; call from one thread.
    void stop() {
        if (!thread_.joinable()) return;
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        cv_.notify_all();
        thread_.join();
        write();
    }

private:
    void write() {
        try {
            write_textfile(path_, render_());
        } catch (const std::exception& e) {
            if (on_error_) on_error_(e);
        }
    }

    void loop() {
        std::unique_lock lock(mu_);
        while (!stopping_) {
            lock.unlock();
            write();
            lock.lock();
            cv_.wait_for(lock, period_, [this] { return stopping_; });
        }
    }

    std::filesystem::path path_;
    Source render_;
    std::chrono::milliseconds period_;
    std::function<void(const std::exception&)> on_error_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false; // guarded by mu_
    std::thread thread_;    // last: starts after everything it reads is initialized
};

} // namespace connpool::monitor
