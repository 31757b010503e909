#pragma once

// Idle hand-off of a pool (a base of PoolCore; see its design note): where an idle connection
// waits and how the next acquirer finds it.
//
// An idle connection is either *parked* (its slot's state word says so, and the thread that
// gave it back remembers the slot in its thread-local cache: its next acquire takes it back with
// one CAS) or *queued* in the idle queue (a BoundedBlockingQueue in LIFO order, so the least
// recently used ones age out; it hands each push to the oldest sleeping waiter). Every idle
// connection is in the queue or in exactly one cache: remember() sends the slot a cache entry
// used to name to the queue before it names another.
//
// `attention_` (the core's) counts the reasons releases must not park: threads asleep waiting, a
// pause, a shrink or retire_all in progress. A release reads it (seq_cst) before its park CAS.
// Whoever raises it then sweeps every slot (seq_cst): a parked one is taken, an owned one is
// flagged (`wanted` or a stronger flag), so the owner's park CAS, which expects the bare state,
// fails. Either the release read the raised count (and queues instead of parking), or its CAS
// came first (and the sweep finds the slot parked), or the flag came first (and the CAS fails):
// no connection stays parked unseen. make_idle() clears a stale `wanted` before it re-reads the
// count, so a flag left by an earlier sweep cannot hide a later one.
//
// A shrink (resize below the open count) dooms surplus connections as their owners publish
// them: take_surplus() counts them under control_ so exactly the surplus goes.

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "slot.hpp"
#include "thread_cache.hpp"

namespace connpool::detail {

/// The idle hand-off of a PoolCore (`Core`, which derives from it). Not for users.
template <class Core, class Conn>
class PoolHandoff {
    using Slot = detail::Slot<Conn>;

protected:
    PoolHandoff() = default;
    ~PoolHandoff() = default;

    static constexpr std::uint32_t owned_or_queued = states({reserved, queued, in_use, busy});

    // ---- the thread cache ----------------------------------------------------------------

    // The slot this thread gave back last, if it is still parked: ours now.
    Slot* take_cached() noexcept {
        const CacheEntry& e = core().seat_.entry();
        if (e.pool != core().seat_.id()) return nullptr;
        Slot* s = static_cast<Slot*>(e.slot);
        return s->take_parked() ? s : nullptr;
    }

    // Makes `s` this thread's cached slot. A different slot still parked under the old entry
    // goes to the queue, so every idle connection is in the queue or in exactly one cache.
    void remember(Slot& s) noexcept {
        CacheEntry& e = core().seat_.entry();
        if (e.pool == core().seat_.id() && e.slot != &s) {
            Slot& old = *static_cast<Slot*>(e.slot);
            if (old.take_parked_for_pool()) to_queue(old);
        }
        e.pool = core().seat_.id();
        e.slot = &s;
    }

    // ---- finding an idle connection ------------------------------------------------------

    // An idle connection without waiting: the newest queued one, or a parked one.
    Slot* grab() {
        if (auto popped = core().idle_.try_pop()) return *popped;
        return steal_parked(false);
    }

    // Claims a parked slot anywhere. With `mark`, also flags every owned slot `wanted` so that
    // its release cannot park it unseen while this thread sleeps (see above). Visits the slots
    // ever used, not max_size of them.
    Slot* steal_parked(bool mark) noexcept {
        auto& slots = core().slots_;
        const std::size_t n = slots.size();
        if (n == 0) return nullptr;
        const std::size_t start = thread_cache.rotor++ % n;
        for (std::size_t k = 0; k < n; ++k) {
            Slot& s = slots[(start + k) % n];
            if (!mark) {
                if (s.bare(std::memory_order_relaxed) == parked && s.take_parked()) return &s;
                continue;
            }
            const std::uint32_t seen = s.flag_if(wanted, states({reserved, in_use, busy}));
            if ((seen & state_mask) == parked && s.take_parked()) return &s;
        }
        return nullptr;
    }

    // A queued slot this thread popped but must not use now goes back (it is still queued).
    void requeue(Slot& s) noexcept {
        if (!core().idle_.try_push(&s)) {
            s.become(busy);
            core().destroy_owned(s, "pool closed");
        }
    }

    // ---- giving connections back ---------------------------------------------------------

