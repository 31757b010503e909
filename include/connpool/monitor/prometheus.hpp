#pragma once

// Prometheus text exposition, format 0.0.4, of pools and jobs, for a scrape endpoint
// (monitor/http.hpp) and for node_exporter's textfile collector (write_textfile()).
//
// Cardinality is bounded whatever the number of jobs: per-job series (labels name, kind) exist
// only for the jobs a Hub still holds (queued, running and HubOptions::keep_ended most recent
// ended ones; when two share a name and kind, the newest one), per-state and per-kind counts
// cover every job, and connpool_job_last_success_timestamp_seconds keeps one series per job
// name (HubOptions::keep_names at most). The job's name is the `name` label: Prometheus adds a
// `job` label of its own. Sets (Hub::track_set, e.g. a whole database backup) have their own
// connpool_set_* series, labels name and kind, as bounded as the jobs'.

#include <algorithm> // std::reverse, std::copy
#include <cstdlib>   // std::abs
#include <array>
#include <charconv> // std::to_chars: fast, locale-independent numbers
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring> // std::memcpy
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

/// What a label value's bytes need: bit 1, maybe clean() (non-ASCII, and '=' and ':', which
/// every secret pattern needs); bit 2, escaping (backslash, double quote, newline).
inline constexpr std::array<unsigned char, 256> label_byte_class = [] {
    std::array<unsigned char, 256> t{};
    for (std::size_t c = 0x80; c < 256; ++c) t[c] = 1;
    t['='] = t[':'] = 1;
    t['\\'] = t['"'] = t['\n'] = 2;
    return t;
}();

/// Returns label_byte_class of every byte of `text`, or-ed together: 0 for the usual name, which
/// is then copied as it is.
inline unsigned label_needs(std::string_view text) noexcept {
    unsigned needs = 0;
    for (const char c : text) needs |= label_byte_class[static_cast<unsigned char>(c)];
    return needs;
}

/// Appends `value` escaped as a label value: backslash, double quote and newline.
inline void append_escaped(std::string& out, std::string_view value) {
    for (const char c : value) {
        switch (c) {
        case '\\': out += "\\\\"; break;
        case '"': out += "\\\""; break;
        case '\n': out += "\\n"; break;
        default: out += c;
        }
    }
}

/// Appends `value` clean()ed and escaped as a label value, copying it as it is when neither
/// can change it (the common case: one scan, one copy).
inline void append_clean_label_value(std::string& out, std::string_view value) {
    const unsigned needs = label_needs(value);
    if (needs == 0) {
        out += value;
    } else if ((needs & 1) != 0) {
        const std::string cleaned = clean(value);
        if ((label_needs(cleaned) & 2) != 0) {
            append_escaped(out, cleaned);
        } else {
            out += cleaned;
        }
    } else {
        append_escaped(out, value);
    }
}

