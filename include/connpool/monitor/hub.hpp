#pragma once

// Fan-out: one object that subscribes to pools' events and runners' progress and hands them to
// every sink, so several sinks watch the same jobs without the user writing a dispatcher.
//
//   connpool::monitor::Hub hub;
//   hub.add(std::make_shared<connpool::monitor::JsonLinesSink>(std::cout));
//   connpool::Pool pool{factory, hub.instrument("backups", {.max_size = 4})};  // pool events
//   auto watch = hub.watch("backups", pool);                                // pool stats
//   connpool::JobRunner runner{pool};
//   runner.submit(job, hub.track());                                        // job progress
//   std::string text = connpool::monitor::render_prometheus(hub.metrics());
//
// Design: the hub's state lives in a shared HubState that every installed callback holds, so a
// pool or a job that outlives the Hub object never reaches a dead one. `mu_` guards the job
// table, the aggregates and the pool list; each pool's acquire-wait histogram is a set of
// relaxed atomics, because `acquired` fires on every acquire and must not take a lock. Sinks are
// called outside the hub's lock, from the thread the event happened on (a runner's worker, an
// acquiring thread); one job's events reach them in order (a job's callbacks never overlap), and
// each sink is responsible for its own thread-safety.

#include <algorithm> // std::sort: jobs in the order they were first seen
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <connpool/jobs.hpp>
#include <connpool/pool.hpp>

namespace connpool::monitor {

/// What happened to a job, as the hub classifies its progress callbacks.
enum class JobEventType {
    queued,   ///< submitted (its first callback)
    started,  ///< got its lease and runs
    progress, ///< did more work
    phase,    ///< changed phase ("verifying", "syncing")
    ended,    ///< succeeded, failed or was cancelled (its last callback)
};

/// Returns "queued", "started", "progress", "phase" or "ended".
constexpr std::string_view to_string(JobEventType type) noexcept {
    switch (type) {
    case JobEventType::queued: return "queued";
    case JobEventType::started: return "started";
    case JobEventType::progress: return "progress";
    case JobEventType::phase: return "phase";
    case JobEventType::ended: return "ended";
    }
    return "unknown";
}

/// One job event given to sinks. `progress` is valid only during the call.
struct JobEvent {
    JobEventType type = JobEventType::progress;       ///< what happened
    std::uint64_t key = 0;                            ///< the hub's number for the job (unique across runners)
    const Progress* progress = nullptr;               ///< the job's progress at that moment (never null)
    std::chrono::system_clock::time_point time{};     ///< when the hub saw it
};

/// One pool event as sinks get it: an owning copy of PoolEvent, with the pool's name, the time
/// and, for timeouts, the pool's state.
struct PoolEventRecord {
    std::string pool;                             ///< the name given to Hub::instrument()
    PoolEventKind kind{};                         ///< what happened
    std::uint32_t slot = 0;                       ///< the connection's slot
    std::chrono::nanoseconds duration{};          ///< as PoolEvent::duration
    std::string file;                             ///< acquiring call site: file (may be empty)
    std::string function;                         ///< acquiring call site: function (may be empty)
    std::uint32_t line = 0;                       ///< acquiring call site: line (0 = none)
    std::string detail;                           ///< error text or reason (not yet redacted)
    std::optional<PoolStats> stats;               ///< the pool's state (timeouts of watched pools)
    std::chrono::system_clock::time_point time{}; ///< when it happened
};

/// Something that receives job and pool events from a Hub. Both members may be called from
/// several threads at once (different jobs, different pools) and must be quick: they run on the
/// jobs' and the pool's threads.
class Sink {
public:
    virtual ~Sink() = default;
    /// Receives a job event. Default: ignores it.
    virtual void on_job(const JobEvent& /*event*/) {}
    /// Receives a pool event other than acquired/released (those are counted into the hub's
    /// histogram instead: they happen on every acquire). Default: ignores it.
    virtual void on_pool(const PoolEventRecord& /*event*/) {}
};

/// Bucket upper bounds of the acquire-wait histogram, in seconds (the +Inf bucket is implied).
inline constexpr std::array<double, 13> acquire_wait_bounds{0.00001, 0.0001, 0.001, 0.005, 0.01, 0.05, 0.1,
                                                            0.5,     1,      2.5,   5,     10,   30};

/// A histogram's contents at one moment.
struct HistogramSnapshot {
    std::vector<double> bounds;           ///< upper bounds, ascending, without +Inf
    std::vector<std::uint64_t> counts;    ///< observations per bucket (not cumulative); one more than bounds (+Inf)
    double sum = 0;                       ///< sum of the observations, in seconds
    /// Returns the number of observations (the +Inf bucket's cumulative count).
    [[nodiscard]] std::uint64_t count() const noexcept {
        std::uint64_t n = 0;
        for (auto c : counts) n += c;
        return n;
    }
};

/// One pool as Prometheus shows it.
struct PoolSnapshot {
    std::string name;                  ///< the pool's label
    std::optional<PoolStats> stats;    ///< its stats, when watched
    HistogramSnapshot acquire_wait;    ///< acquire waits seen through its events
};

/// A job name's last success, kept per (name, kind) however many jobs have ended.
struct LastSuccess {
    std::string name;                              ///< the job's name
    JobKind kind = JobKind::backup;                ///< its kind
    std::chrono::system_clock::time_point time{};  ///< when it last succeeded
};

/// Everything the hub knows, for rendering: pools, recent jobs, aggregates.
struct MetricsSnapshot {
    std::vector<PoolSnapshot> pools;              ///< by name
    std::vector<Progress> jobs;                   ///< queued and running jobs and the most recent ended ones, oldest first
    std::array<std::uint64_t, 5> jobs_by_state{}; ///< indexed by JobState: queued/running now; ended ones ever
    /// Ended jobs ever, per [kind][state] (only the final states are non-zero).
    std::array<std::array<std::uint64_t, 5>, 2> ended_by_kind{};
    std::vector<LastSuccess> last_success;        ///< per (name, kind), sorted by name then kind
};

/// How a Hub behaves. Every field has a default.
struct HubOptions {
    /// Ended jobs kept for per-job series and /jobs (the most recent). Default 100.
    std::size_t keep_ended = 100;
    /// Distinct (name, kind) pairs whose last success is kept; the oldest go first. Default 10,000.
    std::size_t keep_names = 10'000;
    /// The wall clock used to stamp events. Default: std::chrono::system_clock::now.
    std::function<std::chrono::system_clock::time_point()> now = [] { return std::chrono::system_clock::now(); };
};

namespace detail {

inline double to_seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

struct AtomicHistogram {
    std::array<std::atomic<std::uint64_t>, acquire_wait_bounds.size() + 1> counts{};
    std::atomic<std::uint64_t> sum_ns{0};

