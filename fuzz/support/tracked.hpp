#pragma once

// A move-only value with a unique id, for fuzzing containers and pools: the id says which
// element a container returned, and the heap payload makes AddressSanitizer report an
// element that is lost (leak), destroyed twice or used after destruction.

#include <atomic> // live(): a multi-threaded target may create and destroy elements on several threads
#include <cstdint>
#include <memory>
#include <utility>

namespace connpool::fuzz {

/// A move-only element with a unique id and a heap payload holding the same id.
class Tracked {
public:
    /// The id a moved-from Tracked reports.
    static constexpr std::uint64_t kMovedFrom = ~std::uint64_t{0};

    /// Creates the element `id`, allocating its payload.
    explicit Tracked(std::uint64_t id) : id_(id), payload_(std::make_unique<std::uint64_t>(id)) { ++live_; }

    Tracked(Tracked&& other) noexcept
        : id_(std::exchange(other.id_, kMovedFrom)), payload_(std::move(other.payload_)) {}

    Tracked& operator=(Tracked&& other) noexcept {
        if (this != &other) {
            if (payload_) --live_;
            id_ = std::exchange(other.id_, kMovedFrom);
            payload_ = std::move(other.payload_);
        }
        return *this;
    }

    Tracked(const Tracked&) = delete;
    Tracked& operator=(const Tracked&) = delete;

    ~Tracked() {
        if (payload_) --live_;
    }

    /// Returns the id (kMovedFrom once moved from).
    [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

    /// Returns whether this element is whole: not moved from, payload present and agreeing.
    [[nodiscard]] bool intact() const noexcept { return id_ != kMovedFrom && payload_ && *payload_ == id_; }

    /// Returns the payload's address, to check that a failed push left the value untouched.
    [[nodiscard]] const std::uint64_t* payload() const noexcept { return payload_.get(); }

    /// Returns how many elements with a payload exist (created and not yet destroyed).
    [[nodiscard]] static long live() noexcept { return live_.load(); }

private:
    std::uint64_t id_;
    std::unique_ptr<std::uint64_t> payload_;
    static inline std::atomic<long> live_{0};
};

} // namespace connpool::fuzz
