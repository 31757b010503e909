#pragma once

// JSON lines: one object per line for job events and pool events, for log shippers and scripts
// (`jq`), in the manner of mydumper's --machine-log-json. Every line has schema_version, seq (one
// more than the line before it), time (RFC 3339, UTC) and event; job lines carry DESIGN.md's
// job, kind, state, done, total and unit; readers must ignore fields they do not know, so new
// fields do not bump schema_version.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <connpool/jobs.hpp>
#include <connpool/monitor/hub.hpp>
#include <connpool/monitor/redact.hpp>

namespace connpool::monitor {

/// The JSON-lines format's version; bumped only when a field changes meaning or goes away.
inline constexpr int json_lines_schema_version = 1;

/// Returns `t` as RFC 3339 in UTC with milliseconds: "2026-12-01T22:03:04.250Z".
inline std::string rfc3339(std::chrono::system_clock::time_point t) {
    const auto ms = std::chrono::floor<std::chrono::milliseconds>(t);
    const auto seconds = std::chrono::floor<std::chrono::seconds>(ms);
    const std::time_t tt = std::chrono::system_clock::to_time_t(seconds);
    std::tm utc{};
    ::gmtime_r(&tt, &utc);
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                  utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int>((ms - seconds).count()));
    return buffer;
}

/// Returns a job's progress as a JSON object (the fields of a job line after "event", and an
/// element of the HTTP endpoint's /jobs): job, id, kind, state, done, total, unit, phase,
/// elapsed_seconds, waited_seconds, rate, eta_seconds (when known), restarts, retries, error
/// (when failed). Texts are clean()ed.
inline nlohmann::ordered_json to_json(const Progress& p) {
    nlohmann::ordered_json j;
    j["job"] = clean(p.name);
    j["id"] = p.id;
    j["kind"] = to_string(p.kind);
    j["state"] = to_string(p.state);
    j["done"] = p.done;
    j["total"] = p.total;
    j["unit"] = clean(p.unit);
    if (!p.phase.empty()) j["phase"] = clean(p.phase);
    j["elapsed_seconds"] = detail::to_seconds(p.elapsed);
    j["waited_seconds"] = detail::to_seconds(p.waited);
    j["rate"] = p.rate;
    if (p.eta) j["eta_seconds"] = detail::to_seconds(*p.eta);
    j["restarts"] = p.restarts;
    j["retries"] = p.retries;
    if (p.state == JobState::failed || !p.error.empty()) j["error"] = clean(p.error);
    return j;
}

