#pragma once

// Design
// ------
// Connections live in slots (detail/slot.hpp) of a table that grows in place and never moves
// (detail/slot_table.hpp). A slot's `state` word says who owns it: nobody (vacant), a creator
// (reserved), a lease (in_use), the pool itself (busy), the idle queue (queued), or nobody in
// particular while idle (parked). Whoever owns the state owns the connection, so no lock guards
// connections, and creation, validation, reset and destruction all run outside any lock.
//
// Fast path (the one HikariCP made famous): a thread that gives back a connection parks it and
// remembers its slot in its thread-local cache (detail/thread_cache.hpp); its next acquire takes
// the same slot back with one CAS (parked -> in_use), and the release is one more CAS
// (in_use -> parked). No lock, no shared counter written, one read of a coarse clock
// (detail/clock.hpp) on acquire and none on release. Without a clock read at release, idle time
// is measured from the last hand-out (or the last maintenance pass that saw that lease running),
// which errs towards validating and retiring early; a lease that outlives max_lifetime is flagged
// `expired` by maintenance, so its release takes the slow path and retires it.
//
// `attention_` counts the reasons releases must not park (threads asleep waiting, a pause, a
// shrink or retire_all in progress): the idle hand-off (detail/pool_handoff.hpp, a base of this
// class) explains how a release and a sweep agree that no connection stays parked unseen.
//
// Slow path: a thread whose cached slot is gone takes the newest idle connection from the idle
// queue (a BoundedBlockingQueue in LIFO order, so the least recently used ones age out), then
// steals any parked slot. Failing that, when the pool is at capacity, it spins briefly (a few
// pauses, then yields, at most ~200 us): when threads outnumber cores, a thread that lost a race
// nearly always finds a parked connection within a few yields, and sleeping instead would turn
// every release into a wake-up and a context switch (a lock convoy that a busy pool never
// leaves). Then it registers as a waiter (attention_ and, under `control_`, waiters_) and sleeps
// in the queue, which hands each connection pushed to it to the oldest sleeper (FIFO). So a
// waiter is served at most ~200 us of spinning plus as many hand-offs as there are sleepers
// ahead of it. A stop request wakes it through the queue's stop_callback; it then unregisters
// and leaves nothing behind: capacity is never handed to a particular waiter, only connections.
//
// Creation (detail/pool_creation.hpp, a base of this class) is why no acquire can outlive its
// deadline: acquirers never call create(); they request creations, which creator threads carry
// out and push into the idle queue, so each new connection goes to the oldest waiter, or stays
// idle if that waiter gave up meanwhile (as HikariCP's connection adder does). Capacity, demand
// and back-off are counted under `control_`, the one mutex of the slow path. Maintenance
// (detail/pool_maintenance.hpp, another base) retires, flags and tops up on its own thread.
//
// Lifetime: the pool object owns a reference to the core; so does every non-vacant slot.
// Closing destroys idle connections at once and flags owned slots `closing`, so outstanding
// leases destroy theirs when they come back; the last one out deletes the core. A release never
// touches the core after the CAS that publishes its slot, unless it holds a reference of its own
// (taken only when an event hook must hear "released" after the connection is back).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "../bounded_queue.hpp"
#include "../errors.hpp"
#include "../factory.hpp"
#include "../lease.hpp"
#include "../pool_options.hpp"
#include "clock.hpp"
#include "diagnostics.hpp"
#include "durations.hpp"
#include "pool_creation.hpp"
#include "pool_handoff.hpp"
#include "pool_maintenance.hpp"
#include "pool_params.hpp"
#include "slot.hpp"
#include "slot_table.hpp"
#include "source_location.hpp"
#include "thread_cache.hpp"
#include "wait_histogram.hpp"

// Test seam: a test that defines CONNPOOL_POOL_TEST_POINT(point) before including the pool
// gets a call at the named points, to force an interleaving instead of hoping for it
// (tests/pool_seam_test.cpp). Nobody else defines it, so it compiles to nothing.
#ifndef CONNPOOL_POOL_TEST_POINT
#define CONNPOOL_POOL_TEST_POINT(point) static_cast<void>(0)
#endif