    void observe(std::chrono::nanoseconds d) noexcept {
        const double s = std::chrono::duration<double>(d).count();
        std::size_t i = 0;
        while (i < acquire_wait_bounds.size() && s > acquire_wait_bounds[i]) ++i;
        counts[i].fetch_add(1, std::memory_order_relaxed);
        sum_ns.fetch_add(static_cast<std::uint64_t>(d.count() > 0 ? d.count() : 0), std::memory_order_relaxed);
    }

    [[nodiscard]] HistogramSnapshot snapshot() const {
        HistogramSnapshot h;
        h.bounds.assign(acquire_wait_bounds.begin(), acquire_wait_bounds.end());
        for (const auto& c : counts) h.counts.push_back(c.load(std::memory_order_relaxed));
        h.sum = static_cast<double>(sum_ns.load(std::memory_order_relaxed)) / 1e9;
        return h;
    }
};

struct PoolEntry {
    std::string name;
    AtomicHistogram wait;
    std::mutex mu;                            // guards stats: Watch's destructor waits for a call in flight
    std::function<PoolStats()> stats;         // set while a Watch lives

    std::optional<PoolStats> read_stats() {
        std::lock_guard lock(mu);
        if (!stats) return std::nullopt;
        return stats();
    }
};

struct TrackedJob {
    std::uint64_t key = 0;
    Progress latest;
    bool seen = false;
};

struct HubState {
    explicit HubState(HubOptions o) : options(std::move(o)) {}

