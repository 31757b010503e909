#pragma once

// The pieces fuzz_pool drives a Pool with: a manual clock, a connection with an id and a heap
// payload, a factory whose faults follow a plan the input sets (create/validate/reset/destroy
// throw or fail, creations slow), and the bookkeeping that is the reference model's ground
// truth: which connections exist, when each was created, which ones the driver holds, how
// often each factory member was called and how each call ended.
//
// The factory runs on the pool's creator threads as well as on the driver's, so everything
// shared is behind one mutex (or atomic).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace connpool::fuzz {

/// A clock that moves only when the driver says so (a copy of tests' ManualClock with its own
/// static, so the two never share time). Reset at the start of every input.
struct FuzzClock {
    using duration = std::chrono::nanoseconds;
    using rep = duration::rep;
    using period = duration::period;
    using time_point = std::chrono::time_point<FuzzClock, duration>;
    static constexpr bool is_steady = true;

    static constexpr std::int64_t kStart = 1'000'000'000'000; // not zero: 0 means "never" in slots

    static time_point now() noexcept { return time_point(duration(ticks().load())); }
    static std::int64_t now_ns() noexcept { return ticks().load(); }
    static void advance(duration d) noexcept { ticks().fetch_add(d.count()); }
    /// Only between inputs, when no pool exists.
    static void reset() noexcept { ticks().store(kStart); }

private:
    static std::atomic<std::int64_t>& ticks() noexcept {
        static std::atomic<std::int64_t> t{kStart};
        return t;
    }
};

/// How the factory's members behave; the input changes it between steps.
struct FaultPlan {
    enum class Create { ok, slow, fail_always, fail_next, fail_every_other };
    enum class Verdict { ok, fail, throws, fail_odd_ids };

    Create create = Create::ok;
    int fail_next = 0;                 // Create::fail_next: this many more throws, then ok
    std::chrono::microseconds delay{0}; // Create::slow
    Verdict validate = Verdict::ok;
    Verdict reset = Verdict::ok;
    bool destroy_throws = false;
    bool hook_throws = false;

    /// Whether every create() from now on eventually succeeds (within a few back-offs).
    [[nodiscard]] bool creates_eventually() const noexcept { return create != Create::fail_always; }

    [[nodiscard]] static bool passes(Verdict v, std::uint64_t id) noexcept {
        return v == Verdict::ok || (v == Verdict::fail_odd_ids && id % 2 == 0);
    }
};

/// Everything the factory and the connections record: the model's view of the truth.
struct FactoryState {
    mutable std::mutex mutex;
    FaultPlan plan;                          // read by create() on creator threads

    std::uint64_t next_id = 1;
    std::map<std::uint64_t, std::int64_t> alive; // id -> FuzzClock time of its creation
    std::set<std::uint64_t> held;            // ids the driver holds leases on (the driver writes it)
    std::uint64_t releasing = 0;             // the id whose lease the driver is giving back now
    std::uint64_t created = 0;               // create() calls that returned
    std::uint64_t create_throws = 0;
    std::uint64_t created_at_last_throw = 0; // `created` when create() last threw
    std::uint64_t destructions = 0;          // connections whose payload was freed
    std::uint64_t double_destructions = 0;   // payloads freed for an id no longer alive
    std::uint64_t validate_calls = 0;
    std::vector<std::uint64_t> validated;    // the ids validate() ran on, in order
    std::uint64_t validate_rejections = 0;   // false or threw
    std::uint64_t validate_on_held = 0;      // validate() on a connection a lease holds
    std::uint64_t reset_calls = 0;
    std::uint64_t reset_on_unheld = 0;       // reset() on a connection whose lease is not being released
    std::uint64_t destroy_calls = 0;
    std::uint64_t destroy_on_held = 0;       // destroy() on a connection a lease still holds
    std::atomic<int> creating_now{0};
    std::atomic<std::int64_t> last_create_throw_ns{0}; // steady_clock, for back-off windows
    std::atomic<std::uint64_t> events{0};
    std::atomic<bool> hook_throws{false};    // on_event throws (a copy of plan.hook_throws, read lock-free)

