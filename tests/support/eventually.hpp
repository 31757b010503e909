#pragma once

// Polling for a condition another thread brings about, with a bound so a broken pool fails the
// test instead of hanging it.

#include <chrono>
#include <thread>

namespace connpool::testing {

/// Returns true once pred() holds (checked every millisecond), false if `limit` passes first.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

} // namespace connpool::testing
