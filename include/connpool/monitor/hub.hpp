#pragma once

// Fan-out: one object that subscribes to pools' events and runners' progress and hands them to
// every sink, so several sinks watch the same jobs without the user writing a dispatcher.
//
//   connpool::monitor::Hub hub;
//   hub.add(std::make_shared<connpool::monitor::JsonLinesSink>(std::cout));
//   connpool::Pool pool{factory, hub.instrument({.max_size = 4, .name = "backups"})}; // pool events
//   auto watch = hub.watch(pool);                                  // pool stats and histogram
//   connpool::JobRunner runner{pool};
//   auto jobs = hub.watch(runner);                                 // every job's current progress
//   runner.submit(job, hub.track());                               // job events (JSON lines)
//   std::string text = connpool::monitor::render_prometheus(hub.metrics());
//
// Where each part comes from: pool stats, including the acquire-wait histogram, from
// Pool::stats() of watched pools, read when metrics() is called; pool events through
// instrument(); job events, ended-job counts and last successes from the progress callbacks of
// track(); and, for a watched runner, its jobs' progress from JobRunner::snapshot(), read when
// jobs() or metrics() is called, so /jobs and the per-job series are current even between
// callbacks and include jobs submitted without track().
//
// Design: the hub's state lives in a shared HubState that every installed callback holds, so a
// pool or a job that outlives the Hub object never reaches a dead one. `mu` guards the job
// table, the aggregates and the lists of pools and runners; each watched pool or runner has its
// own mutex, which a Watch's destructor takes to wait for a read in flight. Sinks are called
// outside the hub's lock, from the thread the event happened on (a runner's worker, an
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
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <connpool/jobs.hpp>
#include <connpool/monitor/set_progress.hpp>
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

/// One set event given to sinks: started (its first update), progress, or ended (its last).
/// `progress` is valid only during the call.
struct SetEvent {
    JobEventType type = JobEventType::progress;   ///< started, progress or ended
    std::uint64_t key = 0;                        ///< the hub's number for the set
    const SetProgress* progress = nullptr;        ///< the set's progress at that moment (never null)
    std::chrono::system_clock::time_point time{}; ///< when the hub saw it
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
    std::optional<PoolStats> stats;               ///< the pool's state when it happened (timeouts: PoolEvent::stats)
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
    /// Receives a set event (Hub::track_set). Default: ignores it.
    virtual void on_set(const SetEvent& /*event*/) {}
    /// Receives a pool event other than acquired/released (those happen on every acquire; the
    /// pool's own histogram counts them). Default: ignores it.
    virtual void on_pool(const PoolEventRecord& /*event*/) {}
};

/// Bucket upper bounds of the acquire-wait histogram, in seconds (the +Inf bucket is implied):
/// connpool::acquire_wait_bucket_bounds, the pool's own.
inline constexpr std::array<double, acquire_wait_bucket_bounds.size()> acquire_wait_bounds = [] {
    std::array<double, acquire_wait_bucket_bounds.size()> out{};
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::chrono::duration<double>(acquire_wait_bucket_bounds[i]).count();
    return out;
}();

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

/// Returns the histogram in `stats` (PoolStats::acquire_wait_buckets and _sum).
inline HistogramSnapshot acquire_wait_histogram(const PoolStats& stats) {
    HistogramSnapshot h;
    h.bounds.assign(acquire_wait_bounds.begin(), acquire_wait_bounds.end());
    std::uint64_t below = 0;
    for (const auto cumulative : stats.acquire_wait_buckets) {
        h.counts.push_back(cumulative >= below ? cumulative - below : 0);
        below = std::max(below, cumulative);
    }
    h.sum = std::chrono::duration<double>(stats.acquire_wait_sum).count();
    return h;
}

/// One pool as Prometheus shows it.
struct PoolSnapshot {
    std::string name;                  ///< the pool's label
    std::optional<PoolStats> stats;    ///< its stats, when watched
    HistogramSnapshot acquire_wait;    ///< its acquire-wait histogram (from stats; empty when not watched)
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
    std::vector<SetProgress> sets;                ///< running sets and the most recent ended ones, oldest first
};