    [[nodiscard]] std::size_t alive_count() const {
        std::lock_guard lock(mutex);
        return alive.size();
    }
    [[nodiscard]] bool is_alive(std::uint64_t id) const {
        std::lock_guard lock(mutex);
        return alive.count(id) != 0;
    }
    [[nodiscard]] FaultPlan current_plan() const {
        std::lock_guard lock(mutex);
        return plan;
    }
};

/// A move-only connection: an id and a heap payload holding it (ASan sees a lost, doubly
/// freed or used-after-free connection), reporting its destruction to the state.
class FuzzConn {
public:
    FuzzConn(std::shared_ptr<FactoryState> state, std::uint64_t id)
        : state_(std::move(state)), payload_(std::make_unique<std::uint64_t>(id)) {}
    FuzzConn(FuzzConn&&) noexcept = default;
    FuzzConn& operator=(FuzzConn&&) = delete;
    FuzzConn(const FuzzConn&) = delete;
    FuzzConn& operator=(const FuzzConn&) = delete;
    ~FuzzConn() {
        if (!payload_) return; // moved from
        std::lock_guard lock(state_->mutex);
        ++state_->destructions;
        if (state_->alive.erase(*payload_) == 0) ++state_->double_destructions;
    }

    /// The id (0 once moved from).
    [[nodiscard]] std::uint64_t id() const noexcept { return payload_ ? *payload_ : 0; }

private:
    std::shared_ptr<FactoryState> state_;
    std::unique_ptr<std::uint64_t> payload_;
};

/// Thrown by the factory's members when the plan says so.
struct InjectedFault : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// The factory: every optional member, each following the plan.
struct FuzzFactory {
    std::shared_ptr<FactoryState> state;

    FuzzConn create() {
        state->creating_now.fetch_add(1);
        struct Done {
            FactoryState& s;
            ~Done() { s.creating_now.fetch_sub(1); }
        } done{*state};
        FaultPlan::Create mode;
        std::chrono::microseconds delay{0};
        bool fail = false;
        {
            std::lock_guard lock(state->mutex);
            FaultPlan& p = state->plan;
            mode = p.create;
            delay = p.delay;
            switch (mode) {
            case FaultPlan::Create::ok:
            case FaultPlan::Create::slow: break;
            case FaultPlan::Create::fail_always: fail = true; break;
            case FaultPlan::Create::fail_next:
                if (p.fail_next > 0) {
                    --p.fail_next;
                    fail = true;
                }
                break;
            case FaultPlan::Create::fail_every_other:
                fail = (state->created + state->create_throws) % 2 == 0;
                break;
            }
        }
        if (mode == FaultPlan::Create::slow) std::this_thread::sleep_for(delay);
        std::lock_guard lock(state->mutex);
        if (fail) {
            ++state->create_throws;
            state->created_at_last_throw = state->created;
            state->last_create_throw_ns.store(std::chrono::steady_clock::now().time_since_epoch().count());
            throw InjectedFault("database unreachable (injected)");
        }
        const std::uint64_t id = state->next_id++;
        state->alive.emplace(id, FuzzClock::now_ns());
        ++state->created;
        return FuzzConn(state, id);
    }

    bool validate(FuzzConn& c) {
        std::lock_guard lock(state->mutex);
        ++state->validate_calls;
        state->validated.push_back(c.id());
        if (state->held.count(c.id()) != 0) ++state->validate_on_held;
        const bool ok = FaultPlan::passes(state->plan.validate, c.id());
        if (!ok) ++state->validate_rejections;
        if (!ok && state->plan.validate == FaultPlan::Verdict::throws) throw InjectedFault("validate (injected)");
        return ok;
    }

    bool reset(FuzzConn& c) {
        std::lock_guard lock(state->mutex);
        ++state->reset_calls;
        if (c.id() != state->releasing) ++state->reset_on_unheld;
        const bool ok = FaultPlan::passes(state->plan.reset, c.id());
        if (!ok && state->plan.reset == FaultPlan::Verdict::throws) throw InjectedFault("reset (injected)");
        return ok;
    }

    void destroy(FuzzConn& c) {
        std::lock_guard lock(state->mutex);
        ++state->destroy_calls;
        if (state->held.count(c.id()) != 0) ++state->destroy_on_held;
        if (state->plan.destroy_throws) throw InjectedFault("destroy (injected)");
    }
};

} // namespace connpool::fuzz