namespace connpool::detail {

/// The shared state behind a Pool; outlives the Pool while leases are out. Not for users.
template <class Conn, class Factory, class Clock>
class PoolCore final : public LeaseOwner<Conn>,
                       public PoolHandoff<PoolCore<Conn, Factory, Clock>, Conn>,
                       public PoolCreation<PoolCore<Conn, Factory, Clock>, Conn>,
                       public PoolMaintenance<PoolCore<Conn, Factory, Clock>, Conn> {
    using Slot = detail::Slot<Conn>;
    using steady = std::chrono::steady_clock;
    using clock_type = Clock;
    friend class PoolHandoff<PoolCore, Conn>;
    friend class PoolCreation<PoolCore, Conn>;
    friend class PoolMaintenance<PoolCore, Conn>;

public:
    PoolCore(Factory factory, PoolOptions options)
        : options_(std::move(options)),
          params_(make_params(options_)),
          factory_(std::move(factory)),
          idle_(params_.max_size),
          max_size_(params_.max_size) {
        this->reserve_creators(params_.max_concurrent_creates);
        this->start_maintenance();
    }

    PoolCore(const PoolCore&) = delete;
    PoolCore& operator=(const PoolCore&) = delete;

    // ---- acquire -------------------------------------------------------------------------

    Lease<Conn> acquire(std::chrono::milliseconds timeout, const std::stop_token* stop,
                        const source_location& loc) {
        // No closed_ check here: close() destroys every parked connection, so after it the
        // cached slot cannot be taken and the slow path throws PoolClosed.
        if (Slot* s = this->take_cached()) {
            if (hand_out(*s, loc, std::chrono::nanoseconds{0}, Via::cache)) return Lease<Conn>(s);
        }
        return acquire_slow(timeout, stop, loc);
    }

    std::optional<Lease<Conn>> try_acquire(const source_location& loc) {
        if (closed_.load(std::memory_order_acquire)) throw PoolClosed{};
        if (paused_.load(std::memory_order_acquire)) return std::nullopt;
        if (Slot* s = this->take_cached()) {
            if (hand_out(*s, loc, std::chrono::nanoseconds{0}, Via::cache)) return Lease<Conn>(s);
        }
        // Each round takes one idle connection (handed out or, if retired, destroyed), so this
        // ends: it never waits for, or spins on, another thread's progress.
        for (;;) {
            Slot* s = nullptr;
            if (auto popped = idle_.try_pop()) {
                s = *popped;
                own(*s);
            } else {
                s = this->steal_parked(false);
            }
            if (s == nullptr) return std::nullopt;
            if (hand_out(*s, loc, std::chrono::nanoseconds{0}, Via::untimed)) return Lease<Conn>(s);
        }
    }

    // ---- release (LeaseOwner) ------------------------------------------------------------

    void give_back(Slot& s, bool discard) noexcept override {
        if (discard) {
            discarded_.fetch_add(1, std::memory_order_relaxed);
            destroy_owned(s, "discarded by its lease");
            return;
        }
        if constexpr (has_reset<Factory, Conn>) {
            bool ok = false;
            try {
                ok = factory_.reset(*s.conn);
            } catch (...) {
            }
            if (!ok) {
                destroy_owned(s, "reset() rejected it");
                return;
            }
        }
        // "released" is reported once the connection is back, which needs the core alive after
        // the publishing CAS: hold a reference for it (only when someone listens).
        const bool report = static_cast<bool>(options_.on_event);
        std::chrono::nanoseconds held{0};
        CallSite site{};
        std::uint32_t index = s.index;
        if (report) {
            held = std::chrono::nanoseconds{now_ns<Clock>() - s.acquired_at.load(std::memory_order_relaxed)};
            site = site_of(s);
            refs_.fetch_add(1, std::memory_order_relaxed);
        }
        this->remember(s);
        // No clock read here: it would cost a third of the whole cycle (see the design note).
        // After a successful park the slot may be taken, closed and the core deleted by others:
        // touch nothing of ours after it (but for the reference taken above).
        if (attention_.load(std::memory_order_seq_cst) != 0 || !s.park()) this->make_idle(s);
        if (report) {
            emit(PoolEventKind::released, index, held, site);
            drop_ref();
        }
    }

    [[nodiscard]] std::int64_t clock_now_ns() const noexcept override { return now_ns<Clock>(); }

    // ---- run-time control ----------------------------------------------------------------

    void resize(std::size_t n) {
        check_max_size(n, params_.min_idle);
        std::size_t old = 0;
        {
            std::lock_guard lock(control_);
            old = max_size_.load(std::memory_order_relaxed);
            if (n > idle_.capacity()) idle_.set_capacity(n); // it must hold every connection
            max_size_.store(n, std::memory_order_seq_cst);
            this->want_creation_locked();
        }
        if (n < old) this->shed_surplus();
        if (options_.on_event && n != old) {
            const std::string what = "from " + std::to_string(old) + " to " + std::to_string(n);
            emit(PoolEventKind::resized, 0, std::chrono::nanoseconds{0}, {}, what);
        }
    }

    void pause() {
        {
            std::lock_guard lock(control_);
            if (paused_.load(std::memory_order_relaxed)) return;
            paused_.store(true, std::memory_order_seq_cst);
            attention_.fetch_add(1, std::memory_order_seq_cst);
        }
        this->sweep(wanted, [this](Slot& s) { this->to_queue(s); });
        emit(PoolEventKind::paused, 0, std::chrono::nanoseconds{0});
    }

    void resume() {
        {
            std::lock_guard lock(control_);
            if (!paused_.load(std::memory_order_relaxed)) return;
            paused_.store(false, std::memory_order_seq_cst);
            attention_.fetch_sub(1, std::memory_order_seq_cst);
            resume_cv_.notify_all();
            this->want_creation_locked();
        }
        emit(PoolEventKind::resumed, 0, std::chrono::nanoseconds{0});
    }

    [[nodiscard]] bool paused() const noexcept { return paused_.load(std::memory_order_acquire); }

    void retire_all() {
        retirements_.fetch_add(1, std::memory_order_relaxed);
        attention_.fetch_add(1, std::memory_order_seq_cst);
        // Owned and queued slots are flagged: their next hand-out, release or publication
        // destroys them. Parked ones, and whatever the queue holds now, go at once.
        this->sweep(replaced, [this](Slot& s) { destroy_owned(s, retired_why); });
        for (Slot* s : idle_.extract_if([](Slot* const&) { return true; })) {
            s->become(busy);
            destroy_owned(*s, retired_why);
        }
        attention_.fetch_sub(1, std::memory_order_seq_cst);
        emit(PoolEventKind::retired_all, 0, std::chrono::nanoseconds{0});
    }

    // ---- close and lifetime --------------------------------------------------------------

    void close() {
        if (!closed_.exchange(true, std::memory_order_seq_cst)) {
            {
                std::lock_guard lock(control_);
                this->stop_creation_locked();
                resume_cv_.notify_all();
            }
            this->stop_maintenance();
            idle_.close();
            this->sweep(closing, [this](Slot& s) { destroy_owned(s, "pool closed"); });
            while (auto popped = idle_.try_pop()) {
                Slot& s = **popped;
                s.become(busy);
                destroy_owned(s, "pool closed");
            }
        }
        join_threads();
    }

    [[nodiscard]] bool closed() const noexcept { return closed_.load(std::memory_order_acquire); }

    // Called by ~Pool after close(): the pool's own reference.
    void release_pool_reference() noexcept {
        join_threads(); // joins too if close() ran on one of the pool's own threads
        drop_ref();
    }

    // ---- stats ---------------------------------------------------------------------------

    PoolStats stats() const {
        PoolStats st;
        st.max_size = max_size_.load(std::memory_order_acquire);
        std::uint64_t acquired = 0;
        const std::size_t n = slots_.size();
        for (std::size_t i = 0; i < n; ++i) {
            const Slot& s = slots_[i];
            const std::uint32_t state = s.bare();
            if (state == parked) ++st.idle;
            if (state == in_use) ++st.in_use;
            acquired += s.acquires.load(std::memory_order_relaxed);
        }
        // Idle = what an acquire could take now: parked slots and what the queue holds. A slot
        // marked queued but not yet pushed (or popped and not yet owned) is in neither, so a
        // pool at rest (creating 0, open == idle + in_use) has every idle one takeable.
        st.idle += idle_.size();
        st.waiting = waiting_gauge_.load(std::memory_order_acquire);
        {
            // open and creating as one pair: a creation moves from one to the other under
            // control_, so no snapshot shows it in neither (a false "at rest").
            std::lock_guard lock(control_);
            st.open = open_.load(std::memory_order_acquire);
            st.creating = this->creating_locked();
        }
        st.paused = paused_.load(std::memory_order_acquire);
        st.created = created_.load(std::memory_order_relaxed);
        st.destroyed = destroyed_.load(std::memory_order_relaxed);
        st.acquired = acquired;
        st.timeouts = timeouts_.load(std::memory_order_relaxed);
        st.cancelled = cancelled_.load(std::memory_order_relaxed);
        st.create_failures = create_failures_.load(std::memory_order_relaxed);
        st.validation_failures = validation_failures_.load(std::memory_order_relaxed);
        st.discarded = discarded_.load(std::memory_order_relaxed);
        st.leaks = leaks_.load(std::memory_order_relaxed);
        st.retirements = retirements_.load(std::memory_order_relaxed);
        const std::uint64_t slow = waits_.count();
        const std::uint64_t zeros = acquired > slow ? acquired - slow : 0;
        st.acquire_wait_p50 = std::chrono::nanoseconds(waits_.percentile(0.50, zeros));
        st.acquire_wait_p99 = std::chrono::nanoseconds(waits_.percentile(0.99, zeros));
        st.acquire_wait_max = std::chrono::nanoseconds(waits_.max());
        st.acquire_wait_buckets = waits_.cumulative(zeros);
        st.acquire_wait_sum = std::chrono::nanoseconds(waits_.sum());
        return st;
    }

    const PoolOptions& options() const noexcept { return options_; }

    const Factory& factory() const noexcept { return factory_; }

private:
    // How a hand-out got its slot: from this thread's cache (no flags possible at the CAS), or
    // from the queue or another thread's cache (flags possible), timed as a wait or not.
    enum class Via { cache, untimed, timed };

    static constexpr const char* retired_why = "replaced by retire_all()";
    static constexpr const char* shrunk_why = "pool shrunk by resize()";
    // A connection created this recently and never handed out needs no validation.
    static constexpr std::int64_t alive_bypass_ns = 500'000'000;
    static constexpr int spin_rounds = 64;
    static constexpr auto spin_limit = std::chrono::microseconds(200);

    ~PoolCore() = default; // only drop_ref() deletes

    void drop_ref() noexcept {
        if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
    }

    static CallSite site_of(const Slot& s) noexcept {
        return CallSite{s.site.file(), s.site.function(), s.site.line()};
    }

    static CallSite site_of(const source_location& loc) noexcept {
        return CallSite{loc.file_name(), loc.function_name(), loc.line()};
    }

    void emit(PoolEventKind kind, std::uint32_t slot, std::chrono::nanoseconds d, CallSite site = {},
              std::string_view detail = {}, const PoolStats* stats = nullptr) const noexcept {
        if (!options_.on_event) return;
        try {
            options_.on_event(PoolEvent{kind, slot, d, site, detail, stats});
        } catch (...) {
            // A monitoring hook must not break the pool.
        }
    }

    // Why a slot whose state word is `word` must not be handed out or kept idle, or nullptr.
    const char* refusal(std::uint32_t word) const noexcept {
        if ((word & closing) != 0 || closed_.load(std::memory_order_seq_cst)) return "pool closed";
        if ((word & replaced) != 0) return retired_why;
        if ((word & expired) != 0) return "max_lifetime reached";
        return nullptr;
    }

    // ---- the slow path -------------------------------------------------------------------

    // Counts a thread as waiting for as long as it lives (see the design note).
    struct Waiting {
        PoolCore& core;
        explicit Waiting(PoolCore& c) : core(c) {
            std::lock_guard lock(core.control_);
            core.attention_.fetch_add(1, std::memory_order_seq_cst);
            ++core.waiters_;
            core.waiting_gauge_.store(core.waiters_, std::memory_order_relaxed);
            core.request_for_waiters_locked(core.waiters_);
        }
        Waiting(const Waiting&) = delete;
        Waiting& operator=(const Waiting&) = delete;
        ~Waiting() { leave(); }
        // Stops counting this thread as a waiter (once), so an event about its leaving can be
        // emitted after the count that monitors read has dropped.
        void leave() noexcept {
            if (left) return;
            left = true;
            std::lock_guard lock(core.control_);
            --core.waiters_;
            core.waiting_gauge_.store(core.waiters_, std::memory_order_relaxed);
            core.drop_request_locked(core.waiters_);
            core.attention_.fetch_sub(1, std::memory_order_seq_cst);
        }
        bool left = false;
    };

    Lease<Conn> acquire_slow(std::chrono::milliseconds timeout, const std::stop_token* stop,
                             const source_location& loc) {
        const auto start = steady::now();
        const auto deadline = deadline_after(start, timeout);
        const auto check = [&] {
            if (closed_.load(std::memory_order_acquire)) throw PoolClosed{};
            if (stop != nullptr && stop->stop_requested()) throw_cancelled(loc, steady::now() - start);
        };
        if (closed_.load(std::memory_order_acquire)) throw PoolClosed{};
        // A stop request is checked after the first look: a connection that is ready at once
        // is handed out even to a caller whose stop was already requested.
        // Spin first, when only a release can help. A thread that merely lost a race (the usual
        // case when threads outnumber cores) finds a parked connection within a few yields.
        // Putting it to sleep instead would make every later release a hand-off to a sleeping
        // thread plus a context switch: a lock convoy, from which a busy pool never recovers.
        if (!paused_.load(std::memory_order_acquire)) {
            for (int round = 0; round < spin_rounds; ++round) {
                if (Slot* s = this->grab()) {
                    if (claim(*s, start, loc)) return Lease<Conn>(s);
                    continue;
                }
                if (occupied_.load(std::memory_order_relaxed) < max_size_.load(std::memory_order_relaxed)) {
                    break; // room: a creation is the way, so register as a waiter at once
                }
                const auto now = steady::now();
                if (now >= deadline || now - start >= spin_limit) break;
                if (round < 4) {
                    cpu_relax();
                } else {
                    std::this_thread::yield();
                }
                check();
            }
        }

        // Then sleep in the idle queue, served in arrival order.
        Waiting waiting(*this);
        CONNPOOL_POOL_TEST_POINT("acquire: registered as a waiter");
        for (;;) {
            if (closed_.load(std::memory_order_acquire)) throw PoolClosed{};
            if (stop != nullptr && stop->stop_requested()) {
                waiting.leave(); // the cancelled event comes after the waiter has left the count
                throw_cancelled(loc, steady::now() - start);
            }
            const auto now = steady::now();
            if (now >= deadline) throw_timeout(loc, now - start);
            if (paused_.load(std::memory_order_seq_cst)) {
                wait_for_resume(deadline, stop);
                continue;
            }
            Slot* s = nullptr;
            if (auto popped = idle_.try_pop()) {
                s = *popped;
            } else if ((s = this->steal_parked(true)) == nullptr) {
                auto got = stop != nullptr ? idle_.pop_until(deadline, *stop) : idle_.pop_until(deadline);
                if (!got) continue; // closed, stopped or timed out: check() and the deadline say which
                s = *got;
            }
            if (paused_.load(std::memory_order_seq_cst) && s->bare() == queued) {
                // Paused after this thread looked: the connection waits in the queue, and this
                // thread at the gate. Each push-back moves one sleeper to the gate, so it ends.
                this->requeue(*s);
                continue;
            }
            if (claim(*s, start, loc)) return Lease<Conn>(s);
        }
    }

    void wait_for_resume(steady::time_point deadline, const std::stop_token* stop) {
        std::unique_lock lock(control_);
        const auto resumed = [this] {
            return !paused_.load(std::memory_order_relaxed) || closed_.load(std::memory_order_relaxed);
        };
        if (stop != nullptr) {
            resume_cv_.wait_until(lock, *stop, deadline, resumed);
        } else {
            resume_cv_.wait_until(lock, deadline, resumed);
        }
    }

    // Turns a slot popped from the queue (or stolen) into one this thread holds as in_use,
    // keeping any flags. Throws PoolClosed if the pool closed meanwhile.
    void own(Slot& s) {
        const std::uint32_t was = s.become(in_use);
        if ((was & closing) != 0 || closed_.load(std::memory_order_seq_cst)) {
            destroy_owned(s, "pool closed");
            throw PoolClosed{};
        }
    }

    // Owns and hands out a slot the slow path obtained. False = it was retired: go round again.
    bool claim(Slot& s, steady::time_point start, const source_location& loc) {
        own(s);
        return hand_out(s, loc, steady::now() - start, Via::timed);
    }

    static void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
    }