/// Writes `d` in seconds into [first, last) (at least 32 bytes) as std::to_chars(first, last,
/// to_seconds(d)) does, and returns the end. std::to_chars of a double is the renderer's largest
/// cost; this takes its result from the integer instead, when that is provably the same text:
/// for 0 <= ns < 2^53 the double is ns / 1e9 correctly rounded, so when the decimal ns * 10^-9
/// has at most 15 significant digits, no other decimal with as few digits lies within an ulp of
/// it, and the shortest round-trip digits are exactly its own. Then, as to_chars does, the
/// plain form is written unless the scientific one is shorter. Otherwise: std::to_chars.
inline char* append_seconds(char* first, char* last, std::chrono::nanoseconds d) {
    const auto ns = d.count();
    if (ns < 0 || ns >= (std::int64_t{1} << 53)) return std::to_chars(first, last, to_seconds(d)).ptr;
    if (ns == 0) {
        *first = '0';
        return first + 1;
    }
    char digits[24]{}; // zeroed: g++ cannot see that to_chars writes what the loop below reads
    char* end = std::to_chars(digits, digits + sizeof digits, static_cast<std::uint64_t>(ns)).ptr;
    int power = -9; // value = digits * 10^power
    while (end[-1] == '0') {
        --end;
        ++power;
    }
    const auto m = static_cast<int>(end - digits);
    if (m > 15) return std::to_chars(first, last, to_seconds(d)).ptr;
    const int exponent = m - 1 + power;                 // of the scientific form d.ddde±XX
    const int exponent_digits = std::abs(exponent) >= 100 ? 3 : 2;
    const int scientific = m + (m > 1 ? 1 : 0) + 2 + exponent_digits;
    const int plain = power >= 0 ? m + power : (m > -power ? m + 1 : 2 - power);
    char* out = first;
    if (scientific < plain) {
        *out++ = digits[0];
        if (m > 1) {
            *out++ = '.';
            out = std::copy(digits + 1, end, out);
        }
        *out++ = 'e';
        *out++ = exponent < 0 ? '-' : '+';
        const int e = std::abs(exponent);
        if (e >= 100) *out++ = static_cast<char>('0' + e / 100);
        *out++ = static_cast<char>('0' + e / 10 % 10);
        *out++ = static_cast<char>('0' + e % 10);
    } else if (power >= 0) {
        out = std::copy(digits, end, out);
        out = std::fill_n(out, power, '0');
    } else if (m > -power) {
        out = std::copy(digits, end + power, out);
        *out++ = '.';
        out = std::copy(end + power, end, out);
    } else {
        *out++ = '0';
        *out++ = '.';
        out = std::fill_n(out, -power - m, '0');
        out = std::copy(digits, end, out);
    }
    return out;
}

/// One output buffer that the renderer writes into through a pointer. Its capacity is reserved
/// once for the whole text (see render_prometheus()), so a write is a bounds check and a memcpy,
/// never a reallocation, and numbers go through std::to_chars straight into it. The string is
/// extended 64 KiB at a time, so the zero-fill std::string does happens in cache just before the
/// text overwrites it. Each write first makes room for itself, so a text longer than estimated
/// grows the buffer and stays right.
class PromText {
public:
    explicit PromText(std::size_t capacity) {
        out_.reserve(capacity);
        at_ = end_ = out_.data();
    }

    [[gnu::always_inline]] void put(std::string_view s) {
        if (s.empty()) return; // its data() may be null, which memcpy must not get
        room(s.size());
        std::memcpy(at_, s.data(), s.size());
        at_ += s.size();
    }

    [[gnu::always_inline]] void put(char c) {
        room(1);
        *at_++ = c;
    }

    void number(double v) {
        if (std::isnan(v)) {
            put("NaN");
        } else if (std::isinf(v)) {
            put(v > 0 ? "+Inf" : "-Inf");
        } else {
            room(32); // the longest shortest-round-trip double is 24 characters
            at_ = std::to_chars(at_, end_, v).ptr;
        }
    }

    void number(std::uint64_t v) {
        room(24);
        at_ = std::to_chars(at_, end_, v).ptr;
    }

    /// Appends `d` in seconds exactly as number(to_seconds(d)) would, several times faster:
    /// see append_seconds().
    void number(std::chrono::nanoseconds d) {
        room(32);
        at_ = append_seconds(at_, end_, d);
    }

    /// Appends `# HELP name help\n# TYPE name type\n`; `help` is our own constant text, with no
    /// backslash or newline to escape.
    void family(std::string_view name, std::string_view type, std::string_view help) {
        put("# HELP ");
        put(name);
        put(' ');
        put(help);
        put("\n# TYPE ");
        put(name);
        put(' ');
        put(type);
        put('\n');
    }

    /// Appends `name{labels<more>} value\n`; `labels` and `more` are already rendered
    /// (`pool="x"`, `,state="idle"`), so a series' common labels are rendered once.
    template <class V>
    void sample(std::string_view name, std::string_view labels, V value, std::string_view more = {}) {
        put(name);
        if (!labels.empty() || !more.empty()) {
            put('{');
            put(labels);
            put(more);
            put('}');
        }
        put(' ');
        number(value);
        put('\n');
    }