/// How a Hub behaves. Every field has a default.
struct HubOptions {
    /// Ended jobs kept for per-job series and /jobs (the most recent), and ended sets kept for
    /// the per-set series and /sets. Default 100.
    std::size_t keep_ended = 100;
    /// Distinct (name, kind) pairs whose last success is kept; the oldest go first. Default 10,000.
    std::size_t keep_names = 10'000;
    /// The wall clock used to stamp events. Default: std::chrono::system_clock::now.
    std::function<std::chrono::system_clock::time_point()> now = [] { return std::chrono::system_clock::now(); };
};

namespace detail {

inline double to_seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// Something a Watch keeps visible: a pool's stats or a runner's snapshot. `mu` is held while
// it is read, so clearing it (a Watch's destructor) waits for a read in flight.
struct Watched {
    std::mutex mu;
    virtual ~Watched() = default;
    virtual void clear() = 0; // called with mu held
};

struct PoolEntry final : Watched {
    std::string name;
    std::function<PoolStats()> stats; // set while a Watch lives; guarded by mu

    void clear() override { stats = nullptr; }

    std::optional<PoolStats> read_stats() {
        std::lock_guard lock(mu);
        if (!stats) return std::nullopt;
        return stats();
    }
};

struct RunnerEntry final : Watched {
    std::function<std::vector<Progress>()> snapshot; // guarded by mu

    void clear() override { snapshot = nullptr; }

