#pragma once

// The reference model of BoundedBlockingQueue for its fuzz targets: what a single thread
// must observe, element by element. It stores ids only; the elements are in the real queue.

#include <connpool/bounded_queue.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

namespace connpool::fuzz {

/// A std::deque of ids that behaves as BoundedBlockingQueue<T, Order> promises to one thread.
template <QueueOrder Order>
class QueueModel {
public:
    /// An empty, open model of a queue with this capacity.
    explicit QueueModel(std::size_t capacity) : capacity_(capacity) {}

    [[nodiscard]] std::size_t size() const noexcept { return ids_.size(); }
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
    [[nodiscard]] bool closed() const noexcept { return closed_; }
    /// The stored ids, oldest first.
    [[nodiscard]] const std::deque<std::uint64_t>& ids() const noexcept { return ids_; }

    /// Returns whether push() returns without blocking: there is room, or the queue is closed.
    [[nodiscard]] bool push_returns_at_once() const noexcept { return closed_ || ids_.size() < capacity_; }

    /// Returns whether pop() (with any timeout) returns without waiting: an element is
    /// stored, or the queue is closed.
    [[nodiscard]] bool pop_returns_at_once() const noexcept { return closed_ || !ids_.empty(); }

    /// A push or try_push of `id`: returns whether it must succeed, and stores it if so.
    bool push(std::uint64_t id) {
        if (closed_ || ids_.size() >= capacity_) return false;
        ids_.push_back(id);
        return true;
    }

    /// A pop that returns (at once, or at its deadline): the id it must return, if any.
    std::optional<std::uint64_t> pop() {
        if (ids_.empty()) return std::nullopt;
        std::uint64_t id = 0;
        if constexpr (Order == QueueOrder::fifo) {
            id = ids_.front();
            ids_.pop_front();
        } else {
            id = ids_.back();
            ids_.pop_back();
        }
        return id;
    }

    void close() noexcept { closed_ = true; }

    /// A set_capacity(n), n >= 1: stored ids stay, pushes fail until size() < n.
    void set_capacity(std::size_t capacity) noexcept { capacity_ = capacity; }

    /// extract_if(pred) on ids: the ids it must return, oldest first. Asks `pred` about every
    /// id before removing any, so a throwing pred leaves the model unchanged, as the queue.
    template <class Pred>
    std::vector<std::uint64_t> extract_if(Pred pred) {
        std::vector<bool> match(ids_.size());
        for (std::size_t i = 0; i < ids_.size(); ++i) match[i] = pred(ids_[i]);
        std::vector<std::uint64_t> taken;
        std::deque<std::uint64_t> kept;
        for (std::size_t i = 0; i < ids_.size(); ++i) {
            if (match[i]) {
                taken.push_back(ids_[i]);
            } else {
                kept.push_back(ids_[i]);
            }
        }
        ids_ = std::move(kept);
        return taken;
    }

private:
    std::size_t capacity_;
    std::deque<std::uint64_t> ids_; // oldest first
    bool closed_ = false;
};

} // namespace connpool::fuzz