    /// Appends `value` clean()ed and escaped as a label value.
    void label_value(std::string_view value) {
        if (label_needs(value) == 0) return put(value);
        scratch_.clear();
        append_clean_label_value(scratch_, value);
        put(scratch_);
    }

    /// Returns the text written, and leaves the buffer empty.
    std::string take() {
        out_.resize(static_cast<std::size_t>(at_ - out_.data()));
        at_ = end_ = nullptr;
        return std::move(out_);
    }

private:
    [[gnu::always_inline]] void room(std::size_t n) {
        if (static_cast<std::size_t>(end_ - at_) < n) extend(n);
    }

    void extend(std::size_t n) {
        static constexpr std::size_t chunk = 64 * 1024;
        const auto used = static_cast<std::size_t>(at_ - out_.data());
        out_.resize(used + std::max(n, chunk)); // within the capacity reserved, unless the estimate was short
        at_ = out_.data() + used;
        end_ = out_.data() + out_.size();
    }

    std::string out_; // [data(), at_) is written; [at_, end_) is room
    char* at_ = nullptr;
    char* end_ = nullptr;
    std::string scratch_;
};

inline double seconds_since_epoch(std::chrono::system_clock::time_point t) {
    return std::chrono::duration<double>(t.time_since_epoch()).count();
}

/// The per-job label texts, `name="...",kind="..."` and `,unit="..."` of every job, rendered
/// once into one arena (not a string per job) and viewed from there.
class JobLabels {
public:
    explicit JobLabels(const std::vector<Progress>& jobs) {
        std::size_t bytes = 0;
        for (const auto& p : jobs) bytes += p.name.size() + p.unit.size() + 32;
        arena_.reserve(bytes); // a hostile name may need more: only a reallocation, offsets stay valid
        spans_.reserve(jobs.size());
        for (const auto& p : jobs) {
            Span s;
            s.job = arena_.size();
            arena_ += "name=\"";
            append_clean_label_value(arena_, p.name);
            arena_ += "\",kind=\"";
            arena_ += to_string(p.kind);
            arena_ += '"';
            s.unit = arena_.size();
            arena_ += ",unit=\"";
            if (p.unit.empty()) {
                arena_ += "units";
            } else {
                append_clean_label_value(arena_, p.unit);
            }
            arena_ += '"';
            s.end = arena_.size();
            spans_.push_back(s);
        }
    }

    /// Returns job i's `name="...",kind="..."`.
    [[nodiscard]] std::string_view job(std::size_t i) const noexcept {
        return std::string_view(arena_).substr(spans_[i].job, spans_[i].unit - spans_[i].job);
    }
    /// Returns job i's `,unit="..."`.
    [[nodiscard]] std::string_view unit(std::size_t i) const noexcept {
        return std::string_view(arena_).substr(spans_[i].unit, spans_[i].end - spans_[i].unit);
    }

private:
    struct Span {
        std::size_t job = 0, unit = 0, end = 0;
    };
    std::string arena_;
    std::vector<Span> spans_;
};

} // namespace detail