/// Returns a JSON array of `jobs` (each as to_json()), as one line of text.
inline std::string jobs_json(const std::vector<Progress>& jobs) {
    auto array = nlohmann::ordered_json::array();
    for (const auto& p : jobs) array.push_back(to_json(p));
    return array.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

/// Returns a set's progress as a JSON object (the fields of a set line after "event", and an
/// element of the HTTP endpoint's /sets): set, kind, state, done, total, unit, jobs_done, jobs,
/// elapsed_seconds, rate, eta_seconds (when known), error (when failed). Texts are clean()ed.
inline nlohmann::ordered_json to_json(const SetProgress& p) {
    nlohmann::ordered_json j;
    j["set"] = clean(p.name);
    j["kind"] = to_string(p.kind);
    j["state"] = to_string(p.state);
    j["done"] = p.done;
    j["total"] = p.total;
    j["unit"] = clean(p.unit);
    j["jobs_done"] = p.jobs_done;
    j["jobs"] = p.jobs;
    j["elapsed_seconds"] = detail::to_seconds(p.elapsed);
    j["rate"] = p.rate;
    if (p.eta) j["eta_seconds"] = detail::to_seconds(*p.eta);
    if (p.state == JobState::failed || !p.error.empty()) j["error"] = clean(p.error);
    return j;
}

/// Returns a JSON array of `sets` (each as to_json()), as one line of text.
inline std::string sets_json(const std::vector<SetProgress>& sets) {
    auto array = nlohmann::ordered_json::array();
    for (const auto& p : sets) array.push_back(to_json(p));
    return array.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

/// How a JsonLinesSink writes. Every field has a default.
struct JsonLinesOptions {
    /// Least time between two "job.progress" lines of one job (and two "set.progress" lines of
    /// one set); the other events are always written. Default 1 s; 0 = every progress callback.
    std::chrono::milliseconds progress_interval{1000};
};

/// A Sink that writes one JSON object per line to a stream: "job.queued", "job.started",
/// "job.progress" (throttled), "job.phase", "job.ended" (with the end state, and "error" when
/// failed), and "pool.<kind>" for pool events ("pool.created", "pool.destroyed" with its
/// "reason", "pool.timeout" with the pool's "stats" at the time, "pool.leak" with the call
/// "site", "pool.create_failed" with its "error"), and "set.started", "set.progress"
/// (throttled), "set.ended" for sets (Hub::track_set: a whole database backup's totals, with
/// "set_key"). Thread-safe; each line is written and flushed
/// whole under a lock, so lines never interleave.
class JsonLinesSink : public Sink {
public:
    /// Writes to `out` (not owned; must outlive the sink).
    explicit JsonLinesSink(std::ostream& out, JsonLinesOptions options = {}) : out_(out), options_(options) {}

    /// Writes the job event's line (progress lines at most once per progress_interval per job).
    void on_job(const JobEvent& e) override {
        const Progress& p = *e.progress;
        nlohmann::ordered_json line = header(e.time, "job." + std::string(to_string(e.type)));
        nlohmann::ordered_json body = to_json(p); // named: a temporary would die before the loop body
        for (auto it = body.begin(); it != body.end(); ++it) line[it.key()] = std::move(it.value());
        line["job_key"] = e.key;
        std::lock_guard lock(mu_);
        if (e.type == JobEventType::progress) {
            auto [it, fresh] = last_progress_.try_emplace(e.key, e.time);
            if (!fresh) {
                if (e.time - it->second < options_.progress_interval) return;
                it->second = e.time;
            }
        } else if (e.type == JobEventType::ended) {
            last_progress_.erase(e.key);
        }
        write_locked(line);
    }

    /// Writes the set event's line (progress lines at most once per progress_interval per set).
    void on_set(const SetEvent& e) override {
        nlohmann::ordered_json line = header(e.time, "set." + std::string(to_string(e.type)));
        nlohmann::ordered_json body = to_json(*e.progress);
        for (auto it = body.begin(); it != body.end(); ++it) line[it.key()] = std::move(it.value());
        line["set_key"] = e.key;
        std::lock_guard lock(mu_);
        if (e.type == JobEventType::progress) {
            auto [it, fresh] = last_set_progress_.try_emplace(e.key, e.time);
            if (!fresh) {
                if (e.time - it->second < options_.progress_interval) return;
                it->second = e.time;
            }
        } else if (e.type == JobEventType::started) {
            last_set_progress_[e.key] = e.time; // a set's first line counts as its first progress line
        } else if (e.type == JobEventType::ended) {
            last_set_progress_.erase(e.key);
        }
        write_locked(line);
    }

    /// Writes the pool event's line.
    void on_pool(const PoolEventRecord& e) override {
        nlohmann::ordered_json line = header(e.time, "pool." + std::string(to_string(e.kind)));
        line["pool"] = clean(e.pool);
        line["slot"] = e.slot;
        switch (e.kind) {
        case PoolEventKind::created: line["create_seconds"] = detail::to_seconds(e.duration); break;
        case PoolEventKind::create_failed: line["error"] = clean(e.detail); break;
        case PoolEventKind::destroyed: line["reason"] = clean(e.detail); break;
        case PoolEventKind::timeout: line["waited_seconds"] = detail::to_seconds(e.duration); break;
        case PoolEventKind::leak: line["held_seconds"] = detail::to_seconds(e.duration); break;
        default:
            if (!e.detail.empty()) line["detail"] = clean(e.detail);
            if (e.duration.count() != 0) line["duration_seconds"] = detail::to_seconds(e.duration);
            break;
        }
        if (e.line != 0 || !e.file.empty())
            line["site"] = {{"file", clean(e.file)}, {"function", clean(e.function)}, {"line", e.line}};
        if (e.stats) {
            line["stats"] = {{"max_size", e.stats->max_size}, {"open", e.stats->open},         {"idle", e.stats->idle},
                             {"in_use", e.stats->in_use},     {"waiting", e.stats->waiting},   {"creating", e.stats->creating},
                             {"paused", e.stats->paused}};
        }
        std::lock_guard lock(mu_);
        write_locked(line);
    }

private:
    static nlohmann::ordered_json header(std::chrono::system_clock::time_point time, std::string event) {
        nlohmann::ordered_json line;
        line["schema_version"] = json_lines_schema_version;
        line["seq"] = 0; // set under the lock, so seq follows the order of the lines
        line["time"] = rfc3339(time);
        line["event"] = std::move(event);
        return line;
    }

    void write_locked(nlohmann::ordered_json& line) {
        line["seq"] = ++seq_;
        out_ << line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << '\n';
        out_.flush(); // a reader tailing the file sees whole lines as they happen
    }

    std::ostream& out_;
    JsonLinesOptions options_;
    std::mutex mu_; // guards everything below and the writes to out_
    std::uint64_t seq_ = 0;
    std::map<std::uint64_t, std::chrono::system_clock::time_point> last_progress_; // by job key
    std::map<std::uint64_t, std::chrono::system_clock::time_point> last_set_progress_; // by set key
};

} // namespace connpool::monitor
