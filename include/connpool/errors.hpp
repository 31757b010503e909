#pragma once

#include <chrono>
#include <stdexcept>
#include <string>

namespace connpool {

/// Base of every exception connpool throws; catching it catches them all.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Thrown by acquire() when no connection was ready before its deadline; what() describes the pool then.
class AcquireTimeout : public Error {
public:
    /// Builds the error from the full message and how long the caller waited.
    AcquireTimeout(const std::string& message, std::chrono::milliseconds waited)
        : Error(message), waited_(waited) {}

    /// Returns how long the failed acquire waited before giving up.
    [[nodiscard]] std::chrono::milliseconds waited() const noexcept { return waited_; }

private:
    std::chrono::milliseconds waited_;
};

/// Thrown by acquire(std::stop_token) and acquire_for(timeout, std::stop_token) when a stop is
/// requested on the token before a connection was handed out; the waiter leaves no trace.
class AcquireCancelled : public Error {
public:
    /// Builds the error with the standard message.
    AcquireCancelled() : Error("connpool: acquire cancelled by a stop request") {}
};

/// Thrown by acquire() once the pool is closed, including to callers that were already waiting.
class PoolClosed : public Error {
public:
    /// Builds the error with the standard message.
    PoolClosed() : Error("connpool: the pool is closed") {}
};

} // namespace connpool
