#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <utility>

#include "detail/slot.hpp"

namespace connpool {

namespace detail {
template <class T>
concept pointer_like = requires(T& t) { t.operator->(); };
} // namespace detail

/// Exclusive use of one pooled connection; gives it back to its pool when destroyed.
///
/// Move-only. One thread uses a lease at a time; it may be moved to another thread.
/// A lease stays usable after its pool is closed or destroyed: the connection is then
/// destroyed when the lease gives it back. A moved-from or released lease is empty.
template <class Conn>
class Lease {
public:
    /// Creates an empty lease that holds nothing.
    Lease() noexcept = default;

    /// Adopts a slot the pool has just handed out; used by Pool, not by users.
    explicit Lease(detail::Slot<Conn>* slot) noexcept : slot_(slot) {}

    /// Takes over `other`'s connection, leaving `other` empty.
    Lease(Lease&& other) noexcept : slot_(std::exchange(other.slot_, nullptr)) {}

    /// Gives back this lease's connection (if any), then takes over `other`'s.
    Lease& operator=(Lease&& other) noexcept {
        if (this != &other) {
            release();
            slot_ = std::exchange(other.slot_, nullptr);
        }
        return *this;
    }

    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

    /// Gives the connection back to the pool (see release()).
    ~Lease() { release(); }

    /// Returns the connection. For a pointer-like Conn (e.g. std::unique_ptr<X>) it returns the
    /// pointer itself, so `lease->f()` reaches X::f. Precondition: the lease is not empty.
    [[nodiscard]] auto operator->() const noexcept -> decltype(auto) {
        if constexpr (detail::pointer_like<Conn>) {
            return static_cast<Conn&>(*slot_->conn);
        } else {
            return &*slot_->conn;
        }
    }

    /// Returns the connection. Precondition: the lease is not empty.
    [[nodiscard]] Conn& operator*() const noexcept { return *slot_->conn; }

    /// Returns a pointer to the connection, or nullptr if the lease is empty.
    [[nodiscard]] Conn* get() const noexcept { return slot_ != nullptr ? &*slot_->conn : nullptr; }

    /// Returns whether the lease holds a connection.
    explicit operator bool() const noexcept { return slot_ != nullptr; }

    /// Gives the connection back to the pool now (reset, then reuse or retire); the lease becomes
    /// empty. Does nothing on an empty lease. Never throws.
    void release() noexcept {
        if (auto* slot = std::exchange(slot_, nullptr)) slot->owner->give_back(*slot, false);
    }

    /// Destroys the connection instead of reusing it (it is broken or in an unknown state); the
    /// pool may create a replacement. The lease becomes empty. Never throws.
    void discard() noexcept {
        if (auto* slot = std::exchange(slot_, nullptr)) slot->owner->give_back(*slot, true);
    }

    /// Returns how long this lease has held its connection, measured with the pool's clock
    /// (on Linux a coarse clock: a few milliseconds of resolution). Zero for an empty lease.
    [[nodiscard]] std::chrono::nanoseconds held_for() const noexcept {
        if (slot_ == nullptr) return std::chrono::nanoseconds{0};
        const std::int64_t held =
            slot_->owner->clock_now_ns() - slot_->acquired_at.load(std::memory_order_relaxed);
        return std::chrono::nanoseconds{held > 0 ? held : 0};
    }

private:
    detail::Slot<Conn>* slot_ = nullptr;
};

} // namespace connpool