/// Returns the Prometheus text (0.0.4) of `m`: each family once, with HELP and TYPE; label values
/// clean()ed and escaped; base units; counters ending in _total; the acquire-wait histogram with
/// cumulative buckets whose +Inf bucket equals its _count.
inline std::string render_prometheus(const MetricsSnapshot& m) {
    // ---- jobs' labels first: they size the buffer ----
    const detail::JobLabels labels(m.jobs);
    std::vector<std::size_t> shown; // one per (name, kind), the newest job of each
    {
        std::unordered_set<std::string_view> seen;
        seen.reserve(m.jobs.size() * 2);
        for (std::size_t i = m.jobs.size(); i-- > 0;)
            if (seen.insert(labels.job(i)).second) shown.push_back(i);
        std::reverse(shown.begin(), shown.end());
    }
    // The whole text's size, reserved at once: a shown job has 8 series with its labels (2 with
    // its unit) and at most ~56 bytes each of family name, state and number besides. A longer
    // text (a last-success name that grows when cleaned) only costs a reallocation.
    std::size_t capacity = 8192 + m.pools.size() * 4096;
    for (const auto i : shown) capacity += 8 * labels.job(i).size() + 2 * labels.unit(i).size() + 8 * 56;
    for (const auto& s : m.last_success) capacity += 2 * s.name.size() + 112;
    detail::PromText out(capacity);

    // ---- pools ----
    std::string pool_arena; // pool="<name>" of each pool, rendered once
    std::vector<std::size_t> pool_ends;
    for (const auto& p : m.pools) {
        pool_arena += "pool=\"";
        detail::append_clean_label_value(pool_arena, p.name);
        pool_arena += '"';
        pool_ends.push_back(pool_arena.size());
    }
    const auto pool_label = [&](std::size_t i) {
        const std::size_t begin = i == 0 ? 0 : pool_ends[i - 1];
        return std::string_view(pool_arena).substr(begin, pool_ends[i] - begin);
    };
    struct Gauge {
        std::string_view name, type, help;
        std::uint64_t (*get)(const PoolStats&);
    };
    out.family("connpool_pool_connections", "gauge", "Connections open in the pool, by state (idle or in_use).");
    for (std::size_t i = 0; i < m.pools.size(); ++i) {
        if (!m.pools[i].stats) continue;
        out.sample("connpool_pool_connections", pool_label(i), std::uint64_t{m.pools[i].stats->idle}, ",state=\"idle\"");
        out.sample("connpool_pool_connections", pool_label(i), std::uint64_t{m.pools[i].stats->in_use}, ",state=\"in_use\"");
    }
    static constexpr std::array<Gauge, 14> pool_families{{
        {"connpool_pool_max_connections", "gauge", "Most connections the pool may open (max_size).",
         [](const PoolStats& s) -> std::uint64_t { return s.max_size; }},
        {"connpool_pool_waiting_threads", "gauge", "Threads waiting in acquire for a connection.",
         [](const PoolStats& s) -> std::uint64_t { return s.waiting; }},
        {"connpool_pool_pending_creates", "gauge", "Connection creations in flight (create() running).",
         [](const PoolStats& s) -> std::uint64_t { return s.creating; }},
        {"connpool_pool_paused", "gauge", "1 while the pool is paused (acquires wait for resume), else 0.",
         [](const PoolStats& s) -> std::uint64_t { return s.paused ? 1 : 0; }},
        {"connpool_pool_acquires_total", "counter", "Leases handed out.",
         [](const PoolStats& s) -> std::uint64_t { return s.acquired; }},
        {"connpool_pool_acquire_timeouts_total", "counter", "Acquires that gave up at their deadline.",
         [](const PoolStats& s) -> std::uint64_t { return s.timeouts; }},
        {"connpool_pool_acquire_cancellations_total", "counter", "Acquires called off by a stop request.",
         [](const PoolStats& s) -> std::uint64_t { return s.cancelled; }},
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
        {"connpool_pool_retirements_total", "counter", "Calls of retire_all(), each replacing every connection.",
         [](const PoolStats& s) -> std::uint64_t { return s.retirements; }},
    }};
    for (const auto& f : pool_families) {
        out.family(f.name, f.type, f.help);
        for (std::size_t i = 0; i < m.pools.size(); ++i)
            if (m.pools[i].stats) out.sample(f.name, pool_label(i), f.get(*m.pools[i].stats));
    }
    out.family("connpool_pool_acquire_wait_seconds", "histogram", "Time acquires waited for a connection.");
    for (std::size_t i = 0; i < m.pools.size(); ++i) {
        const auto& h = m.pools[i].acquire_wait;
        if (h.counts.empty()) continue; // not watched: no histogram to show
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b < h.counts.size(); ++b) {
            cumulative += h.counts[b];
            out.put("connpool_pool_acquire_wait_seconds_bucket{");
            out.put(pool_label(i));
            out.put(",le=\"");
            if (b < h.bounds.size()) {
                out.number(h.bounds[b]);
            } else {
                out.put("+Inf");
            }
            out.put("\"} ");
            out.number(cumulative);
            out.put('\n');
        }
        out.sample("connpool_pool_acquire_wait_seconds_sum", pool_label(i), h.sum);
        out.sample("connpool_pool_acquire_wait_seconds_count", pool_label(i), cumulative);
    }

    // ---- jobs: aggregates over all of them ----
    static constexpr std::array<JobState, 5> states{JobState::queued, JobState::running, JobState::succeeded,
                                                    JobState::failed, JobState::cancelled};
    out.family("connpool_jobs", "gauge", "Jobs by state: queued and running now; ended ones since the start.");
    for (const auto s : states) {
        out.put("connpool_jobs{state=\"");
        out.put(to_string(s));
        out.put("\"} ");
        out.number(m.jobs_by_state[static_cast<std::size_t>(s)]);
        out.put('\n');
    }
    out.family("connpool_jobs_ended_total", "counter", "Jobs that ended, by kind and end state.");
    for (const auto k : {JobKind::backup, JobKind::restore}) {
        for (const auto s : {JobState::succeeded, JobState::failed, JobState::cancelled}) {
            out.put("connpool_jobs_ended_total{kind=\"");
            out.put(to_string(k));
            out.put("\",state=\"");
            out.put(to_string(s));
            out.put("\"} ");
            out.number(m.ended_by_kind[static_cast<std::size_t>(k)][static_cast<std::size_t>(s)]);
            out.put('\n');
        }
    }

    // ---- jobs: one series per (name, kind), the newest job of each ----
    out.family("connpool_job_state", "gauge", "A job's current state (1 for the state it is in).");
    for (const auto i : shown) {
        out.put("connpool_job_state{");
        out.put(labels.job(i));
        out.put(",state=\"");
        out.put(to_string(m.jobs[i].state));
        out.put("\"} 1\n");
    }
    out.family("connpool_job_progress_ratio", "gauge", "Fraction of a job's work done, 0 to 1 (when its total is known).");
    for (const auto i : shown)
        if (const auto f = m.jobs[i].fraction()) out.sample("connpool_job_progress_ratio", labels.job(i), *f);
    out.family("connpool_job_work_done", "gauge", "Units of work a job has done (label unit says what they are).");
    for (const auto i : shown) out.sample("connpool_job_work_done", labels.job(i), m.jobs[i].done, labels.unit(i));
    out.family("connpool_job_work_expected", "gauge", "Units of work a job has in all, when known.");
    for (const auto i : shown)
        if (m.jobs[i].total != 0) out.sample("connpool_job_work_expected", labels.job(i), m.jobs[i].total, labels.unit(i));
    out.family("connpool_job_elapsed_seconds", "gauge", "Time a job has been running (holding a connection).");
    for (const auto i : shown)
        out.sample("connpool_job_elapsed_seconds", labels.job(i), m.jobs[i].elapsed);
    out.family("connpool_job_waited_seconds", "gauge", "Time a job waited for a connection.");
    for (const auto i : shown)
        out.sample("connpool_job_waited_seconds", labels.job(i), m.jobs[i].waited);
    out.family("connpool_job_eta_seconds", "gauge", "Estimated time until a running job ends (when known).");
    for (const auto i : shown)
        if (m.jobs[i].eta) out.sample("connpool_job_eta_seconds", labels.job(i), *m.jobs[i].eta);
    out.family("connpool_job_restarts", "gauge", "Times a job's operation started over.");
    for (const auto i : shown) out.sample("connpool_job_restarts", labels.job(i), m.jobs[i].restarts);

    // ---- per job name, however many jobs there were ----
    out.family("connpool_job_last_success_timestamp_seconds", "gauge",
               "When a job of this name and kind last succeeded, in seconds since the Unix epoch.");
    for (const auto& s : m.last_success) {
        out.put("connpool_job_last_success_timestamp_seconds{name=\"");
        out.label_value(s.name);
        out.put("\",kind=\"");
        out.put(to_string(s.kind));
        out.put("\"} ");
        out.number(detail::seconds_since_epoch(s.time));
        out.put('\n');
    }

    // ---- sets (Hub::track_set): one series per (name, kind), the newest set of each; as
    // bounded as the jobs' (running sets and the HubOptions::keep_ended most recent ended) ----
    if (m.sets.empty()) return out.take(); // no set families for a program that has none
    std::vector<std::string> set_labels;
    std::vector<std::size_t> sets_shown;
    {
        set_labels.reserve(m.sets.size());
        for (const auto& set : m.sets) {
            std::string l = "name=\"";
            detail::append_clean_label_value(l, set.name);
            l += "\",kind=\"";
            l += to_string(set.kind);
            l += '"';
            set_labels.push_back(std::move(l));
        }
        std::unordered_set<std::string_view> seen;
        for (std::size_t i = m.sets.size(); i-- > 0;)
            if (seen.insert(set_labels[i]).second) sets_shown.push_back(i);
        std::reverse(sets_shown.begin(), sets_shown.end());
    }
    const auto set_unit = [&](std::size_t i) {
        std::string u = ",unit=\"";
        detail::append_clean_label_value(u, m.sets[i].unit.empty() ? std::string_view("units") : std::string_view(m.sets[i].unit));
        return u + '"';
    };
    out.family("connpool_set_state", "gauge", "A set's (e.g. a database backup's) current state (1 for the state it is in).");
    for (const auto i : sets_shown) {
        out.put("connpool_set_state{");
        out.put(set_labels[i]);
        out.put(",state=\"");
        out.put(to_string(m.sets[i].state));
        out.put("\"} 1\n");
    }
    out.family("connpool_set_progress_ratio", "gauge", "Fraction of a set's work done over all its jobs, 0 to 1 (when its total is known).");
    for (const auto i : sets_shown)
        if (const auto f = m.sets[i].fraction()) out.sample("connpool_set_progress_ratio", set_labels[i], *f);
    out.family("connpool_set_work_done", "gauge", "Units of work a set's jobs have done (label unit says what they are).");
    for (const auto i : sets_shown) out.sample("connpool_set_work_done", set_labels[i], m.sets[i].done, set_unit(i));
    out.family("connpool_set_work_expected", "gauge", "Units of work a set's jobs have in all, when known.");
    for (const auto i : sets_shown)
        if (m.sets[i].total != 0) out.sample("connpool_set_work_expected", set_labels[i], m.sets[i].total, set_unit(i));
    out.family("connpool_set_jobs", "gauge", "Jobs in a set (e.g. tables).");
    for (const auto i : sets_shown) out.sample("connpool_set_jobs", set_labels[i], std::uint64_t{m.sets[i].jobs});
    out.family("connpool_set_jobs_ended", "gauge", "Jobs of a set that have ended.");
    for (const auto i : sets_shown) out.sample("connpool_set_jobs_ended", set_labels[i], std::uint64_t{m.sets[i].jobs_done});
    out.family("connpool_set_elapsed_seconds", "gauge", "Time since a set started.");
    for (const auto i : sets_shown) out.sample("connpool_set_elapsed_seconds", set_labels[i], m.sets[i].elapsed);
    out.family("connpool_set_eta_seconds", "gauge", "Estimated time until a running set ends (when known).");
    for (const auto i : sets_shown)
        if (m.sets[i].eta) out.sample("connpool_set_eta_seconds", set_labels[i], *m.sets[i].eta);
    return out.take();
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