    // Publishes an owned slot with a live connection as idle: to the queue when anything needs
    // attention (waiters, a pause), else parked. Destroys it if it must not be kept.
    void make_idle(Slot& s) noexcept {
        Core& c = core();
        for (;;) {
            const std::uint32_t cur = s.state.load(std::memory_order_seq_cst);
            if (const char* why = c.refusal(cur)) {
                c.destroy_owned(s, why);
                return;
            }
            if (take_surplus(s)) {
                c.destroy_owned(s, Core::shrunk_why);
                return;
            }
            if ((cur & wanted) != 0) {
                // Clear the old request before reading attention_: a sweep that starts after
                // the read must be able to flag this slot again (see above).
                std::uint32_t expected = cur;
                s.state.compare_exchange_strong(expected, cur & ~wanted, std::memory_order_seq_cst);
                continue;
            }
            if (c.attention_.load(std::memory_order_seq_cst) != 0) {
                to_queue(s);
                return;
            }
            std::uint32_t expected = cur;
            if (s.state.compare_exchange_strong(expected, parked, std::memory_order_seq_cst)) return;
        }
    }

    // Moves an owned slot with a live connection into the idle queue (which hands it to the
    // oldest waiter), unless a flag says it must go.
    void to_queue(Slot& s) noexcept {
        std::uint32_t seen = 0;
        if (!s.publish(queued, closing | replaced | expired, seen)) {
            core().destroy_owned(s, core().refusal(seen));
            return;
        }
        if (!core().idle_.try_push(&s)) { // closed meanwhile (it never fills): it is still ours
            s.become(busy);
            core().destroy_owned(s, "pool closed");
        }
    }

    // A new connection goes to the queue: to the oldest waiter, else idle. If it is refused
    // (retire_all or close during the create, or surplus), free_slot() asks again for the
    // waiter it was made for.
    void publish_new(Slot& s) noexcept {
        if (take_surplus(s)) {
            core().destroy_owned(s, Core::shrunk_why);
        } else {
            to_queue(s);
        }
    }

    // ---- shrinking and sweeping ----------------------------------------------------------

    // Whether `s` (owned, live) is one more connection than max_size allows; if so it is
    // counted as doomed and its owner destroys it.
    bool take_surplus(Slot& s) noexcept {
        Core& c = core();
        if (c.occupied_.load(std::memory_order_seq_cst) <= c.max_size_.load(std::memory_order_seq_cst)) return false;
        std::lock_guard lock(c.control_);
        if (s.doomed) return true;
        if (c.occupied_.load(std::memory_order_relaxed) - c.doomed_ <= c.max_size_.load(std::memory_order_relaxed)) {
            return false;
        }
        ++c.doomed_;
        s.doomed = true;
        return true;
    }

    // After a shrink: surplus parked and queued connections go now, leased ones are flagged so
    // that their release checks (make_idle's take_surplus).
    void shed_surplus() {
        Core& c = core();
        c.attention_.fetch_add(1, std::memory_order_seq_cst);
        const auto shed = [this, &c](Slot& s) {
            if (take_surplus(s)) {
                c.destroy_owned(s, Core::shrunk_why);
            } else {
                to_queue(s);
            }
        };
        sweep(wanted, shed);
        std::size_t excess = 0;
        {
            std::lock_guard lock(c.control_);
            const std::size_t live = c.occupied_.load(std::memory_order_relaxed) - c.doomed_;
            const std::size_t max = c.max_size_.load(std::memory_order_relaxed);
            excess = live > max ? live - max : 0;
        }
        if (excess > 0) {
            std::size_t picked = 0; // the oldest idle ones
            for (Slot* s : c.idle_.extract_if([&](Slot* const&) { return picked < excess && ++picked > 0; })) {
                s->become(busy);
                shed(*s);
            }
        }
        c.attention_.fetch_sub(1, std::memory_order_seq_cst);
    }

    // With attention_ raised by the caller: every parked slot is taken (as busy) and given to
    // `on_parked`, every owned or queued one gets `flag`.
    template <class OnParked>
    void sweep(std::uint32_t flag, OnParked&& on_parked) {
        auto& slots = core().slots_;
        const std::size_t n = slots.size();
        for (std::size_t i = 0; i < n; ++i) {
            Slot& s = slots[i];
            for (;;) {
                if (s.take_parked_for_pool()) {
                    on_parked(s);
                    break;
                }
                // Parked again since the take failed (taken and given back): go round.
                if ((s.flag_if(flag, owned_or_queued) & state_mask) != parked) break;
            }
        }
    }

private:
    Core& core() noexcept { return static_cast<Core&>(*this); }
};

} // namespace connpool::detail