    // Checks and stamps a slot this thread owns as in_use. False = it was retired; try again.
    bool hand_out(Slot& s, const source_location& loc, std::chrono::nanoseconds waited, Via via) {
        const std::int64_t now = now_ns<Clock>();
        if (via != Via::cache) {
            if (const char* why = refusal(s.state.load(std::memory_order_acquire) & (replaced | expired))) {
                destroy_owned(s, why);
                return false;
            }
        }
        const std::int64_t expires = s.expires_at.load(std::memory_order_relaxed);
        if (expires != 0 && now >= expires) {
            destroy_owned(s, "max_lifetime reached");
            return false;
        }
        if constexpr (has_validate<Factory, Conn>) {
            const std::int64_t idle = now - this->idle_since(s);
            if (idle >= params_.validate_after_idle && (s.handed_out || idle >= alive_bypass_ns)) {
                // Busy while validating: the previous lease is over and this one has not begun,
                // so maintenance reports neither as a leak or a holder.
                s.become(busy);
                bool ok = false;
                try {
                    ok = factory_.validate(*s.conn);
                } catch (...) {
                }
                s.become(in_use);
                if (!ok) {
                    validation_failures_.fetch_add(1, std::memory_order_relaxed);
                    emit(PoolEventKind::validation_failed, s.index, std::chrono::nanoseconds{0});
                    destroy_owned(s, "validate() rejected it");
                    return false;
                }
            }
        }
        s.handed_out = true;
        s.acquired_at.store(now, std::memory_order_relaxed);
        s.site.store(loc);
        // Single writer (the owner), so a plain read-modify-write without a lock prefix.
        s.acquires.store(s.acquires.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (via == Via::timed) waits_.record(static_cast<std::uint64_t>(waited.count()));
        if (options_.on_event) emit(PoolEventKind::acquired, s.index, waited, site_of(loc));
        return true;
    }

    // ---- giving connections back ---------------------------------------------------------

    // Destroys the connection of an owned slot, then frees the slot.
    void destroy_owned(Slot& s, std::string_view why) noexcept {
        if constexpr (has_destroy<Factory, Conn>) {
            try {
                factory_.destroy(*s.conn);
            } catch (...) {
            }
        }
        s.conn.reset();
        open_.fetch_sub(1, std::memory_order_acq_rel);
        destroyed_.fetch_add(1, std::memory_order_relaxed);
        emit(PoolEventKind::destroyed, s.index, std::chrono::nanoseconds{0}, {}, why);
        free_slot(s);
    }

    // Makes an owned slot without a connection vacant: free capacity, which a creator may use
    // at once for a waiter.
    void free_slot(Slot& s) noexcept {
        CONNPOOL_POOL_TEST_POINT("free_slot: about to vacate");
        {
            std::lock_guard lock(control_);
            s.handed_out = false;
            if (std::exchange(s.doomed, false)) --doomed_;
            s.state.store(vacant, std::memory_order_release);
            s.next_vacant = vacant_;
            vacant_ = &s;
            occupied_.store(occupied_.load(std::memory_order_relaxed) - 1, std::memory_order_seq_cst);
            // The capacity may serve a waiter nothing else will (a failed or refused creation,
            // a discard while the pool was full).
            this->request_for_waiters_locked(waiters_);
        }
        drop_ref(); // last: may delete this
    }

    // ---- capacity (for PoolCreation) -----------------------------------------------------

    // Whether max_size leaves room for one more connection. Requires control_.
    [[nodiscard]] bool has_room_locked() const noexcept {
        return occupied_.load(std::memory_order_relaxed) < max_size_.load(std::memory_order_relaxed);
    }

    // Claims a vacant slot (or a new one) as reserved for a creation. Requires control_.
    Slot& claim_vacant_locked() {
        Slot* s = vacant_;
        if (s != nullptr) {
            vacant_ = s->next_vacant;
        } else {
            s = &slots_.add();
            s->owner = this;
        }
        s->state.store(reserved, std::memory_order_seq_cst);
        occupied_.store(occupied_.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);
        refs_.fetch_add(1, std::memory_order_relaxed);
        return *s;
    }

    // Idle connections, counted as stats() counts them.
    std::size_t idle_count() const noexcept {
        std::size_t n = idle_.size();
        const std::size_t size = slots_.size();
        for (std::size_t i = 0; i < size; ++i) n += slots_[i].bare() == parked ? 1 : 0;
        return n;
    }

    // ---- diagnostics ---------------------------------------------------------------------

    [[noreturn]] void throw_timeout(const source_location& loc, steady::duration waited) {
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        const auto waited_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(waited);
        const PoolStats state = stats(); // read once: the event and the message show the same state
        emit(PoolEventKind::timeout, 0, waited_ns, site_of(loc), {}, &state);
        std::string last_error;
        {
            std::lock_guard lock(control_);
            last_error = this->last_create_error_locked();
        }
        TimeoutReport report(waited_ns, state, last_error);
        const std::int64_t now = now_ns<Clock>();
        const std::size_t n = slots_.size();
        for (std::size_t i = 0; i < n; ++i) {
            const Slot& s = slots_[i];
            if (s.bare() != in_use) continue;
            report.holder(site_of(s), std::chrono::nanoseconds(now - s.acquired_at.load(std::memory_order_relaxed)));
        }
        throw AcquireTimeout(report.str(), std::chrono::duration_cast<std::chrono::milliseconds>(waited));
    }

    [[noreturn]] void throw_cancelled(const source_location& loc, steady::duration waited) {
        cancelled_.fetch_add(1, std::memory_order_relaxed);
        emit(PoolEventKind::cancelled, 0, std::chrono::duration_cast<std::chrono::nanoseconds>(waited), site_of(loc));
        throw AcquireCancelled{};
    }

    // ---- threads -------------------------------------------------------------------------

    // Joins the maintenance and creator threads once they have been told to stop. Any number
    // of threads may call it at once; on one of the pool's own threads (an event hook that
    // closes the pool) it joins nothing: the thread that destroys the Pool joins them.
    void join_threads() noexcept {
        const auto self = std::this_thread::get_id();
        std::size_t creators = 0;
        std::vector<std::thread>* list = nullptr;
        {
            std::lock_guard lock(control_);
            list = &this->creators_locked();
            creators = list->size(); // fixed once close() stopped creation
            if (this->is_maintenance_thread(self)) return;
            for (std::size_t i = 0; i < creators; ++i) {
                if ((*list)[i].get_id() == self) return;
            }
        }
        std::lock_guard join(join_mutex_);
        this->join_maintenance();
        for (std::size_t i = 0; i < creators; ++i) {
            if ((*list)[i].joinable()) (*list)[i].join();
        }
    }

    // ---- data ----------------------------------------------------------------------------

    const PoolOptions options_;
    const PoolParams params_;
    Factory factory_;
    CacheSeat seat_;
    SlotTable<Slot> slots_;
    BoundedBlockingQueue<Slot*, QueueOrder::lifo> idle_;

    // Read on every release and slow acquire: kept together, written rarely.
    alignas(cache_line) std::atomic<bool> closed_{false};
    std::atomic<bool> paused_{false};             // written under control_
    std::atomic<std::int64_t> attention_{0};      // see the design note
    std::atomic<std::size_t> max_size_;           // written under control_
    std::atomic<std::size_t> occupied_{0};        // non-vacant slots; written under control_

    alignas(cache_line) std::atomic<std::size_t> refs_{1}; // the pool + one per non-vacant slot
    std::atomic<std::size_t> open_{0};
    std::atomic<std::size_t> waiting_gauge_{0}; // waiters_, for stats()
    std::atomic<std::uint64_t> created_{0};
    std::atomic<std::uint64_t> destroyed_{0};
    std::atomic<std::uint64_t> timeouts_{0};
    std::atomic<std::uint64_t> cancelled_{0};
    std::atomic<std::uint64_t> create_failures_{0};
    std::atomic<std::uint64_t> validation_failures_{0};
    std::atomic<std::uint64_t> discarded_{0};
    std::atomic<std::uint64_t> leaks_{0};
    std::atomic<std::uint64_t> retirements_{0};
    WaitHistogram waits_;

    // The slow path's state: capacity and waiters (and PoolCreation's counts).
    mutable std::mutex control_;
    std::condition_variable_any resume_cv_; // waiters wait for resume() (with their stop token)
    Slot* vacant_ = nullptr;                // free list of vacant slots
    std::size_t doomed_ = 0;                // surplus slots whose owners are destroying them
    std::size_t waiters_ = 0;               // threads registered as waiting

    std::mutex join_mutex_; // two close() calls must not join the same thread at once
};

} // namespace connpool::detail
