#pragma once

// The pool's slots: a table that grows in place (resize() may add capacity while leases point
// into it), so a slot never moves. Segment k holds 8 << k slots; 18 segments cover 2^21 slots.

#include <array>
#include <atomic>
#include <bit> // std::bit_width
#include <cstddef>
#include <cstdint>

namespace connpool::detail {

/// A growable array of slots whose elements never move. add() needs external serialisation
/// (the pool's control mutex); operator[] and size() may be called from any thread for any
/// index below size().
template <class SlotT>
class SlotTable {
public:
    SlotTable() = default;
    SlotTable(const SlotTable&) = delete;
    SlotTable& operator=(const SlotTable&) = delete;
    ~SlotTable() {
        for (auto& s : segments_) delete[] s.load(std::memory_order_relaxed);
    }

    /// Returns slot `i`; requires i < size().
    SlotT& operator[](std::size_t i) const noexcept {
        const std::size_t j = i / first + 1;
        const auto k = static_cast<std::size_t>(std::bit_width(j) - 1);
        const std::size_t offset = i - first * ((std::size_t{1} << k) - 1);
        return segments_[k].load(std::memory_order_acquire)[offset];
    }

    /// Returns how many slots have ever been added: the ones a scan must visit. Acquire: every
    /// slot below it is fully initialised.
    [[nodiscard]] std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }

    /// Appends a slot (allocating a segment when the last one is full) and returns it with its
    /// index set. Callers serialise; may throw std::bad_alloc.
    SlotT& add() {
        const std::size_t i = size_.load(std::memory_order_relaxed);
        const std::size_t j = i / first + 1;
        const auto k = static_cast<std::size_t>(std::bit_width(j) - 1);
        if (segments_[k].load(std::memory_order_relaxed) == nullptr) {
            segments_[k].store(new SlotT[first << k], std::memory_order_release);
        }
        SlotT& s = (*this)[i];
        s.index = static_cast<std::uint32_t>(i);
        size_.store(i + 1, std::memory_order_release);
        return s;
    }

private:
    static constexpr std::size_t first = 8;
    std::array<std::atomic<SlotT*>, 18> segments_{};
    std::atomic<std::size_t> size_{0};
};

} // namespace connpool::detail
