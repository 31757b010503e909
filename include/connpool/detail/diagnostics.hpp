#pragma once

// What the pool tells people: durations in words and the AcquireTimeout message, which must say
// enough to find the cause (the pool's state, a failing create(), who holds the connections).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

#include "../pool_options.hpp"

namespace connpool::detail {

/// Returns `d` in the largest unit that keeps three significant digits: "850 us", "1200 ms", "42 s".
inline std::string format_duration(std::chrono::nanoseconds d) {
    std::ostringstream out;
    const auto ns = d.count();
    if (ns < 1'000'000) {
        out << ns / 1000 << " us";
    } else if (ns < 10'000'000'000) {
        out << ns / 1'000'000 << " ms";
    } else {
        out << ns / 1'000'000'000 << " s";
    }
    return out.str();
}

/// Builds the text of an AcquireTimeout: add the holders one by one, then take str().
class TimeoutReport {
public:
    TimeoutReport(std::chrono::nanoseconds waited, const PoolStats& st, std::string_view last_create_error) {
        out_ << "connpool: acquire timed out after " << format_duration(waited)
             << " waiting for a connection (max_size " << st.max_size << ", open " << st.open << ", in use "
             << st.in_use << ", idle " << st.idle << ", waiting " << st.waiting << (st.paused ? ", paused" : "")
             << ")";
        if (!last_create_error.empty()) {
            out_ << "; creating connections is failing, last error: " << last_create_error;
        }
    }

    /// Adds one lease holder: its acquiring call site and how long it has held the connection.
    void holder(const CallSite& site, std::chrono::nanoseconds held) {
        ++holders_;
        if (listed_ == max_listed) return;
        out_ << (listed_++ == 0 ? "; held by: " : ", ") << site.file << ':' << site.line << " ("
             << site.function << ") for " << format_duration(held);
    }

    /// Returns the message.
    [[nodiscard]] std::string str() {
        if (holders_ > listed_) out_ << ", and " << holders_ - listed_ << " more";
        return out_.str();
    }

private:
    static constexpr std::size_t max_listed = 8;
    std::ostringstream out_;
    std::size_t listed_ = 0;
    std::size_t holders_ = 0;
};

} // namespace connpool::detail