    HubOptions options;
    mutable std::mutex mu;
    std::shared_ptr<const std::vector<std::shared_ptr<Sink>>> sinks =
        std::make_shared<const std::vector<std::shared_ptr<Sink>>>();
    std::map<std::string, std::shared_ptr<PoolEntry>> pools;
    std::uint64_t next_callback = 0;
    std::uint64_t next_key = 0;
    std::map<std::pair<std::uint64_t, std::uint64_t>, TrackedJob> active; // (callback, Progress::id)
    std::deque<TrackedJob> ended;                                         // most recent last
    std::array<std::uint64_t, 5> ended_by_state{};
    std::array<std::array<std::uint64_t, 5>, 2> ended_by_kind{};
    std::map<std::pair<std::string, int>, std::chrono::system_clock::time_point> last_success;

    std::shared_ptr<PoolEntry> pool(const std::string& name) {
        std::lock_guard lock(mu);
        auto& entry = pools[name];
        if (!entry) {
            entry = std::make_shared<PoolEntry>();
            entry->name = name;
        }
        return entry;
    }

    std::shared_ptr<const std::vector<std::shared_ptr<Sink>>> current_sinks() const {
        std::lock_guard lock(mu);
        return sinks;
    }

    void on_pool_event(PoolEntry& entry, const PoolEvent& e) {
        if (e.kind == PoolEventKind::acquired) {
            entry.wait.observe(e.duration);
            return;
        }
        if (e.kind == PoolEventKind::released) return;
        const auto targets = current_sinks();
        if (targets->empty()) return;
        PoolEventRecord r{entry.name, e.kind, e.slot, e.duration, e.site.file ? e.site.file : "",
                          e.site.function ? e.site.function : "", static_cast<std::uint32_t>(e.site.line),
                          std::string(e.detail), std::nullopt, options.now()};
        if (e.kind == PoolEventKind::timeout) r.stats = entry.read_stats();
        for (const auto& sink : *targets) sink->on_pool(r);
    }

    void on_progress(std::uint64_t callback, const Progress& p) {
        JobEvent event{JobEventType::progress, 0, &p, options.now()};
        {
            std::lock_guard lock(mu);
            auto& job = active[{callback, p.id}];
            if (!job.seen) {
                job.seen = true;
                job.key = ++next_key;
                event.type = p.state == JobState::queued ? JobEventType::queued
                             : is_final(p.state)         ? JobEventType::ended
                                                         : JobEventType::started;
            } else if (is_final(p.state)) {
                event.type = JobEventType::ended;
            } else if (p.state != job.latest.state) {
                event.type = JobEventType::started;
            } else if (p.phase != job.latest.phase) {
                event.type = JobEventType::phase;
            }
            job.latest = p;
            event.key = job.key;
            if (event.type == JobEventType::ended) {
                ended.push_back(std::move(job));
                active.erase({callback, p.id});
                while (ended.size() > options.keep_ended) ended.pop_front();
                const auto state = static_cast<std::size_t>(p.state);
                ++ended_by_state[state];
                ++ended_by_kind[static_cast<std::size_t>(p.kind)][state];
                if (p.state == JobState::succeeded) remember_success(p.name, p.kind, event.time);
            }
        }
        const auto targets = current_sinks();
        for (const auto& sink : *targets) sink->on_job(event);
    }

    void remember_success(const std::string& name, JobKind kind, std::chrono::system_clock::time_point at) {
        last_success[{name, static_cast<int>(kind)}] = at;
        if (last_success.size() <= options.keep_names) return;
        auto oldest = last_success.begin();
        for (auto it = last_success.begin(); it != last_success.end(); ++it)
            if (it->second < oldest->second) oldest = it;
        last_success.erase(oldest);
    }
};

} // namespace detail

/// Keeps a pool's stats visible to a Hub while it lives; destroy it before the pool. Move-only.
class Watch {
public:
    /// Creates a watch of nothing.
    Watch() = default;
    /// Made by Hub::watch(), not by users.
    explicit Watch(std::weak_ptr<detail::PoolEntry> entry) : entry_(std::move(entry)) {}
    Watch(Watch&& other) noexcept = default;
    Watch& operator=(Watch&& other) noexcept {
        if (this != &other) {
            reset();
            entry_ = std::move(other.entry_);
        }
        return *this;
    }
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
    /// Stops watching; waits for a stats() call in flight.
    ~Watch() { reset(); }