    std::optional<std::vector<Progress>> read() {
        std::lock_guard lock(mu);
        if (!snapshot) return std::nullopt;
        return snapshot();
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
    std::vector<std::shared_ptr<RunnerEntry>> runners; // watched ones; cleared ones go at the next read
    std::uint64_t next_callback = 0;
    std::uint64_t next_key = 0;
    std::map<std::pair<std::uint64_t, std::uint64_t>, TrackedJob> active; // (callback, Progress::id)
    std::deque<TrackedJob> ended;                                         // most recent last
    std::array<std::uint64_t, 5> ended_by_state{};
    std::array<std::array<std::uint64_t, 5>, 2> ended_by_kind{};
    std::map<std::pair<std::string, int>, std::chrono::system_clock::time_point> last_success;
    std::uint64_t next_set_key = 0;
    std::map<std::uint64_t, SetProgress> sets_active;        // by key (ascending: oldest first)
    std::deque<std::pair<std::uint64_t, SetProgress>> sets_ended; // most recent last

    // Records a set's progress and tells the sinks: the first update is "started", a final
    // state "ended" (after which the set's later updates are ignored).
    void on_set(std::uint64_t key, SetProgress p, bool first) {
        SetEvent event{first ? JobEventType::started : JobEventType::progress, key, nullptr, options.now()};
        {
            std::lock_guard lock(mu);
            const auto it = sets_active.find(key);
            if (it == sets_active.end()) return; // ended already
            if (is_final(p.state)) {
                event.type = JobEventType::ended;
                sets_active.erase(it);
                sets_ended.emplace_back(key, p);
                while (sets_ended.size() > options.keep_ended) sets_ended.pop_front();
            } else {
                it->second = p;
            }
        }
        event.progress = &p;
        const auto targets = current_sinks();
        for (const auto& sink : *targets) sink->on_set(event);
    }

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

    void on_pool_event(const PoolEntry& entry, const PoolEvent& e) {
        if (e.kind == PoolEventKind::acquired || e.kind == PoolEventKind::released) return;
        const auto targets = current_sinks();
        if (targets->empty()) return;
        PoolEventRecord r{entry.name, e.kind, e.slot, e.duration, e.site.file ? e.site.file : "",
                          e.site.function ? e.site.function : "", static_cast<std::uint32_t>(e.site.line),
                          std::string(e.detail), std::nullopt, options.now()};
        if (e.stats != nullptr) r.stats = *e.stats;
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

/// Keeps a pool's stats or a runner's jobs visible to a Hub while it lives; destroy it before
/// the pool or runner. Move-only.
class Watch {
public:
    /// Creates a watch of nothing.
    Watch() = default;
    /// Made by Hub::watch(), not by users.
    explicit Watch(std::weak_ptr<detail::Watched> entry) : entry_(std::move(entry)) {}
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
    /// Stops watching; waits for a read in flight.
    ~Watch() { reset(); }

    /// Stops watching now (idempotent); waits for a read in flight.
    void reset() {
        if (auto entry = entry_.lock()) {
            std::lock_guard lock(entry->mu);
            entry->clear();
        }
        entry_.reset();
    }

private:
    std::weak_ptr<detail::Watched> entry_;
};

/// Reports one set (an operation made of many jobs, e.g. a database backup) to a Hub: its
/// aggregate progress, then its end. Made by Hub::track_set(); move-only; one thread at a time.
/// Destroying it before end() ends the set as cancelled, so a set never stays "running".
class SetTracker {
public:
    /// Tracks nothing.
    SetTracker() = default;
    /// Made by Hub::track_set(), not by users.
    SetTracker(std::shared_ptr<detail::HubState> state, std::uint64_t key, std::string name, JobKind kind)
        : state_(std::move(state)), key_(key), started_(state_->options.now()) {
        last_.name = std::move(name);
        last_.kind = kind;
    }
    SetTracker(SetTracker&& other) noexcept
        : state_(std::move(other.state_)), key_(other.key_), started_(other.started_), last_(std::move(other.last_)),
          reported_(other.reported_) {}
    SetTracker& operator=(SetTracker&& other) noexcept {
        if (this != &other) {
            finish_as_cancelled();
            state_ = std::move(other.state_);
            key_ = other.key_;
            started_ = other.started_;
            last_ = std::move(other.last_);
            reported_ = other.reported_;
        }
        return *this;
    }
    SetTracker(const SetTracker&) = delete;
    SetTracker& operator=(const SetTracker&) = delete;
    /// Ends the set as cancelled unless end() was called.
    ~SetTracker() { finish_as_cancelled(); }

    /// Reports the set's counts now (state running); the first call is the set's "started"
    /// event. Rate and ETA are worked out from the time since track_set(). Quick; does not block
    /// on the sinks' I/O beyond what they do per event (JsonLinesSink throttles progress lines).
    void update(const SetCounts& counts) { report(counts, JobState::running, {}); }

    /// Reports the set's end: its last counts, its end state (succeeded, failed or cancelled)
    /// and, when it failed, why. Later calls are ignored.
    void end(const SetCounts& counts, JobState state, std::string error = {}) {
        if (!is_final(state)) state = JobState::failed;
        report(counts, state, std::move(error));
    }

    /// Returns the last progress reported (name and kind even before the first update).
    [[nodiscard]] const SetProgress& last() const noexcept { return last_; }

private:
    void report(const SetCounts& c, JobState state, std::string error) {
        if (!state_ || is_final(last_.state)) return;
        SetProgress& p = last_;
        p.state = state;
        p.done = c.done;
        p.total = std::max(c.total, c.done);
        p.jobs_done = c.jobs_done;
        p.jobs = c.jobs;
        const auto elapsed = state_->options.now() - started_;
        p.elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(elapsed, decltype(elapsed){}));
        const double seconds = detail::to_seconds(p.elapsed);
        p.rate = seconds > 0 ? static_cast<double>(p.done) / seconds : 0.0;
        p.eta.reset();
        if (state == JobState::running && p.total > 0 && p.done > 0 && p.done < p.total && p.rate > 0)
            p.eta = std::chrono::duration_cast<std::chrono::nanoseconds>(
                std::chrono::duration<double>(static_cast<double>(p.total - p.done) / p.rate));
        p.error = std::move(error);
        const bool first = !reported_;
        reported_ = true;
        state_->on_set(key_, p, first);
    }

    void finish_as_cancelled() noexcept {
        if (!state_ || is_final(last_.state)) return;
        try {
            report(SetCounts{last_.done, last_.total, last_.jobs_done, last_.jobs}, JobState::cancelled,
                   "the set's tracker was destroyed before the set ended");
        } catch (...) { // a sink that throws must not escape a destructor
        }
    }

    std::shared_ptr<detail::HubState> state_;
    std::uint64_t key_ = 0;
    std::chrono::system_clock::time_point started_{};
    SetProgress last_;
    bool reported_ = false;
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
    /// metrics; several pools may share a hub), and with PoolOptions::name set to `pool_name` if
    /// it was empty. An on_event already set is still called, first.
    [[nodiscard]] PoolOptions instrument(const std::string& pool_name, PoolOptions options) const {
        auto entry = state_->pool(pool_name);
        if (options.name.empty()) options.name = pool_name;
        options.on_event = [state = state_, entry, previous = std::move(options.on_event)](const PoolEvent& e) {
            if (previous) previous(e);
            state->on_pool_event(*entry, e);
        };
        return options;
    }

    /// As instrument(options.name, options). Throws std::invalid_argument if options.name is empty.
    [[nodiscard]] PoolOptions instrument(PoolOptions options) const {
        const std::string name = required_name(options.name, "instrument");
        return instrument(name, std::move(options));
    }

    /// Makes `pool`'s stats, with its acquire-wait histogram, part of the metrics as pool
    /// `pool_name` until the returned Watch is destroyed (which must happen before the pool is).
    template <class P>
        requires requires(const P& p) { p.stats(); }
    [[nodiscard]] Watch watch(const std::string& pool_name, const P& pool) const {
        auto entry = state_->pool(pool_name);
        {
            std::lock_guard lock(entry->mu);
            entry->stats = [&pool] { return pool.stats(); };
        }
        return Watch{entry};
    }

    /// As watch(pool.options().name, pool). Throws std::invalid_argument if that name is empty.
    template <class P>
        requires requires(const P& p) { p.stats(); }
    [[nodiscard]] Watch watch(const P& pool) const {
        return watch(required_name(pool.options().name, "watch"), pool);
    }

    /// Makes every job of `runner` part of jobs() and metrics(), read from runner.snapshot() when
    /// they are called (so current, and including jobs submitted without track()), until the
    /// returned Watch is destroyed (which must happen before the runner is). A job both tracked
    /// and in a watched runner is shown once, from the snapshot (matched by id, name and kind).
    /// Of its ended jobs, the HubOptions::keep_ended most recent are shown. Counts of ended jobs,
    /// last successes and sinks' job events still come from track()'s callbacks only: a
    /// snapshot cannot tell which jobs ended since the last one.
    template <class R>
        requires requires(const R& r) { r.snapshot(); }
    [[nodiscard]] Watch watch(const R& runner) const {
        auto entry = std::make_shared<detail::RunnerEntry>();
        entry->snapshot = [&runner] { return runner.snapshot(); };
        std::lock_guard lock(state_->mu);
        state_->runners.push_back(entry);
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

    /// Starts tracking a set named `name` (e.g. "backup of shop"): returns the SetTracker its
    /// owner feeds (e.g. `set.update(monitor::set_counts(op.progress()))` while the operation
    /// runs, then `set.end(...)`). The set shows in sets(), metrics() and the sinks' on_set().
    [[nodiscard]] SetTracker track_set(std::string name, JobKind kind) const {
        std::uint64_t key = 0;
        {
            std::lock_guard lock(state_->mu);
            key = ++state_->next_set_key;
            SetProgress p;
            p.name = name;
            p.kind = kind;
            state_->sets_active.emplace(key, std::move(p));
        }
        return SetTracker(state_, key, std::move(name), kind);
    }

    /// Returns the latest progress of the running sets and of the most recent ended ones
    /// (HubOptions::keep_ended), in the order they were started.
    [[nodiscard]] std::vector<SetProgress> sets() const {
        std::vector<std::pair<std::uint64_t, SetProgress>> keyed;
        {
            std::lock_guard lock(state_->mu);
            for (const auto& e : state_->sets_ended) keyed.push_back(e);
            for (const auto& [key, p] : state_->sets_active) keyed.emplace_back(key, p);
        }
        std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<SetProgress> out;
        out.reserve(keyed.size());
        for (auto& [key, p] : keyed) out.push_back(std::move(p));
        return out;
    }

    /// Returns the latest progress of the queued and running jobs and of the most recent ended
    /// ones (HubOptions::keep_ended), in the order the hub first saw them: as last delivered to
    /// track()'s callbacks, and, for watched runners, as their snapshot() says now (their jobs
    /// not tracked follow, in the runner's order).
    [[nodiscard]] std::vector<Progress> jobs() const {
        std::vector<std::pair<std::uint64_t, Progress>> keyed;
        std::vector<std::shared_ptr<detail::RunnerEntry>> runners;
        {
            std::lock_guard lock(state_->mu);
            for (const auto& j : state_->ended) keyed.emplace_back(j.key, j.latest);
            for (const auto& [id, j] : state_->active) keyed.emplace_back(j.key, j.latest);
            runners = state_->runners;
        }
        std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<Progress> out;
        out.reserve(keyed.size());
        for (auto& [key, p] : keyed) out.push_back(std::move(p));
        if (!runners.empty()) merge_runners(out, runners);
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
            for (const auto& [key, at] : state_->last_success)
                m.last_success.push_back(LastSuccess{key.first, static_cast<JobKind>(key.second), at});
        }
        m.jobs = jobs();
        m.sets = sets();
        // Queued and running now: from the jobs as shown, which include watched runners' own.
        for (const auto& p : m.jobs)
            if (!is_final(p.state)) ++m.jobs_by_state[static_cast<std::size_t>(p.state)];
        for (const auto& entry : pools) {
            PoolSnapshot pool{entry->name, entry->read_stats(), {}};
            if (pool.stats) pool.acquire_wait = acquire_wait_histogram(*pool.stats);
            m.pools.push_back(std::move(pool));
        }
        return m;
    }

private:
    static std::string required_name(const std::string& name, const char* what) {
        if (name.empty())
            throw std::invalid_argument(std::string("connpool::monitor::Hub::") + what +
                                        ": the pool has no name; set PoolOptions::name or pass one");
        return name;
    }

    // Puts the watched runners' snapshots into `out`: a tracked job found in one is replaced by
    // it in place (fresher); the others are appended. Runners whose Watch is gone are dropped.
    void merge_runners(std::vector<Progress>& out, const std::vector<std::shared_ptr<detail::RunnerEntry>>& runners) const {
        std::map<std::tuple<std::uint64_t, std::string_view, JobKind>, std::size_t> tracked;
        for (std::size_t i = 0; i < out.size(); ++i) tracked.emplace(std::tuple{out[i].id, std::string_view(out[i].name), out[i].kind}, i);
        std::vector<Progress> fresh;
        std::vector<std::pair<std::size_t, Progress>> replacements;
        bool cleared = false;
        for (const auto& runner : runners) {
            auto snapshot = runner->read();
            if (!snapshot) {
                cleared = true;
                continue;
            }
            // Of the ended ones, only the keep_ended most recent (highest ids: the snapshot is in
            // id order), as for tracked jobs.
            std::size_t ended = 0;
            std::vector<bool> keep(snapshot->size(), true);
            for (std::size_t i = snapshot->size(); i-- > 0;)
                if (is_final((*snapshot)[i].state) && ++ended > state_->options.keep_ended) keep[i] = false;
            for (std::size_t i = 0; i < snapshot->size(); ++i) {
                auto& p = (*snapshot)[i];
                const auto match = tracked.find(std::tuple{p.id, std::string_view(p.name), p.kind});
                if (match != tracked.end()) {
                    replacements.emplace_back(match->second, std::move(p));
                } else if (keep[i]) {
                    fresh.push_back(std::move(p));
                }
            }
        }
        for (auto& [i, p] : replacements) out[i] = std::move(p); // after the search: it views out's names
        for (auto& p : fresh) out.push_back(std::move(p));
        if (cleared) {
            std::lock_guard lock(state_->mu);
            std::erase_if(state_->runners, [](const auto& r) {
                std::lock_guard entry_lock(r->mu);
                return !r->snapshot;
            });
        }
    }

private:
    std::shared_ptr<detail::HubState> state_;
};

} // namespace connpool::monitor