    /// Stops watching now (idempotent); waits for a stats() call in flight.
    void reset() {
        if (auto entry = entry_.lock()) {
            std::lock_guard lock(entry->mu);
            entry->stats = nullptr;
        }
        entry_.reset();
    }

private:
    std::weak_ptr<detail::PoolEntry> entry_;
};

/// Fans pool events and job progress out to sinks, and keeps what the metrics need: each pool's
/// acquire-wait histogram and stats, the live and most recent jobs, per-state and per-kind
/// counts of all jobs, and each job name's last success. Every member is thread-safe. The
/// callbacks it hands out keep its state alive, so it may go before the pools and runners.
class Hub {
public:
    /// Creates a hub with no sinks.
    explicit Hub(HubOptions options = {}) : state_(std::make_shared<detail::HubState>(std::move(options))) {}

    /// Adds a sink; it gets the events that happen from now on.
    void add(std::shared_ptr<Sink> sink) {
        std::lock_guard lock(state_->mu);
        auto next = std::make_shared<std::vector<std::shared_ptr<Sink>>>(*state_->sinks);
        next->push_back(std::move(sink));
        state_->sinks = std::move(next);
    }

    /// Returns `options` with on_event reporting to this hub as pool `pool_name` (a label in the
    /// metrics; several pools may share a hub). An on_event already set is still called, first.
    [[nodiscard]] PoolOptions instrument(const std::string& pool_name, PoolOptions options) const {
        auto entry = state_->pool(pool_name);
        options.on_event = [state = state_, entry, previous = std::move(options.on_event)](const PoolEvent& e) {
            if (previous) previous(e);
            state->on_pool_event(*entry, e);
        };
        return options;
    }

    /// Makes `pool`'s stats part of the metrics as pool `pool_name` until the returned Watch is
    /// destroyed (which must happen before the pool is).
    template <class P>
    [[nodiscard]] Watch watch(const std::string& pool_name, const P& pool) const {
        auto entry = state_->pool(pool_name);
        {
            std::lock_guard lock(entry->mu);
            entry->stats = [&pool] { return pool.stats(); };
        }
        return Watch{entry};
    }

    /// Returns a progress callback for one JobRunner::submit() that reports the job to this hub
    /// (and so to its sinks), then calls `next` (if any) with the same Progress.
    [[nodiscard]] ProgressCallback track(ProgressCallback next = {}) const {
        std::uint64_t callback = 0;
        {
            std::lock_guard lock(state_->mu);
            callback = ++state_->next_callback;
        }
        return [state = state_, callback, next = std::move(next)](const Progress& p) {
            state->on_progress(callback, p);
            if (next) next(p);
        };
    }

    /// Returns the latest progress (as last delivered) of the queued and running jobs and of the
    /// most recent ended ones (HubOptions::keep_ended), in the order the hub first saw them.
    [[nodiscard]] std::vector<Progress> jobs() const {
        std::vector<std::pair<std::uint64_t, Progress>> keyed;
        {
            std::lock_guard lock(state_->mu);
            for (const auto& j : state_->ended) keyed.emplace_back(j.key, j.latest);
            for (const auto& [id, j] : state_->active) keyed.emplace_back(j.key, j.latest);
        }
        std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<Progress> out;
        out.reserve(keyed.size());
        for (auto& [key, p] : keyed) out.push_back(std::move(p));
        return out;
    }

    /// Returns everything the metrics show, read now (pool stats are read one pool at a time).
    [[nodiscard]] MetricsSnapshot metrics() const {
        MetricsSnapshot m;
        std::vector<std::shared_ptr<detail::PoolEntry>> pools;
        {
            std::lock_guard lock(state_->mu);
            for (const auto& [name, entry] : state_->pools) pools.push_back(entry);
            m.jobs_by_state = state_->ended_by_state;
            m.ended_by_kind = state_->ended_by_kind;
            for (const auto& [id, j] : state_->active) ++m.jobs_by_state[static_cast<std::size_t>(j.latest.state)];
            for (const auto& [key, at] : state_->last_success)
                m.last_success.push_back(LastSuccess{key.first, static_cast<JobKind>(key.second), at});
        }
        m.jobs = jobs();
        for (const auto& entry : pools) m.pools.push_back(PoolSnapshot{entry->name, entry->read_stats(), entry->wait.snapshot()});
        return m;
    }

private:
    std::shared_ptr<detail::HubState> state_;
};

} // namespace connpool::monitor
